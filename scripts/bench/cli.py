"""The command line of the benchmark: which workloads and libraries, repeats, outputs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

from bench.common import (
    LIB_NAMES,
    LIBS,
    MODEL,
    PEER_MODULES,
    ROOT,
    WORKLOADS,
    matmul_peak,
    prepare,
    workload_flops,
)
from bench.orchestrate import _sub, compare, machine_info
from bench.report import plot, table
from bench.worker import run_worker


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    ap.add_argument("--only", default=",".join(WORKLOADS), help="workloads, e.g. a,b (default all)")
    ap.add_argument("--libs", default=",".join(LIBS), help=f"libraries (default {','.join(LIBS)})")
    ap.add_argument(
        "--quick", action="store_true", help="1 timed repeat instead of 5, smaller matmul peak"
    )
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats after the warm-up")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument(
        "--plot", type=Path, default=None, help="write the bar chart here (e.g. docs/bench.png)"
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=300,
        help="seconds of timed runs per (workload, library): slow peers get fewer "
        "repeats (at least 1)",
    )
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per (workload, library)")
    ap.add_argument(
        "--work-dir",
        type=Path,
        default=ROOT / "out" / "bench",
        help="inputs, the HF weight copy and outputs (default out/bench)",
    )
    ap.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="print the table (and --plot) of a saved --json run; runs nothing",
    )
    ap.add_argument(
        "--sample-cells",
        type=int,
        default=0,
        help="workload (g): peers patch this many random (layer, pos, head) cells and their "
        "time is scaled to the whole sweep (0 = every cell; TransformerLens runs one "
        "forward per cell, hours on a small CPU)",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)

    if args.worker:  # inside a subprocess
        if args.worker == "prepare":
            out = prepare(work)
        elif args.worker == "peak":
            out = matmul_peak(sizes=(1024, 2048) if args.quick else (1024, 2048, 3072))
        else:
            out = run_worker(args.worker, work, repeats, args.budget, args.sample_cells)
        args.result.write_text(json.dumps(out))
        return 0

    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        results = {w: v["libraries"] for w, v in saved["workloads"].items()}
        print(table(results, saved["matmul_peak"]))
        if args.plot:
            m = saved["machine"]
            plot(
                results,
                args.plot,
                f"SmolLM2-135M on {m.get('cpu', 'CPU')} ({m['cores']} cores)"
                + (", --quick" if saved.get("quick") else ""),
            )
            print(f"wrote {args.plot}")
        return 0

    only = [w.strip() for w in args.only.split(",") if w.strip()]
    libs = [x.strip() for x in args.libs.split(",") if x.strip()]
    bad = [w for w in only if w not in WORKLOADS] + [x for x in libs if x not in LIBS]
    if bad:
        ap.error(
            f"unknown workload or library: {bad}; "
            f"workloads {list(WORKLOADS)}, libraries {list(LIBS)}"
        )
    if "mechjax" not in libs:
        libs.insert(0, "mechjax")

    info = machine_info()
    print(
        f"machine: {info.get('cpu', '?')}, {info['cores']} cores, {info.get('memory_gb', '?')} GB; "
        f"load average {info.get('load_avg', ('?',))[0]}",
        flush=True,
    )
    prep = _sub(["--worker", "prepare"], work, args.timeout)
    if "config" not in prep:
        print(f"prepare failed: {prep}", file=sys.stderr)
        return 1
    cfg = SimpleNamespace(**prep["config"])
    peak = _sub(["--worker", "peak"] + (["--quick"] if args.quick else []), work, args.timeout)
    jax_peak = peak.get("peak", {}).get("jax")
    print(
        "float32 matmul peak, GFLOP/s: "
        + ", ".join(f"{k} {v:.1f}" for k, v in peak.get("peak", {}).items()),
        flush=True,
    )

    import importlib.util

    results: dict = {}
    for w in only:
        results[w] = {}
        for lib in libs:
            mod = PEER_MODULES.get(lib)
            if mod and importlib.util.find_spec(mod) is None:
                r = {
                    "status": "cannot",
                    "reason": f"{mod} not installed (run scripts/bench_setup.sh)",
                }
            else:
                r = _sub(
                    [
                        "--worker",
                        f"{w}:{lib}",
                        "--repeats",
                        str(repeats),
                        "--budget",
                        str(args.budget),
                        "--sample-cells",
                        str(args.sample_cells),
                    ],
                    work,
                    args.timeout,
                )
            if r["status"] == "ok" and lib == "mechjax":
                r["compile_s"] = max(r["first_s"] - r["median_s"], 0.0)
                r["flops"] = workload_flops(
                    cfg,
                    w,
                    n_pos=prep["n_pos"],
                    gen_prompt=prep["gen_prompt"],
                    ioi_pos=prep.get("ioi_pos"),
                )
                r["gflops"] = r["flops"] / r["median_s"] / 1e9
                r["flop_frac"] = r["gflops"] / jax_peak if jax_peak else None
            if r["status"] == "ok" and lib != "mechjax":
                r.update(compare(work, w, lib))
                mj_t = results[w].get("mechjax", {}).get("median_s")
                if mj_t:
                    r["ratio"] = r["median_s"] / mj_t
            results[w][lib] = r
            msg = (
                f"{r['median_s']:.3f} s median, first {r['first_s']:.2f} s, "
                f"peak {r['rss_peak_mb']:.0f} MB"
                if r["status"] == "ok"
                else f"{r['status']}: {r.get('reason', '')}"
            )
            print(f"  ({w}) {LIB_NAMES[lib]:16s} {msg}", flush=True)

    print()
    print(table(results, peak))
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "load_avg_after": load_after,
                    "matmul_peak": peak,
                    "repeats": repeats,
                    "quick": args.quick,
                    "model": MODEL,
                    "inputs": {
                        "ioi_positions": prep["n_pos"],
                        "gen_prompt_tokens": prep["gen_prompt"],
                    },
                    "workloads": {
                        w: {"title": WORKLOADS[w], "libraries": results[w]} for w in results
                    },
                },
                indent=1,
            )
        )
        print(f"\nwrote {args.json}")
    if args.plot:
        plot(
            results,
            args.plot,
            f"SmolLM2-135M on {info.get('cpu', 'CPU')} ({info['cores']} cores)"
            + (", --quick" if args.quick else ""),
        )
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
