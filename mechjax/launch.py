"""Multi-process runs on JAX's own runtime (`jax.distributed`), and a local launcher.

What this module owns:

- `initialize()`: join a multi-process job. With no arguments and no `MECHJAX_*`
  environment variables it is `jax.distributed.initialize()`, which finds the
  coordinator itself on TPU pod slices, SLURM and Open MPI. It selects gloo for CPU
  collectives and sets short initialization, heartbeat and shutdown timeouts, so a
  process whose peer is gone is terminated by JAX's coordination service (missing
  heartbeats) instead of waiting forever.
- `watchdog(seconds, stage)`: a second line of defence for a peer that is alive but
  stuck: the process exits with a message naming the stage if it takes too long.
- `launch_local(argv, num_processes, devices_per_process)`: start N processes on
  loopback, each with `devices_per_process` virtual CPU devices
  (`--xla_force_host_platform_device_count`), stream their output with a `[pN]` prefix,
  enforce an overall timeout, and report how each process ended.
- `python -m mechjax.launch` (or `scripts/launch_multihost.py`): with no program, the
  built-in check (a sharded forward with captured sites and a sharded patching sweep
  over all processes' devices, compared with a single-process run); with `-- prog.py
  args`, any program that calls `initialize()`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

ENV_COORDINATOR = "MECHJAX_COORDINATOR"
ENV_NUM_PROCESSES = "MECHJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "MECHJAX_PROCESS_ID"
ENV_HEARTBEAT = "MECHJAX_HEARTBEAT_TIMEOUT"
EXIT_STALLED = 75  # a watchdog fired: no progress, a peer is probably lost
EXIT_SIMULATED = 76  # --simulate-failure: this process left on purpose
TOLERANCE = 1e-5  # |sharded - single| <= TOLERANCE * (1 + |single|)


# ------------------------------------------------------------------- inside a process


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    initialization_timeout: int = 60,
    heartbeat_timeout: int | None = None,
    shutdown_timeout: int = 10,
    cpu_collectives: str | None = "gloo",
) -> None:
    """Join the multi-process job; call before any other JAX call.

    Arguments left `None` come from `MECHJAX_COORDINATOR`, `MECHJAX_NUM_PROCESSES` and
    `MECHJAX_PROCESS_ID` (set by `launch_local`), else from JAX's cluster detection.

    Args:
      initialization_timeout: seconds to wait for every process to connect.
      heartbeat_timeout: seconds without a heartbeat after which the coordination
        service declares a process dead and terminates the others (default: the
        `MECHJAX_HEARTBEAT_TIMEOUT` variable, else 10).
      shutdown_timeout: seconds the exit barrier waits for the other processes.
      cpu_collectives: collectives of the CPU backend ("gloo"; None leaves JAX's default).
    """
    import jax

    env = os.environ
    coordinator_address = coordinator_address or env.get(ENV_COORDINATOR)
    if num_processes is None and ENV_NUM_PROCESSES in env:
        num_processes = int(env[ENV_NUM_PROCESSES])
    if process_id is None and ENV_PROCESS_ID in env:
        process_id = int(env[ENV_PROCESS_ID])
    if heartbeat_timeout is None:
        heartbeat_timeout = int(env.get(ENV_HEARTBEAT, 10))
    if cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    timeouts: dict[str, Any] = {
        "initialization_timeout": initialization_timeout,
        "heartbeat_timeout_seconds": heartbeat_timeout,
        "shutdown_timeout_seconds": shutdown_timeout,
    }
    accepted = inspect.signature(jax.distributed.initialize).parameters
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        **{k: v for k, v in timeouts.items() if k in accepted},
    )


@contextlib.contextmanager
def watchdog(seconds: float, stage: str):
    """Exit the process (code 75) with a clear message if the block runs over `seconds`.

    A collective whose peer is stuck (alive, so still sending heartbeats) would otherwise
    wait for ever; `os._exit` is used because the blocked thread cannot be interrupted.
    """
    where = f"process {os.environ.get(ENV_PROCESS_ID, '?')}"

    def fire():
        sys.stderr.write(
            f"mechjax.launch: {where} made no progress in stage {stage!r} for {seconds:.0f} s; "
            "a peer process is probably lost or stuck. Exiting.\n"
        )
        sys.stderr.flush()
        os._exit(EXIT_STALLED)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


# ------------------------------------------------------------------------ the launcher


class ProcessResult(NamedTuple):
    """How one launched process ended."""

    process_id: int
    returncode: int | None  # None: killed by the launcher
    seconds: float
    output: str
    diagnosis: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env(
    process_id: int,
    num_processes: int,
    devices: int,
    port: int,
    extra: Mapping[str, str] | None = None,
) -> dict:
    env = {**os.environ, **(extra or {})}
    flags = [
        f
        for f in env.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["PYTHONUNBUFFERED"] = "1"
    env[ENV_COORDINATOR] = f"127.0.0.1:{port}"
    env[ENV_NUM_PROCESSES] = str(num_processes)
    env[ENV_PROCESS_ID] = str(process_id)
    return env


def diagnose(returncode: int | None, output: str) -> str:
    """One line saying why a process ended, from its exit status and its output."""
    if returncode == 0:
        return "finished"
    for line in output.splitlines():
        if line.startswith("mechjax.launch:"):
            return line.removeprefix("mechjax.launch: ")
    if "detected fatal errors" in output or "stopped sending heartbeats" in output:
        if "RegisterTask" in output and "DEADLINE_EXCEEDED" in output:
            return "could not reach all processes within the initialization timeout"
        return (
            "lost its peer: JAX's coordination service reported a dead process "
            "(missing heartbeats) or an unreachable coordinator, and terminated it"
        )
    if returncode is None:
        return "killed by the launcher (timeout)"
    if returncode < 0:
        return f"killed by signal {signal.Signals(-returncode).name}"
    tail = [ln for ln in output.splitlines() if ln.strip()][-1:] or [""]
    return f"exited with code {returncode}: {tail[0][:200]}"


def launch_local(
    argv: Sequence[str],
    num_processes: int = 2,
    devices_per_process: int = 4,
    *,
    timeout: float = 120.0,
    grace: float = 30.0,
    echo: bool = True,
    env: Mapping[str, str] | None = None,
) -> list[ProcessResult]:
    """Run `argv` as `num_processes` processes of one JAX job on loopback.

    Each process gets `devices_per_process` virtual CPU devices and the `MECHJAX_*`
    variables that `initialize()` reads. Never hangs: after `timeout` seconds, or `grace`
    seconds after the first process fails (time for the others to fail on their own),
    the remaining processes are killed. `env` adds environment variables.
    """
    port = free_port()
    start = time.monotonic()
    procs, outputs, readers, ended = [], [], [], {}
    for pid in range(num_processes):
        p = subprocess.Popen(
            list(argv),
            env=_child_env(pid, num_processes, devices_per_process, port, env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        t = threading.Thread(target=_pump, args=(p.stdout, lines, f"[p{pid}] ", echo), daemon=True)
        t.start()
        procs.append(p)
        outputs.append(lines)
        readers.append(t)
    deadline = start + timeout
    while len(ended) < num_processes:
        now = time.monotonic()
        for pid, p in enumerate(procs):
            if pid not in ended and p.poll() is not None:
                ended[pid] = (p.returncode, now - start)
                if p.returncode != 0:
                    deadline = min(deadline, now + grace)
        if now > deadline:
            for pid, p in enumerate(procs):
                if pid not in ended:
                    p.kill()
                    p.wait()
                    ended[pid] = (None, now - start)
        time.sleep(0.1)
    for t in readers:
        t.join(timeout=5)
    results = []
    for pid in range(num_processes):
        code, secs = ended[pid]
        out = "".join(outputs[pid])
        results.append(ProcessResult(pid, code, secs, out, diagnose(code, out)))
    return results


def _pump(stream, sink: list, prefix: str, echo: bool) -> None:
    for line in stream:
        sink.append(line)
        if echo:
            sys.stdout.write(prefix + line)
            sys.stdout.flush()


# ------------------------------------------------------------------ the built-in check


def check_problem(n_layers: int = 2):
    """The check's model, tokens and patch values (identical in every process)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import mechjax as mj
    from mechjax.io.families import family_of_module

    llama = family_of_module("llama")
    assert llama.init is not None
    # the config class through the registry: mechjax.models is a package-dir mapping
    cfg = importlib.import_module("mechjax.models.llama").Config(
        d_model=32,
        n_layers=n_layers,
        n_heads=4,
        n_kv_heads=2,
        d_head=8,
        d_mlp=48,
        d_vocab=64,
        n_ctx=64,
    )
    model = mj.Model(llama.init(jax.random.PRNGKey(0), cfg, scale=0.3), cfg, llama)
    rng = np.random.RandomState(0)
    tokens = jnp.asarray(rng.randint(0, cfg.d_vocab, (4, 7)), jnp.int32)
    values = jnp.asarray(rng.normal(size=(8, 7, cfg.d_model)), jnp.float32)
    return model, tokens, values


CHECK_CAPTURE = ("blocks.0.attn.hook_pattern", "blocks.1.hook_resid_post")
CHECK_SITE = "blocks.1.hook_resid_pre"


def logit_diff(logits):
    """Mean over the batch of logit(token 1) - logit(token 2) at the last position."""
    return (logits[:, -1, 1] - logits[:, -1, 2]).mean()


def check_results(mesh=None) -> dict:
    """The check's forward, cache and sweep; sharded over `mesh` if given."""
    import jax

    import mechjax as mj
    from mechjax import sharding

    model, tokens, values = check_problem()
    sweep = sharding.patching_sweep(CHECK_SITE, logit_diff, positions=[2, 5], mesh=mesh)
    if mesh is not None:
        model = sharding.shard_model(model, mesh)
        tokens = sharding.shard_batch(tokens, mesh)
        values = sharding.shard_sweep(values, mesh)
    forward = jax.jit(mj.run, static_argnames="capture")
    out = {}
    with watchdog(_STAGE_TIMEOUT, "forward"):
        fwd = forward(model, tokens, capture=CHECK_CAPTURE)
        out["logits"] = sharding.to_host(fwd.logits)
        out.update(sharding.to_host(fwd.cache))
    _maybe_fail("sweep")
    with watchdog(_STAGE_TIMEOUT, "sweep"):
        out["sweep"] = sharding.to_host(sweep(model, tokens, values))
    return out


_STAGE_TIMEOUT = 90.0
_FAIL_AT: tuple[int, str, str] | None = None  # (process, stage, "exit" or "hang")


def _maybe_fail(stage: str) -> None:
    """Fault injection for drills: leave abruptly (a crashed host) or hang (a stuck one)."""
    if _FAIL_AT is not None and _FAIL_AT[1] == stage:
        import jax

        pid, _, how = _FAIL_AT
        if jax.process_index() == pid:
            print(
                f"simulating the {'hang' if how == 'hang' else 'loss'} of process {pid} "
                f"at stage {stage!r}",
                flush=True,
            )
            if how == "hang":
                time.sleep(10**6)
            os._exit(EXIT_SIMULATED)


def _check_worker(out_dir: str) -> None:
    initialize()
    import jax
    import numpy as np

    from mechjax import sharding

    _maybe_fail("start")
    n = jax.device_count()
    mesh = sharding.make_mesh(model=2, sweep=2) if n % 4 == 0 else sharding.make_mesh()
    print(
        f"process {jax.process_index()}/{jax.process_count()}: {jax.local_device_count()} "
        f"local of {n} devices, mesh {dict(mesh.shape)}",
        flush=True,
    )
    _maybe_fail("forward")
    results = check_results(mesh)
    if jax.process_index() == 0:
        np.savez(Path(out_dir) / "sharded.npz", **results)


def compare(sharded: dict, single: dict, tol: float = TOLERANCE) -> list[str]:
    """Lines `name: max |diff| ...`; a line starting with `FAIL` if out of tolerance."""
    import numpy as np

    lines = []
    for k, ref in single.items():
        got = np.asarray(sharded[k], np.float64)
        ref = np.asarray(ref, np.float64)
        d = np.abs(got - ref)
        ok = got.shape == ref.shape and bool(np.all(d <= tol * (1 + np.abs(ref))))
        lines.append(
            f"{'ok  ' if ok else 'FAIL'} {k}: max |diff| = {d.max():.3g}, "
            f"mean |diff| = {d.mean():.3g}"
        )
    return lines


def _check(args) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        argv = [
            sys.executable,
            "-m",
            "mechjax.launch",
            "--check-worker",
            tmp,
            "--stage-timeout",
            str(args.stage_timeout),
        ]
        if args.simulate_failure:
            argv += ["--simulate-failure", args.simulate_failure]
        results = launch_local(
            argv,
            args.num_processes,
            args.devices_per_process,
            timeout=args.timeout,
            grace=args.grace,
            echo=args.verbose,
            env=_env(args),
        )
        for r in results:
            print(f"process {r.process_id}: {r.diagnosis} ({r.seconds:.1f} s)")
        if any(r.returncode != 0 for r in results):
            print("mechjax.launch: the multi-process check FAILED")
            return 1
        import numpy as np

        sharded = dict(np.load(Path(tmp) / "sharded.npz"))
    single = check_results(None)
    lines = compare(sharded, single)
    print("\n".join(lines))
    ok = not any(ln.startswith("FAIL") for ln in lines)
    print(
        f"mechjax.launch: {args.num_processes} processes x {args.devices_per_process} devices "
        f"{'match' if ok else 'DO NOT match'} the single-process results (tolerance {TOLERANCE})"
    )
    return 0 if ok else 1


def _env(args) -> dict:
    return {ENV_HEARTBEAT: str(args.heartbeat_timeout)} if args.heartbeat_timeout else {}


def main(argv: Sequence[str] | None = None) -> int:
    global _FAIL_AT, _STAGE_TIMEOUT
    parser = argparse.ArgumentParser(
        prog="python -m mechjax.launch",
        description="Run N local processes of one JAX job on loopback (gloo CPU collectives). "
        "Without a program: a sharded forward and sweep checked against one process.",
    )
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--devices-per-process", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for the whole job")
    parser.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds the others get to fail on their own after one fails",
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=int,
        help="seconds of silence after which JAX declares a process dead (10)",
    )
    parser.add_argument(
        "--stage-timeout",
        type=float,
        default=_STAGE_TIMEOUT,
        help="seconds a stage of the check may take before its watchdog fires",
    )
    parser.add_argument(
        "--simulate-failure",
        metavar="PROCESS:STAGE[:hang]",
        help="make PROCESS exit abruptly (or hang) at STAGE (start, forward, sweep)",
    )
    parser.add_argument("--quiet", dest="verbose", action="store_false")
    parser.add_argument("--check-worker", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument(
        "program",
        nargs=argparse.REMAINDER,
        help="-- program.py args... (it must call mechjax.launch.initialize())",
    )
    args = parser.parse_args(argv)
    _STAGE_TIMEOUT = args.stage_timeout
    if args.simulate_failure:
        parts = args.simulate_failure.split(":")
        how = parts[2] if len(parts) > 2 else "exit"
        _FAIL_AT = (int(parts[0]), parts[1] if len(parts) > 1 else "forward", how)
    if args.check_worker:
        _check_worker(args.check_worker)
        return 0
    program = [a for a in args.program if a != "--"]
    if not program:
        return _check(args)
    results = launch_local(
        [sys.executable, *program],
        args.num_processes,
        args.devices_per_process,
        timeout=args.timeout,
        grace=args.grace,
        echo=args.verbose,
        env=_env(args),
    )
    for r in results:
        print(f"process {r.process_id}: {r.diagnosis} ({r.seconds:.1f} s)")
    return 0 if all(r.returncode == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
