"""The benchmark table and plot."""

from __future__ import annotations

from pathlib import Path

from bench.common import LIB_NAMES, LIBS, WORKLOADS


def _fmt_s(x):
    return "-" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def _fmt_diff(r):
    d = r.get("max_diff")
    if d is None:
        return r.get("diff_note", "-")
    if r.get("diff_kind") == "tokens differing":
        return f"{d:.1%} of tokens"
    return f"{d:.1e} (rel {r['rel_diff']:.0e})"


def table(results: dict, peak: dict) -> str:
    rows = [
        "| workload | library | median s | ratio (lib / mechjax) | peak MB (+over loaded) "
        "| max diff vs mechjax | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for w, libs in results.items():
        mj_t = libs.get("mechjax", {}).get("median_s")
        for lib, r in libs.items():
            name = LIB_NAMES[lib]
            if r["status"] != "ok":
                label = "cannot" if r["status"] == "cannot" else "error"
                rows.append(
                    f"| ({w}) {WORKLOADS[w]} | {name} | {label} | - | - | - "
                    f"| {r.get('reason', '')} |"
                )
                continue
            ratio = "1" if lib == "mechjax" else (f"{r['median_s'] / mj_t:.2f}x" if mj_t else "-")
            notes = []
            if lib == "mechjax":
                notes.append(f"compile {r['compile_s']:.1f} s")
                if r.get("flop_frac") is not None:
                    notes.append(
                        f"{r['gflops']:.1f} GFLOP/s = {r['flop_frac']:.0%} of jax matmul peak"
                    )
            if r.get("extrapolated_from"):
                notes.append(f"time extrapolated from {r['extrapolated_from']}")
            mem = f"{r['rss_peak_mb']:.0f} (+{r['rss_delta_mb']:.0f})"
            diff = "-" if lib == "mechjax" else _fmt_diff(r)
            rows.append(
                f"| ({w}) {WORKLOADS[w]} | {name} | {_fmt_s(r['median_s'])} | {ratio} | {mem} "
                f"| {diff} | {'; '.join(notes)} |"
            )
    return "\n".join(rows)


def plot(results: dict, path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ws = list(results)
    libs = [lib for lib in LIBS if any(lib in results[w] for w in ws)]
    times = [r["median_s"] for w in ws for r in results[w].values() if r["status"] == "ok"]
    lo, hi = min(times) / 4, max(times) * 4
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.9 * len(ws)))
    height = 0.8 / max(len(libs), 1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, lib in enumerate(libs):
        for j, w in enumerate(ws):
            r = results[w].get(lib)
            y = j + (i - (len(libs) - 1) / 2) * height
            if r is None:
                continue
            if r["status"] == "ok":
                ax.barh(
                    y,
                    r["median_s"],
                    height,
                    color=colors[i % len(colors)],
                    label=LIB_NAMES[lib]
                    if j == next(k for k, x in enumerate(ws) if lib in results[x])
                    else None,
                )
                ax.text(r["median_s"] * 1.05, y, _fmt_s(r["median_s"]), va="center", fontsize=7)
            else:
                ax.text(
                    lo * 1.1,
                    y,
                    f"{LIB_NAMES[lib]}: {r['status']}",
                    va="center",
                    fontsize=7,
                    color="grey",
                )
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_yticks(np.arange(len(ws)), [f"({w}) {WORKLOADS[w]}" for w in ws], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("median wall time, s (log scale; shorter is faster)")
    ax.set_title(title, fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    seen = {}
    for h, lbl in zip(handles, labels):
        seen.setdefault(lbl, h)
    ax.legend(seen.values(), seen.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
