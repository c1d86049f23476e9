"""Stages of a reproduction: a progress bar, per-stage timings and partial results.

    with Stages(out / "results.json", total=3, progress=None) as stages:
        with stages.stage("confinement"):
            conf = run_confinement()
        stages.save({"confinement": conf})  # on disk now, with "complete": false
        ...
        stages.finish(results)  # the same file, "complete": true

A long reproduction that is interrupted (an error, Ctrl-C, a killed job) keeps every stage
it finished: the results file is rewritten after each stage with `"complete": false`, and
a failing stage adds `"failed": {"stage", "error"}`. Each stage's wall time is reported
with the part JAX spent compiling apart (`mechjax.progress.CompileClock`), since on a
first run most of a short stage is compilation. After each stage, JAX's compiled programs
are dropped if they hold over half the process's memory-mapping limit
(`mechjax.progress.release_compiled`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from mechjax.progress import (
    CompileClock,
    progress_bar,
    release_compiled,
    show_progress,
    timing_note,
)


def write_json(path: Path, obj) -> None:
    """Write JSON through a temporary file, so a kill mid-write never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


class Stages:
    """A bar over a reproduction's stages; the results file rewritten after each stage.

    Args:
      path: the results file (results.json, summary.json).
      total: the number of stages, for the bar.
      progress: draw the bar (None: when stderr is a terminal).
      log: where stage reports go (`print` goes through the bar, so lines stay whole).
    """

    def __init__(
        self, path: Path, total: int, *, progress: bool | None = None, log: Callable = print
    ):
        self.path = Path(path)
        self.timings: dict[str, dict[str, float]] = {}
        self._partial: dict = {}
        self.show = show_progress(progress)  # stages pass it on to their own inner bars
        self._bar = progress_bar(self.show, total, "stages", "stage")
        self._log = log

    def __enter__(self) -> Stages:
        return self

    def __exit__(self, *exc) -> None:
        self._bar.close()

    def log(self, msg: str) -> None:
        if self._log is print and self.show:
            self._bar.write(msg, file=sys.stdout)  # above the bar, not through it
        else:
            self._log(msg)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block (compile time apart); on an error, record it in the file."""
        self._bar.set_description(name)
        t0 = time.perf_counter()
        try:
            with CompileClock() as clock:
                yield
        except BaseException as e:
            self._write({**self._partial, "failed": {"stage": name, "error": repr(e)}})
            raise
        secs = time.perf_counter() - t0
        self.timings[name] = {"seconds": round(secs, 2), "compile_seconds": round(clock.seconds, 2)}
        self._bar.update(1)
        self.log(f"  [{name}: {timing_note(clock.seconds, secs)}]")
        release_compiled()  # a long run's many programs must not exhaust the mapping limit

    def save(self, partial: dict) -> None:
        """The results so far, written with `"complete": false`."""
        self._partial = {**self._partial, **partial}
        self._write(self._partial)

    def finish(self, results: dict) -> dict:
        """The final results, with `"complete": true` and the stage timings; returns them."""
        out = {**results, "complete": True, "stage_seconds": self.timings}
        write_json(self.path, out)
        return out

    def _write(self, partial: dict) -> None:
        write_json(self.path, {**partial, "complete": False, "stage_seconds": self.timings})


def prior_details(
    path: Path, settings: dict, free: Sequence[str] | Callable[[dict], Sequence[str]] = ()
) -> dict:
    """An earlier run's details.json for `--resume`, checked to have been written with the
    same settings (but for the keys in `free`, which may differ; or `free(prior)`, the keys
    that may differ given what the earlier run holds); {} if there is none.

    Raises an InputError naming the settings that differ, so a resumed run never mixes
    results of two configurations.
    """
    from mechjax.errors import InputError

    path = Path(path)
    if not path.is_file():
        return {}
    prior = json.loads(path.read_text())
    if callable(free):
        free = free(prior)
    old = {k: v for k, v in prior.get("settings", {}).items() if k not in free}
    new = {k: v for k, v in settings.items() if k not in free}
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        raise InputError(
            f"--resume: {path} was written with other settings ({', '.join(diff)} differ); "
            "use another --out or the same options"
        )
    return prior


def reproduction_parser(
    name: str,
    description: str,
    *,
    quick_help: str,
    models: Sequence[str] | None = None,
    out_help: str = "output folder (report.md, results.json, figures)",
) -> argparse.ArgumentParser:
    """The options every reproduction shares: --out, --quick, --smoke, --quiet, and
    --models when it runs on registered models (`models`: the default list).
    A reproduction adds its own options to the parser it gets back."""
    from mechjax.cli.main import HelpFormatter

    ap = argparse.ArgumentParser(
        prog=f"mechjax reproduce {name}", description=description, formatter_class=HelpFormatter
    )
    ap.add_argument("--out", required=True, help=out_help)
    ap.add_argument("--quick", action="store_true", help=quick_help)
    if models is not None:
        ap.add_argument("--models", nargs="+", default=list(models), help="registered model names")
    ap.add_argument("--smoke", action="store_true", help="seconds-long run of every stage (tests)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def reproduction_main(
    argv: Sequence[str] | None, parser: argparse.ArgumentParser, reproduce, **extra
) -> int:
    """A reproduction's `main`: parse `argv` with `parser` (from `reproduction_parser`) and
    call `reproduce(out, quick=, smoke=, progress=, models=)` (`models` when the parser
    has --models). `extra` maps more keyword arguments of `reproduce` to the option
    (attribute name) that gives each, or to a function of the parsed arguments."""
    args = parser.parse_args(argv)
    kw: dict = {"quick": args.quick, "smoke": args.smoke}
    kw["progress"] = False if args.quiet else None
    if hasattr(args, "models"):
        kw["models"] = args.models
    for name, how in extra.items():
        kw[name] = how(args) if callable(how) else getattr(args, how)
    reproduce(args.out, **kw)
    return 0


def partial_lines(gone: Sequence[str], details: dict) -> list[str]:
    """The report's paragraph for a run that did not finish: what is missing (`gone`),
    then details.json's own "note", if any; [] when nothing is missing."""
    if not gone:
        return []
    note = f" {details['note']}" if details.get("note") else ""
    return [
        "**This run is partial**: these did not finish (nothing was dropped from the "
        "tables): " + "; ".join(gone) + "." + note,
        "",
    ]


def report_main(argv: Sequence[str] | None, name: str, write_report, results_table) -> int:
    """`python -m mechjax.analyses.NAME.report DIR`: report.md and results.json again from
    DIR/details.json alone (after a partial run, or after the report code changed).

    `write_report(out, details, meta)` and `results_table(details, models)` are the
    reproduction's own; `name` is its module name, for the usage line.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) != 1:
        print(f"usage: python -m mechjax.analyses.{name}.report DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    details = json.loads((out / "details.json").read_text())
    meta = {"settings": details["settings"], "seconds": details.get("seconds", 0)}
    write_report(out, details, meta)
    models = [m for m in details["settings"]["models"] if m in details]
    table = {**results_table(details, models), "complete": bool(details.get("complete"))}
    write_json(out / "results.json", table)
    return 0
