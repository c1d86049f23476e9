"""Progress bars and compile clocks shared by long work (generation, sweeps, reproductions).

`CompileClock` listens to JAX's own compile events, so compile time is reported apart
from run time without timing a second call; `progress_bar` is a tqdm bar on stderr that
is off unless asked for or on a terminal (`show_progress`); `release_compiled` drops JAX's
compiled programs between pieces of long work before they exhaust the process's
memory-mapping limit.
"""

from __future__ import annotations

import gc
import sys

import jax

__all__ = [
    "CompileClock",
    "exclude_compile",
    "memory_maps",
    "progress_bar",
    "release_compiled",
    "show_progress",
    "timing_note",
]

_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


class CompileClock:
    """Seconds JAX spends tracing, lowering and compiling while the clock is entered.

        with CompileClock() as clock:
            f(x)
        clock.seconds  # 0.0 when every program was already compiled

    It listens to JAX's own monitoring events, so it separates compile time from run
    time without timing a second call. Shared by generation, the reproductions' stage
    reports and the demo.
    """

    def __init__(self) -> None:
        self.seconds = 0.0

    def _listen(self, event: str, duration_secs: float, **kwargs: str | int) -> None:
        if event in _COMPILE_EVENTS:
            self.seconds += duration_secs

    def __enter__(self) -> CompileClock:
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listen)


def show_progress(progress: bool | None, long: bool = True) -> bool:
    """Whether to draw a bar: `progress` if given, else `long` work on a terminal stderr."""
    if progress is not None:
        return bool(progress)
    return long and sys.stderr.isatty()


def progress_bar(
    enabled: bool, total: int | None, desc: str, unit: str = "it", *, delay: float = 0.0
):
    """A tqdm bar on stderr (a no-op bar when not `enabled`); `delay`: seconds before it
    is first drawn, so work that ends sooner leaves no bar behind."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, delay=delay
    )


def exclude_compile(bar, seconds: float) -> None:
    """Move the bar's clock past `seconds` of compilation, so its rate is the run's rate."""
    if seconds and not bar.disable:
        bar.start_t += seconds


def timing_note(compile_s: float, total_s: float) -> str:
    """'compile 1.2s, run 0.8s': compile time apart from the rest of `total_s`."""
    return f"compile {compile_s:.1f}s, run {max(total_s - compile_s, 0.0):.1f}s"


def memory_maps() -> tuple[int, int] | None:
    """(memory mappings this process holds, the kernel's per-process limit), or None where
    /proc does not tell (not Linux)."""
    try:
        with open("/proc/self/maps", "rb") as f:
            used = sum(1 for _ in f)
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read())
    except (OSError, ValueError):
        return None
    return used, limit


def release_compiled(fraction: float = 0.5) -> bool:
    """Drop JAX's compiled programs once they hold over `fraction` of the mapping limit.

    Each program XLA compiles for the CPU keeps a few memory mappings (about six for a
    small one) for as long as a jit cache holds it. A process that compiles thousands of
    distinct programs (many shapes, many sweeps, a test suite) reaches Linux's limit
    (`vm.max_map_count`, 65530 by default) and then dies of a segmentation fault inside
    the compiler, with no Python error. Called between pieces of long work (the
    reproductions call it after each stage), this clears JAX's caches
    (`jax.clear_caches()`) when the mappings pass the fraction, so later programs compile
    again instead of crashing. Returns whether it cleared.
    """
    maps = memory_maps()
    if maps is None or maps[0] <= fraction * maps[1]:
        return False
    jax.clear_caches()
    gc.collect()
    return True
