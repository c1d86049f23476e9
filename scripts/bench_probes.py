"""Benchmark: layer-wise probes (harvest + a logistic probe per layer), mechjax against the
usual way (a TransformerLens cache per batch, one scikit-learn logistic regression per layer).

Issue 19, "Benchmark": harvesting plus per-layer probe training for all layers, goal at
least 5x faster than the usual way with equal accuracies within noise.

Workload (fixed): SmolLM2-135M-Instruct, float32 (the GGUF of `mj.load("smollm2-135m")`
for mechjax; the peers load the float32 HF copy of the same weights in
`out/bench/hf-smollm2`). N = 1024 prompts `"a + b ="` with a, b drawn uniformly from
100..999 (numpy `default_rng(0)`); every prompt is 9 tokens with mechjax's tokenizer
(SmolLM2 splits digits, no BOS), so the last prompt token (` =`) is position 8 in every
library and nothing is padded. Label: whether the units digits carry,
`(a % 10 + b % 10) >= 10` (45.7% of the prompts). Features: `resid_post` of every block
l = 0..29 at the last prompt token, [30, 1024, 576]. Split: `mechjax.probes.split`
(seed 0, 25% validation, stratified by the label: 768 training and 256 validation rows).
Probes: L2 logistic regression on each layer's features standardised with the training
rows' mean and std, C in (0.01, 0.1, 1, 10), C chosen per layer by validation accuracy
(ties: the smaller C).

Libraries (`--lib`):

- `mechjax`: `mechjax.harvest.harvest(model, tokens, <30 resid_post sites>,
  positions=<last index>, batch_size=128)`, `probes.stack_layers`, then ONE
  `probes.logistic(acts, y, cs=..., steps=300)` call: every layer x C fit in one jitted
  program (L-BFGS, one fit after another, each stopping at convergence or 300 steps). The
  first (compile-including) call is reported apart.
- `transformer_lens`: TransformerLens 4.x `TransformerBridge.boot_transformers` around the
  same HF module (raw HF weights, as in `scripts/bench`), `run_with_cache(ids,
  names_filter=<the 30 hook_resid_post names>)` per batch of 128 under `torch.no_grad()`,
  the last-token rows to numpy; then per layer a `StandardScaler` fitted on the training
  rows and one `sklearn.linear_model.LogisticRegression(C=C, max_iter=5000)` (the default
  lbfgs solver) per C, C chosen on the same validation rows with the same tie rule.
  TransformerLens computes the logits too (its `stop_at_layer` cannot skip only the
  unembedding), about 27% more matmul work than the 30 blocks.
- `hf`: plain transformers, the base model `hf.model(ids, output_hidden_states=True)` per
  batch (no unembedding), `hidden_states[l + 1]` for l < 29 and a forward hook on the last
  decoder layer (HF's last hidden state is after the final norm); the same sklearn loop.

Every library reads the token ids, labels, split and C grid from one .npz written by
`--prepare` (mechjax tokenises), so all use exactly the same numbers. Each `--lib` run
times `--repeats` whole runs (harvest, probe fit and their total; median) after a warm-up
(mechjax: the first call, which compiles, reported apart; the torch peers: one batch
through the model and one small sklearn fit), and writes `<lib>.json` (times, per-layer validation accuracy at the
chosen C, the validation accuracy of every (layer, C), the chosen C, the validation
predictions, sklearn's convergence warnings and iterations) and `<lib>_acts.npy` (the
harvested features). `--compare` prints ready-to-paste tables: seconds and ratios against
mechjax, and agreement (max |difference| of the harvested features, of the per-layer
validation accuracies and of the (layer, C) grid, the chosen C, the validation rows the
two libraries' probes classify differently), then the accuracy per layer.

    .venv-bench/bin/python scripts/bench_probes.py --all --repeats 3      # everything

is the same as

    .venv-bench/bin/python scripts/bench_probes.py --prepare
    .venv-bench/bin/python scripts/bench_probes.py --lib mechjax --repeats 3
    .venv-bench/bin/python scripts/bench_probes.py --lib transformer_lens --repeats 3
    .venv-bench/bin/python scripts/bench_probes.py --lib hf --repeats 3
    .venv-bench/bin/python scripts/bench_probes.py --compare

(`--all` writes the inputs when they are missing, `--all --prepare` rewrites them, and it
runs each library in a fresh subprocess of the same interpreter; `.venv-bench`
needs scikit-learn, which `scripts/bench_setup.sh` installs. `--prepare` and `--lib
mechjax` also run in the project's `.venv`.) The float32 HF copy is made by
`scripts/bench`'s `prepare` when it is missing.

Threads: `--threads 1` (the default) runs every library on one thread: torch's intra-op
threads and the BLAS under numpy, scipy and scikit-learn (threadpoolctl) for the peers,
`XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1` for
mechjax. On the 2-core benchmark machine, shared with other jobs, each library's default of
2 threads made it slower, by 1.9x for mechjax's harvest, 2.4x for a batch through the HF
model and up to 9x for the sklearn loop (threads spinning against the other jobs).
`--threads 0` keeps every library's defaults (for a quiet machine). `--steps` sets
mechjax's L-BFGS steps (default 300, the library's default); `--n`, `--batch-size` (with
`--prepare`) and `--out DIR` (default `out/bench-probes/`) change the workload.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

T_START = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "bench-probes"
HF_DIR = ROOT / "out" / "bench" / "hf-smollm2"

MODEL = "smollm2-135m"
HF_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
N_PROMPTS, SEED, BATCH = 1024, 0, 128
CS = (0.01, 0.1, 1.0, 10.0)
VAL_FRACTION = 0.25
STEPS = 300  # mechjax's L-BFGS steps
MAX_ITER = 5000  # sklearn's lbfgs iterations (default 100 stops short at C = 10)
LIBS = ("mechjax", "transformer_lens", "hf")
LIB_NAMES = {
    "mechjax": "mechjax (`harvest` + one `probes.logistic`)",
    "transformer_lens": "TransformerLens `run_with_cache` + sklearn per layer",
    "hf": "HF `output_hidden_states` + sklearn per layer",
}
LABEL = "carry out of the units digit, (a % 10 + b % 10) >= 10"


def resid_sites(n_layers: int) -> list[str]:
    return [f"blocks.{l}.hook_resid_post" for l in range(n_layers)]


# ------------------------------------------------------------------------- inputs


def problems(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """`n` prompts "a + b =" (a, b uniform in 100..999) and their labels (units carry)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(100, 1000, n)
    b = rng.integers(100, 1000, n)
    texts = [f"{x} + {y} =" for x, y in zip(a, b)]
    labels = ((a % 10 + b % 10) >= 10).astype(np.int32)
    return a, b, texts, labels


def build_inputs(encode, n: int = N_PROMPTS, batch_size: int = BATCH, seed: int = SEED) -> dict:
    """The shared inputs, tokenised with `encode` (text -> ids); every prompt must have the
    same number of tokens, so the last prompt token sits at one index in every library."""
    from mechjax import probes

    a, b, texts, labels = problems(n, seed)
    rows = [list(encode(t)) for t in texts]
    lengths = sorted({len(r) for r in rows})
    if len(lengths) != 1:
        raise SystemExit(
            f"the prompts tokenise to {lengths} tokens; the benchmark needs one length"
        )
    train, val = probes.split(n, val_fraction=VAL_FRACTION, seed=seed, stratify=labels)
    return {
        "tokens": np.asarray(rows, np.int32),
        "a": a.astype(np.int32),
        "b": b.astype(np.int32),
        "labels": labels,
        "train_idx": train,
        "val_idx": val,
        "cs": np.asarray(sorted(CS), np.float64),
        "last": np.int32(lengths[0] - 1),
        "batch_size": np.int32(batch_size),
        "seed": np.int32(seed),
        "val_fraction": np.float64(VAL_FRACTION),
    }


def prepare(out: Path, n: int, batch_size: int, encode=None) -> None:
    """Write the shared inputs; mechjax's tokenizer of SmolLM2 unless `encode` is given."""
    if encode is None:
        import mechjax as mj

        encode = mj.load(MODEL).tokenizer.encode
    inp = build_inputs(encode, n, batch_size)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "inputs.npz", **inp)
    pos = float(inp["labels"].mean())
    print(
        f"wrote {out / 'inputs.npz'}: {n} prompts of {inp['tokens'].shape[1]} tokens, "
        f"label = {LABEL} ({pos:.1%} positive), {inp['train_idx'].size} train / "
        f"{inp['val_idx'].size} validation rows"
    )


def ensure_hf_dir() -> None:
    """The float32 HF copy the torch peers load, made by scripts/bench if missing."""
    if (HF_DIR / "model.safetensors").exists():
        return
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench import common

    HF_DIR.parent.mkdir(parents=True, exist_ok=True)
    common.prepare(HF_DIR.parent)


def load_inputs(out: Path) -> dict:
    path = out / "inputs.npz"
    if not path.exists():
        sys.exit(f"{path} missing: run `{Path(__file__).name} --prepare` first")
    z = np.load(path)
    return {k: z[k] for k in z.files}


def _timed(fn):
    t0 = time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t0


# ------------------------------------------------------------------------- mechjax


def mechjax_harvest(model, inp: dict) -> np.ndarray:
    """[n_layers, n, d_model] resid_post features at the last prompt token."""
    from mechjax import harvest, probes

    sites = resid_sites(model.config.n_layers)
    tokens = inp["tokens"]
    got = harvest.harvest(
        model,
        tokens,
        sites,
        positions=np.full(tokens.shape[0], int(inp["last"]), np.int32),
        batch_size=int(inp["batch_size"]),
        progress=False,
    )
    return probes.stack_layers(got, sites)


def mechjax_fit(acts: np.ndarray, inp: dict, steps: int = STEPS):
    from mechjax import probes

    res = probes.logistic(
        acts,
        inp["labels"],
        cs=tuple(float(c) for c in inp["cs"]),
        steps=steps,
        val_fraction=float(inp["val_fraction"]),
        seed=int(inp["seed"]),
    )
    # the peers use the stored split: it must be the one logistic drew
    if not (
        np.array_equal(res.train_idx, inp["train_idx"])
        and np.array_equal(res.val_idx, inp["val_idx"])
    ):
        raise SystemExit("probes.logistic drew another split than the one in inputs.npz")
    return res


def mechjax_summary(res, acts: np.ndarray, inp: dict) -> dict:
    val = inp["val_idx"]
    preds = np.stack([res.predict(acts[l, val], l) for l in range(acts.shape[0])])
    return {
        "val_accuracy": res.val["accuracy"].tolist(),
        "train_accuracy": res.train["accuracy"].tolist(),
        "val_auroc": res.val["auroc"].tolist(),
        "val_grid": np.asarray(res.val_grid).tolist(),
        "chosen_c": np.asarray(res.reg).tolist(),
        "val_pred": preds.astype(int).tolist(),
        "best_layer": int(res.best_layer),
    }


def run_mechjax(inp: dict, repeats: int, model=None, steps: int = STEPS) -> tuple[dict, np.ndarray]:
    import os

    import jax

    import mechjax as mj

    if model is None:
        model = mj.load(MODEL)
    acts, h_first = _timed(lambda: mechjax_harvest(model, inp))
    res, f_first = _timed(lambda: mechjax_fit(acts, inp, steps))
    times = []
    for _ in range(repeats):
        acts, h = _timed(lambda: mechjax_harvest(model, inp))
        res, f = _timed(lambda: mechjax_fit(acts, inp, steps))
        times.append({"harvest": h, "fit": f, "total": h + f})
    r = {
        "first_call": {"harvest": h_first, "fit": f_first, "total": h_first + f_first},
        "times": times,
        **mechjax_summary(res, acts, inp),
        "solver": f"optax L-BFGS, at most {steps} steps, layers x C one fit after another",
        "versions": {
            "jax": jax.__version__,
            "devices": str(jax.devices()),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        },
    }
    return r, acts


# ------------------------------------------------------------------------- the usual way


def sklearn_probes(acts: np.ndarray, inp: dict, max_iter: int = MAX_ITER) -> dict:
    """Per layer a StandardScaler on the training rows and one LogisticRegression per C
    (lbfgs), C chosen by validation accuracy (ties: the smaller C, as mechjax)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    y, tr, va, cs = inp["labels"], inp["train_idx"], inp["val_idx"], inp["cs"]
    n_layers = acts.shape[0]
    grid = np.zeros((n_layers, len(cs)))
    n_iter = np.zeros((n_layers, len(cs)), np.int64)
    out = {k: [] for k in ("val_accuracy", "train_accuracy", "val_auroc", "chosen_c", "val_pred")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        for l in range(n_layers):
            scaler = StandardScaler().fit(acts[l, tr])
            z_tr, z_va = scaler.transform(acts[l, tr]), scaler.transform(acts[l, va])
            best = None
            for j, c in enumerate(cs):
                clf = LogisticRegression(C=float(c), max_iter=max_iter).fit(z_tr, y[tr])
                grid[l, j] = clf.score(z_va, y[va])
                n_iter[l, j] = int(np.max(clf.n_iter_))
                if best is None or grid[l, j] > best[0]:  # strictly better: ties keep smaller C
                    best = (grid[l, j], c, clf)
            _, c, clf = best
            out["val_accuracy"].append(float(best[0]))
            out["train_accuracy"].append(float(clf.score(z_tr, y[tr])))
            out["val_auroc"].append(float(roc_auc_score(y[va], clf.decision_function(z_va))))
            out["chosen_c"].append(float(c))
            out["val_pred"].append(clf.predict(z_va).astype(int).tolist())
    warned = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    out["val_grid"] = grid.tolist()
    out["best_layer"] = int(np.argmax(out["val_accuracy"]))
    out["n_iter"] = n_iter.tolist()
    out["convergence_warnings"] = len(warned)
    out["convergence_messages"] = sorted({str(w.message).split("\n")[0] for w in warned})
    return out


XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def limit_xla_threads(threads: int) -> None:
    """One XLA CPU thread (`threads == 1`; before jax is imported), else XLA's defaults."""
    import os

    if threads == 1 and XLA_ONE_THREAD not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + XLA_ONE_THREAD).strip()


def limit_threads(threads: int) -> dict:
    """The peers' thread counts: torch's intra-op threads and the BLAS under numpy, scipy
    and scikit-learn (threadpoolctl); 0 keeps the libraries' defaults."""
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    if threads:
        torch.set_num_threads(threads)
        threadpool_limits(threads)
    blas = {i["internal_api"]: i["num_threads"] for i in threadpool_info()}
    return {"torch_threads": torch.get_num_threads(), "blas_threads": blas}


def _torch_model():
    import torch
    import transformers

    torch.manual_seed(0)
    if not (HF_DIR / "model.safetensors").exists():
        sys.exit(f"{HF_DIR} missing: run `{Path(__file__).name} --prepare` in .venv-bench")
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(HF_DIR), dtype=torch.float32)
    hf.eval().requires_grad_(False)
    tok = transformers.AutoTokenizer.from_pretrained(str(HF_DIR))
    return torch, transformers, hf, tok


def torch_harvester(lib: str):
    """(harvest(tokens [n, pos] numpy, last, batch_size) -> [L, n, d] numpy, versions)."""
    from importlib.metadata import version

    torch, transformers, hf, tok = _torch_model()
    L, d = hf.config.num_hidden_layers, hf.config.hidden_size
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    if lib == "transformer_lens":
        from transformer_lens.model_bridge import TransformerBridge

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            br = TransformerBridge.boot_transformers(
                HF_NAME, hf_model=hf, tokenizer=tok, device="cpu"
            )
        br.eval()
        versions["transformer_lens"] = version("transformer-lens")
        names = resid_sites(L)

        def batch(ids, last):
            _, cache = br.run_with_cache(ids, names_filter=names)
            return [cache[name][:, last].numpy() for name in names]

    else:
        layers = hf.model.layers
        box = {}

        def keep(module, args, output):
            box["post"] = output[0] if isinstance(output, tuple) else output

        layers[L - 1].register_forward_hook(keep)  # hidden_states[-1] is after the final norm

        def batch(ids, last):
            hs = hf.model(input_ids=ids, output_hidden_states=True).hidden_states
            return [hs[l + 1][:, last].numpy() for l in range(L - 1)] + [
                box.pop("post")[:, last].numpy()
            ]

    def harvest(tokens: np.ndarray, last: int, batch_size: int) -> np.ndarray:
        n = tokens.shape[0]
        acts = np.empty((L, n, d), np.float32)
        with torch.no_grad():
            for s in range(0, n, batch_size):
                ids = torch.as_tensor(tokens[s : s + batch_size]).long()
                for l, a in enumerate(batch(ids, last)):
                    acts[l, s : s + batch_size] = a
        return acts

    return harvest, versions


def run_peer(lib: str, inp: dict, repeats: int, threads: int) -> tuple[dict, np.ndarray]:
    import sklearn
    import sklearn.exceptions
    import sklearn.metrics
    import sklearn.preprocessing  # noqa: F401  (imported before the timed runs)
    from sklearn.linear_model import LogisticRegression

    threads_used = limit_threads(threads)
    harvest, versions = torch_harvester(lib)
    versions.update(sklearn=sklearn.__version__, **threads_used)
    tokens, last, bs = inp["tokens"], int(inp["last"]), int(inp["batch_size"])
    # warm-up: one batch through the model (allocator, kernels), one small sklearn fit and
    # the imports of sklearn_probes (its first call would otherwise pay them)
    warm = harvest(tokens[:bs], last, bs)[0]
    LogisticRegression(max_iter=MAX_ITER).fit(warm, np.arange(warm.shape[0]) % 2)
    times, acts, fit = [], None, None
    for _ in range(repeats):
        acts, h = _timed(lambda: harvest(tokens, last, bs))
        fit, f = _timed(lambda: sklearn_probes(acts, inp))
        times.append({"harvest": h, "fit": f, "total": h + f})
    assert fit is not None and acts is not None
    r = {
        "times": times,
        **fit,
        "solver": f"sklearn LogisticRegression(lbfgs, max_iter={MAX_ITER}) per layer x C",
        "versions": versions,
    }
    return r, acts


# ------------------------------------------------------------------------- compare


def medians(r: dict) -> dict:
    return {k: statistics.median(t[k] for t in r["times"]) for k in ("harvest", "fit", "total")}


def noise(acc: np.ndarray, n_val: int) -> np.ndarray:
    """Binomial standard error of a validation accuracy."""
    return np.sqrt(np.clip(acc * (1 - acc), 0, None) / n_val)


def agreement(ref: dict, r: dict, ref_acts: np.ndarray | None, acts: np.ndarray | None) -> dict:
    a_ref, a = np.asarray(ref["val_accuracy"]), np.asarray(r["val_accuracy"])
    n_val = len(ref["val_pred"][0])
    diff = np.abs(a - a_ref)
    flips = (np.asarray(ref["val_pred"]) != np.asarray(r["val_pred"])).sum(1)
    out = {
        "acc_diff": float(diff.max()),
        "acc_diff_layer": int(diff.argmax()),
        "grid_diff": float(np.abs(np.asarray(r["val_grid"]) - np.asarray(ref["val_grid"])).max()),
        "same_c": int(np.sum(np.asarray(r["chosen_c"]) == np.asarray(ref["chosen_c"]))),
        "n_layers": int(a.size),
        "flips_max": int(flips.max()),
        "n_val": n_val,
        # within noise: every layer's difference inside 1.96 binomial standard errors
        "within_noise": bool(np.all(diff <= 1.96 * noise(a_ref, n_val) + 1e-9)),
    }
    if ref_acts is not None and acts is not None:
        d = np.abs(acts.astype(np.float64) - ref_acts)
        out["act_diff"] = float(d.max())
        out["act_rel"] = float(d.max() / np.abs(ref_acts).max())
    return out


def _ratio(x: float) -> str:
    return f"{x:.2g}x" if x < 1 else f"{x:.1f}x"


def compare(out: Path) -> None:
    res, acts = {}, {}
    for lib in LIBS:
        p = out / f"{lib}.json"
        if p.exists():
            res[lib] = json.loads(p.read_text())
            a = out / f"{lib}_acts.npy"
            acts[lib] = np.load(a) if a.exists() else None
    if "mechjax" not in res:
        sys.exit(f"{out / 'mechjax.json'} missing")
    ref, ref_acts = res["mechjax"], acts["mechjax"]
    inp = load_inputs(out)
    m_ref = medians(ref)
    n, n_tok = inp["tokens"].shape
    L = len(ref["val_accuracy"])
    print(
        f"Layer-wise probes: {n} prompts 'a + b =' ({n_tok} tokens), label = {LABEL}; "
        f"resid_post of {L} layers at the last token; {inp['train_idx'].size} train / "
        f"{inp['val_idx'].size} validation rows; C in {inp['cs'].tolist()}; batch "
        f"{int(inp['batch_size'])}; median of {len(ref['times'])} runs\n"
    )
    print(
        "| library | harvest s | probe fit s | total s | ratio lib / mechjax (harvest, fit, total) |"
    )
    print("|---|---|---|---|---|")
    for lib, r in res.items():
        m = medians(r)
        cells = [f"{m[k]:.2f}" for k in ("harvest", "fit", "total")]
        if lib == "mechjax":
            f = r["first_call"]
            cells = [f"{m[k]:.2f} (first {f[k]:.1f})" for k in ("harvest", "fit", "total")]
            ratio = "1"
        else:
            ratio = ", ".join(_ratio(m[k] / m_ref[k]) for k in ("harvest", "fit", "total"))
            ratio = ratio.rsplit(", ", 1)
            ratio = f"{ratio[0]}, **{ratio[1]}**"
        print(f"| {LIB_NAMES[lib]} | {' | '.join(cells)} | {ratio} |")
    print()
    print(
        "| library vs mechjax | max abs diff of features (rel) | max abs diff of val accuracy "
        "(layer) | max abs diff over (layer, C) | same chosen C | most val rows classified "
        "differently | within noise | sklearn convergence warnings |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for lib, r in res.items():
        if lib == "mechjax":
            continue
        g = agreement(ref, r, ref_acts, acts[lib])
        feat = f"{g['act_diff']:.2g} ({g['act_rel']:.1g})" if "act_diff" in g else "-"
        print(
            f"| {LIB_NAMES[lib]} | {feat} | {g['acc_diff']:.4f} ({g['acc_diff_layer']}) | "
            f"{g['grid_diff']:.4f} | {g['same_c']}/{g['n_layers']} | "
            f"{g['flips_max']}/{g['n_val']} | {'yes' if g['within_noise'] else 'no'} | "
            f"{r.get('convergence_warnings', '-')} (max {np.max(r['n_iter'])} iterations) |"
        )
    n_val = inp["val_idx"].size
    print(
        "\nRatio: the library's median over mechjax's (above 1: mechjax is faster). "
        f"One validation row is {1 / n_val:.4f} of accuracy; the binomial standard error "
        f"at 50% is {0.5 / np.sqrt(n_val):.3f}. 'Within noise': every layer's difference "
        "within 1.96 standard errors of mechjax's accuracy.\n"
    )
    libs = list(res)
    print("| layer | " + " | ".join(f"{lib} val acc (C)" for lib in libs) + " |")
    print("|---|" + "---|" * len(libs))
    for l in range(L):
        cells = [f"{res[lib]['val_accuracy'][l]:.3f} ({res[lib]['chosen_c'][l]:g})" for lib in libs]
        print(f"| {l} | " + " | ".join(cells) + " |")
    print()
    for lib, r in res.items():
        b = r["best_layer"]
        print(
            f"{lib}: best layer {b} (val accuracy {r['val_accuracy'][b]:.3f}, AUROC "
            f"{r['val_auroc'][b]:.3f}); in-script total {r['process_seconds']:.1f} s (model "
            f"loading included); {r['solver']}; {r['versions']}"
        )
        for msg in r.get("convergence_messages", []):
            print(f"  warning: {msg}")


# ------------------------------------------------------------------------- main


def run_all(a) -> None:
    ensure_hf_dir()
    if a.prepare or not (a.out / "inputs.npz").exists():
        prepare(a.out, a.n, a.batch_size)
    for lib in LIBS:
        cmd = [sys.executable, __file__, "--lib", lib, "--repeats", str(a.repeats)]
        cmd += ["--out", str(a.out), "--threads", str(a.threads)]
        cmd += ["--steps", str(a.steps)]
        print("+", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)
    compare(a.out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepare", action="store_true", help="write the shared inputs (mechjax)")
    ap.add_argument("--lib", choices=LIBS)
    ap.add_argument("--compare", action="store_true", help="print the tables from the JSONs")
    ap.add_argument("--all", action="store_true", help="prepare, every --lib, then compare")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs (median)")
    ap.add_argument("--n", type=int, default=N_PROMPTS, help="prompts (with --prepare)")
    ap.add_argument("--batch-size", type=int, default=BATCH, help="with --prepare")
    ap.add_argument(
        "--threads",
        type=int,
        choices=(0, 1),
        default=1,
        help="1: every library on one thread (torch, BLAS, XLA); 0: their defaults",
    )
    ap.add_argument("--steps", type=int, default=STEPS, help="mechjax's L-BFGS steps")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    if a.all:
        run_all(a)
        return
    if a.prepare:
        prepare(a.out, a.n, a.batch_size)
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError:
            print("torch/transformers not installed here: the HF copy is left to .venv-bench")
        else:
            ensure_hf_dir()
    if a.lib:
        inp = load_inputs(a.out)
        if a.lib == "mechjax":
            limit_xla_threads(a.threads)
            r, acts = run_mechjax(inp, a.repeats, steps=a.steps)
        else:
            r, acts = run_peer(a.lib, inp, a.repeats, a.threads)
        r["lib"] = a.lib
        r["process_seconds"] = time.perf_counter() - T_START
        np.save(a.out / f"{a.lib}_acts.npy", acts)
        (a.out / f"{a.lib}.json").write_text(json.dumps(r, indent=1))
        m = medians(r)
        print(
            f"{a.lib}: harvest {m['harvest']:.2f} s, fit {m['fit']:.2f} s, total "
            f"{m['total']:.2f} s"
            + (f" (first call {r['first_call']['total']:.1f} s)" if "first_call" in r else "")
            + f"; best layer {r['best_layer']} ({r['val_accuracy'][r['best_layer']]:.3f})"
            + f"; in-script total {r['process_seconds']:.1f} s"
        )
    if a.compare:
        compare(a.out)
    if not (a.prepare or a.lib or a.compare):
        ap.error("give --all, --prepare, --lib or --compare")


if __name__ == "__main__":
    main()
