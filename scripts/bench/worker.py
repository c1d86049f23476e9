"""One (workload, library) measurement in its own process: repeats, wall time, memory."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from bench.common import Cannot, _np
from bench.libs_mechjax import MechjaxLib
from bench.libs_peers import NNsightLib, PenzaiLib, PyveneLib
from bench.libs_torch import HFLib, TLLib

LIB_CLASSES = {
    "mechjax": MechjaxLib,
    "hf": HFLib,
    "transformer_lens": TLLib,
    "nnsight": NNsightLib,
    "pyvene": PyveneLib,
    "penzai": PenzaiLib,
}


# ------------------------------------------------------------------------ worker


class _RssSampler:
    """Peak resident set size over a period (psutil polling; else ru_maxrss)."""

    def __init__(self, interval=0.005):
        try:
            import psutil

            self.proc = psutil.Process()
        except ImportError:
            self.proc = None
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def rss(self) -> int:
        if self.proc is not None:
            return self.proc.memory_info().rss
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def __enter__(self):
        self.peak = self.rss()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.rss())


def run_worker(spec: str, work: Path, repeats: int, budget: float, sample_cells: int = 0) -> dict:
    import numpy as np

    w, lib = spec.split(":")
    inp = dict(np.load(work / "inputs.npz"))
    inp["sample_cells"] = sample_cells
    t = time.perf_counter()
    try:
        obj = LIB_CLASSES[lib](work, inp)
        fn, extract = obj.workload(w)
    except Cannot as e:
        return {"status": "cannot", "reason": str(e)}
    load_s = time.perf_counter() - t
    sampler = _RssSampler()
    base = sampler.rss()
    with sampler:
        t = time.perf_counter()
        out = fn()  # warm-up: compile (mechjax, penzai), allocation, lazy imports (torch)
        first = time.perf_counter() - t
        # the slowest peers get fewer repeats: at most `budget` seconds of timed runs; a
        # torch run (no compilation) longer than the budget is timed by its first call
        repeats = min(repeats, max(1, int(budget // max(first, 1e-9)))) if repeats else 0
        if lib != "mechjax" and lib != "penzai" and first > budget:
            repeats = 0
        times = [] if repeats else [first]  # --repeats 0: a smoke run, the first call timed
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    # a peer timed on a sample of the cells (workload g, --sample-cells): its times are
    # scaled to the full sweep, the cost per cell being the same for every cell
    scale = getattr(obj, "time_scale", None)
    if scale:
        times, first = [t * scale for t in times], first * scale
    arrays = {k: _np(v) for k, v in extract(out).items()}
    np.savez(work / f"out_{w}_{lib}.npz", **arrays)
    extra = {}
    if lib in ("hf", "transformer_lens", "nnsight", "pyvene"):
        import torch

        extra["torch_threads"] = torch.get_num_threads()
    return {
        "status": "ok",
        "repeats": len(times),
        "times": times,
        "median_s": float(np.median(times)),
        "first_s": first,
        "load_s": load_s,
        "rss_base_mb": base / 2**20,
        "rss_peak_mb": sampler.peak / 2**20,
        "rss_delta_mb": (sampler.peak - base) / 2**20,
        **({"extrapolated_from": f"{sample_cells} sampled cells"} if scale else {}),
        **extra,
    }
