"""Benchmark: DAS (distributed alignment search) training, mechjax against pyvene.

What it measures. Training a k-dimensional DAS rotation at the residual-stream input of
layer L (mechjax `blocks.L.hook_resid_pre` = HF `hidden_states[L]` = the input of decoder
layer L = pyvene's `block_input` of layer L), intervening at the base prompt's last real
token with the source prompt's last-real-token vector, on SmolLM2-135M(-Instruct) in
float32. For each layer in `--layers`: the wall-clock of training (mechjax: `site_acts`
+ `train`, the first call, compile included, with the compile time reported apart;
pyvene: building the `IntervenableModel` + the torch training loop), the IIA of the
trained rotation on held-out pairs for both, and the ratio pyvene / mechjax. Then
mechjax's `search` over the same layers as one call (activation caching of train and
test pairs, training of every layer and the test IIA, compile included).

Same work on both sides:

- weights: the GGUF of `mj.load("smollm2-135m")` for mechjax; its float32 HF copy
  (`out/bench/hf-smollm2`, written by `scripts/bench`'s prepare step; made here from the
  GGUF if it is missing) for pyvene;
- pairs: `mechjax.causal.causal_models.ioi_pairs(tok, "io_position", n=n_train + n_test,
  seed=0)`, the first `--n-train` rows to train, the rest held out. `--prepare` writes
  the token ids, masks, positions and labels to one .npz that both sides read;
- intervention: h' = h + B (B^T h_src - B^T h_base) with an orthonormal B [d, k]
  (mechjax `causal.rotation`, a QR-parametrised `Rotation`; pyvene
  `LowRankRotatedSpaceIntervention(low_rank_dimension=k)`, torch's orthogonal
  parametrisation of a d x k matrix, whose `forward` without subspaces is the same
  formula);
- initial basis: the same matrix (what `search` would start layer q from:
  `vmap(rotation)(split(PRNGKey(seed), n_layers))`), assigned to pyvene's parametrised
  weight;
- batches: the same rows at every step (`--prepare` replays the index draws of
  `das.train`'s scan: `key, sub = split(key); choice(sub, n, (batch,), replace=False)`
  from `PRNGKey(seed)`, checked against a jitted replay), same steps, batch size, Adam
  with the same lr (optax / torch defaults otherwise: b1 0.9, b2 0.999, eps 1e-8);
- loss: cross-entropy of the next-token logits at the base's last real token against
  the counterfactual label; IIA: the argmax there equals the label, on the held-out pairs.

Prompts are right-padded. pyvene gets the attention mask (pads masked); mechjax passes
none (causal attention: pads after the last real token never reach it). The run checks
both sides compute the same thing: the un-intervened last-token logits of held-out rows
(max |diff|) and the loss of the first step (same init, same batch).

Machine and threads: torch runs with `torch.set_num_threads(--threads)` (default 2, the
machine's cores; on a loaded machine 1 can be much faster, so measure both: the run in
docs/benchmarks/das.md used 1); JAX on CPU with XLA's defaults. Every (side, layer) runs
in its own process (model loading is not timed), the two sides alternating layer by
layer so that a change in the machine's load falls on both; each timed region also
records the CPU pressure (/proc/pressure/cpu "some": the share of the time some task
waited for a CPU). mechjax's compile time is read from `jax.monitoring` (tracing,
lowering and XLA compile durations). `--all` copies the `mechjax` package to
`<work>/snapshot` first and runs every step on that copy (`PYTHONPATH`), so that edits to
the work tree during the run cannot mix versions; each result records a hash of
`mechjax/causal/{das,featurizers,interchange}.py` and `--compare` refuses mixed hashes.

    .venv-bench/bin/python scripts/bench_das.py --all            # everything, then the table

is, apart from the snapshot and the alternation, the same as

    .venv-bench/bin/python scripts/bench_das.py --prepare
    .venv-bench/bin/python scripts/bench_das.py --side mechjax     # every layer, one process
    .venv-bench/bin/python scripts/bench_das.py --side pyvene      # --only 9: one layer
    .venv-bench/bin/python scripts/bench_das.py --side search      # mechjax's search
    .venv-bench/bin/python scripts/bench_das.py --compare

The run in docs/benchmarks/das.md:

    .venv-bench/bin/python scripts/bench_das.py --all --layers 3,9,15 --steps 30 --batch 32 \\
        --lr 1e-2 --k 16 --n-train 256 --n-test 128 --threads 1 --repeat-first

(`.venv-bench` has mechjax installed editable; `.venv/bin/python` runs every step except
`--side pyvene`.) Options: `--layers 3,9,15 --steps 100 --batch 32 --lr 1e-3 --k 16
--n-train 256 --n-test 128 --seed 0 --threads 2 --work out/bench/das`; `--no-search`
skips mechjax's search; `--repeat-first` times a second `train` call on the first layer
(does the compile repeat?). Settings must be the same for every step (they are stored in
the .npz and checked).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "out" / "bench" / "das"
HF_DIR = ROOT / "out" / "bench" / "hf-smollm2"
MODEL = "smollm2-135m"
N_LOGIT_ROWS = 8  # held-out rows whose un-intervened logits the two sides compare


# ------------------------------------------------------------------------------ helpers


def _machine() -> dict:
    out = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_avg": list(os.getloadavg()),
    }
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                out["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return out


class _Wall:
    """Wall time and CPU contention over a region: the share of the wall time during which
    some runnable task on the machine waited for a CPU (/proc/pressure/cpu "some"), and
    the load average at the end."""

    def __init__(self):
        self.t, self.stall = time.perf_counter(), _stall_us()

    def stop(self) -> dict:
        dt = time.perf_counter() - self.t
        out = {"s": dt, "load_avg": os.getloadavg()[0]}
        stall = _stall_us()
        if stall is not None and self.stall is not None:
            out["cpu_pressure"] = (stall - self.stall) / 1e6 / dt
        return out


def _stall_us():
    try:
        for line in open("/proc/pressure/cpu"):
            if line.startswith("some"):
                return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _only(args, s) -> list[tuple[int, int]]:
    """(index in --layers, layer) of the layers this process runs (--only, default all)."""
    want = s["layers"] if args.only is None else [int(x) for x in args.only.split(",")]
    bad = [l for l in want if l not in s["layers"]]
    if bad:
        raise SystemExit(f"--only {bad} not in --layers {s['layers']}")
    return [(s["layers"].index(l), l) for l in want]


def _mechjax_code() -> dict:
    """Where mechjax was imported from and a hash of its DAS code (the run must not mix
    versions: `--all` runs every step on one snapshot of the package)."""
    import hashlib

    import mechjax

    root = Path(mechjax.__file__).parent
    h = hashlib.sha256()
    for name in ("das.py", "featurizers.py", "interchange.py"):
        h.update((root / "causal" / name).read_bytes())
    return {"path": str(root), "causal_sha256": h.hexdigest()[:16]}


def _settings(args) -> dict:
    return {
        "layers": [int(x) for x in args.layers.split(",")],
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "k": args.k,
        "n_train": args.n_train,
        "n_test": args.n_test,
        "seed": args.seed,
    }


def _load_inputs(work: Path, settings: dict):
    import numpy as np

    path = work / "inputs.npz"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run --prepare first")
    inp = dict(np.load(path))
    stored = json.loads(str(inp["settings"]))
    if stored != settings:
        raise SystemExit(
            f"{path} was prepared with {stored}, not {settings}: run --prepare again "
            "(or pass the same options)"
        )
    return inp


def _write(work: Path, name: str, obj: dict) -> None:
    (work / name).write_text(json.dumps(obj, indent=1))
    print(f"wrote {work / name}")


# ------------------------------------------------------------------------------ prepare


def replay_batches(n: int, batch: int, steps: int, seed: int):
    """The row indices `das.train` draws at each step (its scan's key handling)."""
    import jax
    import numpy as np

    def draws(key):
        def step(key, _):
            key, sub = jax.random.split(key)
            return key, jax.random.choice(sub, n, (min(batch, n),), replace=False)

        return jax.lax.scan(step, key, None, length=steps)[1]

    key = jax.random.PRNGKey(seed)
    eager = []
    k = key
    for _ in range(steps):
        k, sub = jax.random.split(k)
        eager.append(np.asarray(jax.random.choice(sub, n, (min(batch, n),), replace=False)))
    eager = np.stack(eager)
    jitted = np.asarray(jax.jit(draws)(key))
    if not (eager == jitted).all():
        raise SystemExit("the jitted and eager replays of das.train's batches differ")
    return eager.astype(np.int32)


def prepare(args) -> None:
    import numpy as np

    import mechjax as mj
    from mechjax.causal import causal_models
    from mechjax.io import registry

    s = _settings(args)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    path = registry.resolve(MODEL)
    model = mj.load(path)
    tok = model.tokenizer
    data = causal_models.ioi_pairs(tok, "io_position", n=s["n_train"] + s["n_test"], seed=0)
    # what das.search starts layer q from: jax.vmap(make_featurizer)(keys)[q]
    inits = _init_bases(model.config.d_model, s)
    batches = replay_batches(s["n_train"], s["batch"], s["steps"], s["seed"])
    np.savez(
        work / "inputs.npz",
        settings=json.dumps(s),
        base=data.base,
        source=data.source,
        base_mask=data.base_mask,
        source_mask=data.source_mask,
        base_positions=data.base_positions,
        source_positions=data.source_positions,
        labels=data.labels,
        base_labels=data.base_labels,
        changes=np.asarray(data.info["changes"]),
        init_basis=np.asarray(inits),
        batches=batches,
        pad=np.int32(tok.pad_token_id or 0),
    )
    print(
        f"prepared {len(data)} IOI pairs (base width {data.base.shape[1]}, source width "
        f"{data.source.shape[1]}, lengths {int(data.base_lengths.min())}.."
        f"{int(data.base_lengths.max())}), label changes in {np.mean(data.info['changes']):.0%}"
    )
    if not (HF_DIR / "model.safetensors").exists():
        _hf_copy(path)


def _hf_copy(gguf) -> None:
    """The float32 HF copy of the GGUF (what scripts/bench's prepare step writes)."""
    import torch
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    config = hf.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the GGUF tag blocks save_pretrained
    plain = type(hf)(config).eval()
    plain.load_state_dict(hf.state_dict())
    plain.save_pretrained(str(HF_DIR))
    print(f"wrote the float32 HF copy of {gguf.name} to {HF_DIR}")


def _data(inp, rows):
    from mechjax.causal.data import CounterfactualData

    return CounterfactualData(
        base=inp["base"][rows],
        source=inp["source"][rows],
        base_mask=inp["base_mask"][rows],
        source_mask=inp["source_mask"][rows],
        base_positions=inp["base_positions"][rows],
        source_positions=inp["source_positions"][rows],
        labels=inp["labels"][rows],
        base_labels=inp["base_labels"][rows],
        variable="io_position",
        task="ioi",
    )


# ------------------------------------------------------------------------------ mechjax


class _CompileClock:
    """Sums JAX's tracing, lowering and XLA compile durations (jax.monitoring events)."""

    EVENTS = {
        "/jax/core/compile/jaxpr_trace_duration": "trace",
        "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
        "/jax/core/compile/backend_compile_duration": "compile",
    }

    def __init__(self):
        from jax import monitoring

        self.total = {v: 0.0 for v in self.EVENTS.values()}
        self.count = 0

        def listen(event, duration, **kw):
            name = self.EVENTS.get(event)
            if name:
                self.total[name] += duration
                if name == "compile":
                    self.count += 1

        monitoring.register_event_duration_secs_listener(listen)

    def snapshot(self):
        return dict(self.total), self.count

    def since(self, snap):
        total, count = snap
        out = {k: self.total[k] - total[k] for k in self.total}
        out["programs"] = self.count - count
        return out


def _mechjax_setup(args):
    import numpy as np

    import mechjax as mj
    from mechjax.causal import das
    from mechjax.io import registry

    s = _settings(args)
    inp = _load_inputs(Path(args.work), s)
    t = time.perf_counter()
    model = mj.load(registry.resolve(MODEL))
    load_s = time.perf_counter() - t
    n_tr = s["n_train"]
    train = _data(inp, np.arange(n_tr))
    test = _data(inp, np.arange(n_tr, n_tr + s["n_test"]))
    cfg = das.TrainConfig(steps=s["steps"], batch_size=s["batch"], lr=s["lr"], seed=s["seed"])
    return s, inp, model, train, test, cfg, load_s


def _block(tree):
    import jax

    jax.block_until_ready(tree)
    return tree


def _compile_s(c: dict) -> float:
    return c["trace"] + c["lower"] + c["compile"]


def side_mechjax(args) -> None:
    """mechjax `site_acts` + `train` per layer (first call, compile included), then IIA."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mechjax.causal import das, featurizers
    from mechjax.model import run

    s, inp, model, train, test, cfg, load_s = _mechjax_setup(args)
    clock = _CompileClock()
    d = model.config.d_model
    rows = slice(0, N_LOGIT_ROWS)
    logits = run(model, jnp.asarray(test.base[rows])).logits
    last = test.base_lengths[rows] - 1
    ref = np.asarray(logits[np.arange(len(last)), last]).tolist()
    for q, layer in _only(args, s):
        out = {"side": "mechjax", "layer": layer, "settings": s, "machine": _machine()}
        out["versions"] = {"jax": jax.__version__, "backend": jax.default_backend()}
        out["code"] = _mechjax_code()
        out["load_s"], out["ref_logits"] = load_s, ref
        init = featurizers.Rotation(jnp.asarray(inp["init_basis"][q]), jnp.zeros((d,), jnp.float32))
        snap, wall = clock.snapshot(), _Wall()
        t0 = time.perf_counter()
        acts = _block(das.site_acts(model, train, [layer]))
        t1 = time.perf_counter()
        out["site_acts_compile"] = clock.since(snap)
        feat, losses = _block(das.train(model, train, init, layer=layer, config=cfg, acts=acts))
        out["wall"] = wall.stop()
        t2 = time.perf_counter()
        out.update(
            site_acts_s=t1 - t0,
            train_s=t2 - t1,
            total_s=t2 - t0,
            compile=clock.since(snap),
            losses=np.asarray(losses).tolist(),
            orthogonality_error=featurizers.orthogonality_error(feat),
        )
        if args.repeat_first and q == _only(args, s)[0][0]:
            snap, wall = clock.snapshot(), _Wall()
            _block(das.train(model, train, init, layer=layer, config=cfg, acts=acts))
            out["second_train"] = {**wall.stop(), "compile": clock.since(snap)}
        snap, wall = clock.snapshot(), _Wall()
        out["iia"] = das.iia(model, test, feat, layer=layer)
        out["iia_wall"] = {**wall.stop(), "compile": clock.since(snap)}
        c = out["compile"]
        print(
            f"mechjax L{layer}: site_acts {out['site_acts_s']:.1f} s + train "
            f"{out['train_s']:.1f} s = {out['total_s']:.1f} s (trace {c['trace']:.1f}, lower "
            f"{c['lower']:.1f}, XLA compile {c['compile']:.1f} s, {c['programs']} programs; "
            f"CPU pressure {out['wall'].get('cpu_pressure', float('nan')):.0%}); loss "
            f"{out['losses'][0]:.3f} -> {out['losses'][-1]:.3f}; IIA {out['iia']:.3f} "
            f"(iia() {out['iia_wall']['s']:.1f} s)"
            + (
                f"; second train call {out['second_train']['s']:.1f} s (XLA compile "
                f"{out['second_train']['compile']['compile']:.1f} s)"
                if "second_train" in out
                else ""
            ),
            flush=True,
        )
        out["machine"]["load_avg_end"] = list(os.getloadavg())
        _write(Path(args.work), f"mechjax_L{layer}.json", out)


def side_search(args) -> None:
    """mechjax `search` over every layer of --layers as one call (compile included)."""
    import jax
    import numpy as np

    from mechjax.causal import das, featurizers

    s, inp, model, train, test, cfg, load_s = _mechjax_setup(args)
    clock = _CompileClock()
    d = model.config.d_model
    out = {"side": "search", "settings": s, "machine": _machine(), "load_s": load_s}
    out["versions"] = {"jax": jax.__version__, "backend": jax.default_backend()}
    out["code"] = _mechjax_code()
    snap, wall = clock.snapshot(), _Wall()
    res = das.search(
        model,
        train,
        test,
        lambda key: featurizers.rotation(key, d, s["k"]),
        s["layers"],
        config=cfg,
    )
    _block(res["featurizers"])
    out["wall"] = wall.stop()
    inits = np.asarray(inp["init_basis"])
    out.update(
        total_s=out["wall"]["s"],
        compile=clock.since(snap),
        iia=res["iia"],
        losses=np.asarray(res["losses"]).tolist(),
        # search starts layer q from rotation(split(PRNGKey(seed))[q]): the prepared bases
        init_matches=bool(np.array_equal(inits, np.asarray(_init_bases(d, s)))),
    )
    print(
        f"mechjax search over {s['layers']}: {out['total_s']:.1f} s (XLA compile "
        f"{out['compile']['compile']:.1f} s; CPU pressure "
        f"{out['wall'].get('cpu_pressure', float('nan')):.0%}); IIA {res['iia']}",
        flush=True,
    )
    out["machine"]["load_avg_end"] = list(os.getloadavg())
    _write(Path(args.work), "search.json", out)


def _init_bases(d: int, s: dict):
    import jax

    from mechjax.causal import featurizers

    keys = jax.random.split(jax.random.PRNGKey(s["seed"]), len(s["layers"]))
    return jax.vmap(lambda key: featurizers.rotation(key, d, s["k"]))(keys).basis


# ------------------------------------------------------------------------------ pyvene


def side_pyvene(args) -> None:
    """pyvene: IntervenableModel + LowRankRotatedSpaceIntervention + torch Adam per layer."""
    import numpy as np
    import pyvene as pv
    import torch
    import transformers

    s = _settings(args)
    work = Path(args.work)
    inp = _load_inputs(work, s)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "pyvene": getattr(pv, "__version__", None) or _dist_version("pyvene"),
        "torch_threads": torch.get_num_threads(),
    }
    t = time.perf_counter()
    if not (HF_DIR / "model.safetensors").exists():
        from mechjax.io import registry

        _hf_copy(registry.resolve(MODEL))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(HF_DIR), dtype=torch.float32)
    hf.eval().requires_grad_(False)
    hf.config.use_cache = False  # training forwards need no KV cache
    load_s = time.perf_counter() - t

    T = lambda x: torch.as_tensor(np.asarray(x)).long()  # noqa: E731
    base, source = T(inp["base"]), T(inp["source"])
    base_mask, source_mask = T(inp["base_mask"]), T(inp["source_mask"])
    bpos, spos = inp["base_positions"][:, 0], inp["source_positions"][:, 0]
    last = T(inp["base_mask"].sum(1) - 1)
    labels = T(inp["labels"])
    n_tr = s["n_train"]
    test_rows = np.arange(n_tr, n_tr + s["n_test"])

    with torch.no_grad():
        r = test_rows[:N_LOGIT_ROWS]
        lg = hf(input_ids=base[r], attention_mask=base_mask[r]).logits
        ref = lg[torch.arange(len(r)), last[r]].tolist()

    def forward(pvm, rows):
        rows = np.asarray(rows)
        b = {"input_ids": base[rows], "attention_mask": base_mask[rows]}
        src = [{"input_ids": source[rows], "attention_mask": source_mask[rows]}]
        # [interventions][batch][units]: one intervention, one position per row
        loc = {
            "sources->base": (
                [[[int(p)] for p in spos[rows]]],
                [[[int(p)] for p in bpos[rows]]],
            )
        }
        _, cf = pvm(b, src, unit_locations=loc)
        return cf.logits[torch.arange(len(rows)), last[rows]]

    def iia(pvm, chunk=64):
        preds = []
        with torch.no_grad():
            for i in range(0, len(test_rows), chunk):
                preds.append(forward(pvm, test_rows[i : i + chunk]).argmax(-1))
        return float((torch.cat(preds) == labels[test_rows]).float().mean())

    for q, layer in _only(args, s):
        out = {"side": "pyvene", "layer": layer, "settings": s, "machine": _machine()}
        out.update(versions=versions, load_s=load_s, ref_logits=ref)
        out["attn_implementation"] = getattr(hf.config, "_attn_implementation", None)
        wall = _Wall()
        t0 = time.perf_counter()
        pvm = pv.IntervenableModel(
            {
                "layer": layer,
                "component": "block_input",
                "unit": "pos",
                "intervention_type": pv.LowRankRotatedSpaceIntervention,
                "low_rank_dimension": s["k"],
            },
            model=hf,
        )
        pvm.disable_model_gradients()
        (iv,) = pvm.interventions.values()
        b0 = torch.as_tensor(inp["init_basis"][q])
        with torch.no_grad():
            iv.rotate_layer.weight = b0  # through the parametrisation's right_inverse
            out["init_error"] = float((iv.rotate_layer.weight - b0).abs().max())
        params = pvm.get_trainable_parameters()
        out["trainable_params"] = sum(p.numel() for p in params)
        opt = torch.optim.Adam(params, lr=s["lr"])
        losses = []
        t1 = time.perf_counter()
        for i in range(s["steps"]):
            rows = inp["batches"][i]
            loss = torch.nn.functional.cross_entropy(forward(pvm, rows), labels[rows])
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        t2 = time.perf_counter()
        out["wall"] = wall.stop()
        with torch.no_grad():
            w = iv.rotate_layer.weight
            out["orthogonality_error"] = float((w.T @ w - torch.eye(w.shape[1])).abs().max())
        out.update(setup_s=t1 - t0, train_s=t2 - t1, total_s=t2 - t0, losses=losses)
        wall = _Wall()
        out["iia"] = iia(pvm)
        out["iia_wall"] = wall.stop()
        print(
            f"pyvene L{layer}: {out['total_s']:.1f} s ({s['steps']} steps, "
            f"{out['train_s'] / s['steps']:.2f} s/step; CPU pressure "
            f"{out['wall'].get('cpu_pressure', float('nan')):.0%}); loss {losses[0]:.3f} -> "
            f"{losses[-1]:.3f}; IIA {out['iia']:.3f}",
            flush=True,
        )
        out["machine"]["load_avg_end"] = list(os.getloadavg())
        _write(work, f"pyvene_L{layer}.json", out)
        del pvm, opt


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


# ------------------------------------------------------------------------------ compare


def _per_step(m: dict, steps: int) -> float:
    """mechjax's train() time less its own tracing and compile, per step."""
    train_compile = _compile_s(m["compile"]) - _compile_s(m["site_acts_compile"])
    return (m["train_s"] - train_compile) / steps


def compare(args) -> None:
    import numpy as np

    work = Path(args.work)
    s = _settings(args)
    rd = lambda name: json.loads((work / name).read_text())  # noqa: E731
    mj = {l: rd(f"mechjax_L{l}.json") for l in s["layers"]}
    pv = {l: rd(f"pyvene_L{l}.json") for l in s["layers"]}
    for r in [*mj.values(), *pv.values()]:
        if r["settings"] != s:
            raise SystemExit(f"a result was run with {r['settings']}, not {s}")
    m0, p0 = mj[s["layers"][0]], pv[s["layers"][0]]
    codes = {r["code"]["causal_sha256"] for r in mj.values()}
    if (work / "search.json").exists():
        codes.add(rd("search.json")["code"]["causal_sha256"])
    if len(codes) != 1:
        raise SystemExit(f"the mechjax results come from different DAS code versions: {codes}")
    a, b = np.asarray(m0["ref_logits"]), np.asarray(p0["ref_logits"])
    pct = lambda w: f"{w.get('cpu_pressure', float('nan')):.0%}"  # noqa: E731
    print(f"settings: {s}")
    print(f"machine: {m0['machine'].get('cpu')}, {m0['machine']['cpus']} CPUs")
    print(f"mechjax code: {m0['code']['path']}, causal/ sha256 {m0['code']['causal_sha256']}")
    print(
        f"mechjax: {m0['versions']}; pyvene: {p0['versions']}, attention "
        f"{p0.get('attn_implementation')}"
    )
    print(
        f"same weights: un-intervened last-token logits of {len(a)} held-out bases, max |diff| "
        f"{np.abs(a - b).max():.2e} (max |logit| {np.abs(a).max():.1f}), same argmax "
        f"{int((a.argmax(-1) == b.argmax(-1)).sum())}/{len(a)}\n"
    )
    print(
        "| layer | mechjax s: site_acts + train = total | of which compile s | mechjax s "
        "excl. compile | pyvene s | ratio pyvene / mechjax | ratio excl. compile | "
        "loss of step 1, mechjax / pyvene | mean loss of the last 10 steps, mechjax / "
        "pyvene | IIA mechjax | IIA pyvene | CPU pressure mechjax / pyvene |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    tot_m = tot_p = tot_run = 0.0
    for l in s["layers"]:
        m, p = mj[l], pv[l]
        comp = _compile_s(m["compile"])
        run_s = m["total_s"] - comp
        tot_m, tot_p, tot_run = tot_m + m["total_s"], tot_p + p["total_s"], tot_run + run_s
        print(
            f"| {l} | {m['site_acts_s']:.1f} + {m['train_s']:.1f} = {m['total_s']:.1f} | "
            f"{comp:.1f} | {run_s:.1f} | {p['total_s']:.1f} | "
            f"{p['total_s'] / m['total_s']:.2f}x | {p['total_s'] / run_s:.2f}x | "
            f"{m['losses'][0]:.4f} / {p['losses'][0]:.4f} | "
            f"{np.mean(m['losses'][-10:]):.3f} / {np.mean(p['losses'][-10:]):.3f} | "
            f"{m['iia']:.3f} | {p['iia']:.3f} | {pct(m['wall'])} / {pct(p['wall'])} |"
        )
    print(
        f"| sum | {tot_m:.1f} | {tot_m - tot_run:.1f} | {tot_run:.1f} | {tot_p:.1f} | "
        f"{tot_p / tot_m:.2f}x | {tot_p / tot_run:.2f}x | | | | | |"
    )
    n = len(s["layers"])
    print(
        f"\nIIA on {s['n_test']} held-out pairs: +-{1 / np.sqrt(s['n_test']) / 2:.3f} is one "
        "binomial standard error at 0.5"
    )
    for l in s["layers"]:
        m, p = mj[l], pv[l]
        print(
            f"L{l}: mechjax iia() {m['iia_wall']['s']:.1f} s (compile "
            f"{_compile_s(m['iia_wall']['compile']):.1f} s), pyvene IIA {p['iia_wall']['s']:.1f} s"
            f"; site_acts {m['site_acts_s']:.1f} s (compile "
            f"{_compile_s(m['site_acts_compile']):.1f} s); per training step excl. compile: "
            f"mechjax {_per_step(m, s['steps']):.2f} s, pyvene "
            f"{p['train_s'] / s['steps']:.2f} s; orthogonality error mechjax "
            f"{m['orthogonality_error']:.1e}, pyvene {p['orthogonality_error']:.1e}"
            + (
                f"; mechjax second train() call {m['second_train']['s']:.1f} s (XLA compile "
                f"{m['second_train']['compile']['compile']:.1f} s)"
                if "second_train" in m
                else ""
            )
        )
    target = 100
    if s["steps"] < target:
        parts = []
        for l in s["layers"]:
            m, p = mj[l], pv[l]
            extra = target - s["steps"]
            em = m["total_s"] + extra * _per_step(m, s["steps"])
            ep = p["total_s"] + extra * p["train_s"] / s["steps"]
            parts.append(f"L{l} mechjax {em:.0f} s, pyvene {ep:.0f} s: {ep / em:.1f}x")
        print(
            f"\nextrapolated to {target} steps (measured fixed costs + {target} x the measured "
            "per-step times; not measured): " + "; ".join(parts)
        )
    if (work / "search.json").exists():
        se = rd("search.json")
        if se["settings"] == s:
            c = se["compile"]
            print(
                f"\nmechjax `search` over layers {s['layers']}, one call (site_acts of train "
                f"and test pairs, {n} trainings, test IIA): {se['total_s']:.1f} s (compile "
                f"{_compile_s(c):.1f} s, CPU pressure {pct(se['wall'])}); the {n} pyvene "
                f"trainings {tot_p:.1f} s (without IIA): {tot_p / se['total_s']:.2f}x; the {n} "
                f"mechjax train() calls {tot_m:.1f} s (without IIA); IIA per layer "
                + ", ".join(f"L{l} {v:.3f}" for l, v in zip(s["layers"], se["iia"]))
                + f"; initial bases as prepared: {se['init_matches']}"
            )


# ------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--prepare", action="store_true")
    g.add_argument("--side", choices=("mechjax", "pyvene", "search"))
    g.add_argument("--compare", action="store_true")
    g.add_argument("--all", action="store_true", help="prepare, both sides, search, compare")
    ap.add_argument("--layers", default="3,9,15")
    ap.add_argument("--only", default=None, help="run these layers of --layers (default all)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--n-train", type=int, default=256)
    ap.add_argument("--n-test", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--work", default=str(WORK))
    ap.add_argument("--no-search", action="store_true", help="--all: skip mechjax's search")
    ap.add_argument("--repeat-first", action="store_true", help="time a second train() call")
    ap.add_argument(
        "--no-snapshot", action="store_true", help="--all: import mechjax from the work tree"
    )
    args = ap.parse_args(argv)
    if args.prepare:
        prepare(args)
    elif args.side == "mechjax":
        side_mechjax(args)
    elif args.side == "pyvene":
        side_pyvene(args)
    elif args.side == "search":
        side_search(args)
    elif args.compare:
        compare(args)
    else:
        rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--all"]
        rest = [a for a in rest if a not in ("--no-search", "--no-snapshot")]
        steps = [["--prepare"]]
        # one process per (side, layer), the two sides alternating layer by layer, so that
        # a change in the machine's load falls on both
        for i, l in enumerate(_settings(args)["layers"]):
            sides = ["mechjax", "pyvene"] if i % 2 == 0 else ["pyvene", "mechjax"]
            steps += [["--side", side, "--only", str(l)] for side in sides]
        if not args.no_search:
            steps.append(["--side", "search"])
        steps.append(["--compare"])
        env = dict(os.environ)
        if not args.no_snapshot:
            # mechjax may change while the benchmark runs (other work on the tree): every
            # step imports one copy of the package, taken now
            import shutil

            snap = Path(args.work) / "snapshot"
            shutil.rmtree(snap, ignore_errors=True)
            shutil.copytree(
                ROOT / "mechjax", snap / "mechjax", ignore=shutil.ignore_patterns("__pycache__")
            )
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(snap), env.get("PYTHONPATH")]))
            print(f"mechjax snapshot: {snap / 'mechjax'}", flush=True)
        for step in steps:
            print("+", " ".join(["scripts/bench_das.py", *step, *rest]), flush=True)
            subprocess.run([sys.executable, __file__, *step, *rest], check=True, env=env)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
