"""Runs the workers as subprocesses and compares each peer's output with mechjax's."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# ------------------------------------------------------------------------ orchestrator


def _sub(args_list, work: Path, timeout: float) -> dict:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONWARNINGS": "ignore",
    }
    res = work / f"res_{os.getpid()}_{time.monotonic_ns()}.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve().parent),  # the package: runs __main__.py
        *args_list,
        "--work-dir",
        str(work),
        "--result",
        str(res),
    ]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": f"timed out after {timeout:.0f} s"}
    if p.returncode != 0 or not res.exists():
        lines = [x for x in (p.stderr or "").strip().splitlines() if x.strip()]
        return {"status": "error", "reason": lines[-1][:300] if lines else f"exit {p.returncode}"}
    out = json.loads(res.read_text())
    res.unlink()
    return out


def compare(work: Path, w: str, lib: str) -> dict:
    """Largest difference of `lib`'s output from mechjax's (tokens: fraction differing)."""
    import numpy as np

    a, b = work / f"out_{w}_mechjax.npz", work / f"out_{w}_{lib}.npz"
    if not (a.exists() and b.exists()):
        return {}
    ref, got = np.load(a), np.load(b)
    if w in ("e", "f"):
        r, g = ref["tokens"], got["tokens"].astype(ref["tokens"].dtype)
        if r.shape != g.shape:
            return {"max_diff": None, "diff_note": f"shape {g.shape} vs {r.shape}"}
        return {
            "max_diff": float((r != g).mean()),
            "diff_kind": "tokens differing",
            "rows_identical": int((r == g).all(1).sum()),
        }
    if "cells" in got.files:  # a peer timed on sampled cells: compare those cells
        idx = tuple(got["cells"].astype(int).T)
        d = float(np.abs(got["grid"] - ref["grid"][idx]).max())
        rel = d / max(float(np.abs(ref["grid"][idx]).max()), 1e-30)
        return {"max_diff": d, "rel_diff": rel, "diff_kind": f"max abs, {len(idx[0])} cells"}
    worst, rel = 0.0, 0.0
    for k in ref.files:
        if k not in got.files or got[k].shape != ref[k].shape:
            return {"max_diff": None, "diff_note": f"{k}: shape mismatch"}
        d = float(np.abs(got[k] - ref[k]).max())
        worst = max(worst, d)
        rel = max(rel, d / max(float(np.abs(ref[k]).max()), 1e-30))
    return {"max_diff": worst, "rel_diff": rel, "diff_kind": "max abs"}


def machine_info() -> dict:
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cores": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["memory_gb"] = round(int(mem) / 2**20, 1)
        info["load_avg"] = os.getloadavg()
    except OSError:
        pass
    from importlib import metadata

    versions = {}
    for pkg in (
        "jax",
        "jaxlib",
        "torch",
        "transformers",
        "transformer-lens",
        "nnsight",
        "pyvene",
        "penzai",
        "mechjax",
    ):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    info["versions"] = versions
    return info
