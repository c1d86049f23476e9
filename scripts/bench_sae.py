"""Benchmark: training a TopK SAE on SmolLM2 with the model forward included, mechjax
against SAELens (and EleutherAI sparsify where it runs).

Same work on every side: SmolLM2-135M-Instruct's weights (the GGUF that `mj.load` reads;
its float32 HF copy for the torch libraries), the residual stream after block `--layer`
(mechjax `blocks.L.hook_resid_post` = HF `model.layers.L`'s output), the same token rows
(offline corpus, 128-token chunks, the first position of each left out on both sides),
the same SAE (TopK, `--d-sae` latents, `--k`), batch (`--batch` activations), Adam with
the same `--lr`, no warmup or decay, the same number of steps. Measured per side, each in
its own process (model loading not timed, compilation timed and reported apart):
training tokens per second including the model forward, the final FVU of the trained SAE
on held-out activations (computed by mechjax for every side, after loading the peer's
saved SAE with `mechjax.sae.load`), peak resident memory, and the achieved FLOP/s of the
work each side does as a fraction of a measured float32 matmul peak on this machine.

What differs by design: mechjax runs the model only up to the site and decodes the k
latents sparsely, inside one compiled step; SAELens runs the whole HF model (it cannot
stop a HF model early) through its activation buffer and a dense decoder. Those are the
libraries as they are; the FLOP count of each side is its own work.

    .venv-bench/bin/python scripts/bench_sae.py --all           # prepare, both sides, table
    .venv-bench/bin/python scripts/bench_sae.py --check-format  # SAELens reads our files

Options: `--layer 15 --d-sae 2304 --k 32 --batch 1024 --steps 20 --lr 7e-4 --threads 2
--work out/bench/sae`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HF_DIR = ROOT / "out" / "bench" / "hf-smollm2"
SIDES = ("mechjax", "saelens", "sparsify")


def _args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--d-sae", type=int, default=2304)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1024, help="activations per step")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=7e-4)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--work", default=str(ROOT / "out" / "bench" / "sae"))
    ap.add_argument("--prepare", action="store_true")
    ap.add_argument("--side", choices=SIDES)
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--check-format", action="store_true")
    ap.add_argument("--table", action="store_true", help="print the table of the sides run")
    return ap.parse_args(argv)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pressure() -> float | None:
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return float(line.split("avg10=")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None


# ------------------------------------------------------------------------------ prepare


def prepare(a) -> None:
    import numpy as np

    import mechjax as mj
    from mechjax import corpus
    from mechjax import sae as S

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    model = mj.load("smollm2-135m")
    n_train = -(-a.steps * a.batch // (a.ctx - 1)) + 16
    rows = corpus.token_chunks(model, ctx_len=a.ctx, n_chunks=n_train + 32, seed=0)
    site = mj.act_name("resid_post", a.layer)
    held = S.ActivationStore.harvest(model, rows[n_train:], site, batch_size=8, progress=False)
    np.savez(work / "data.npz", train=rows[:n_train], eval_acts=held.x_shards[0])
    if not (HF_DIR / "model.safetensors").exists():
        sys.path.insert(0, str(ROOT / "scripts"))
        from bench_das import _hf_copy

        _hf_copy(_gguf_path())
    if not (HF_DIR / "tokenizer.json").exists():
        import transformers

        g = _gguf_path()
        transformers.AutoTokenizer.from_pretrained(str(g.parent), gguf_file=g.name).save_pretrained(
            str(HF_DIR)
        )
    print(f"prepared {work / 'data.npz'}: {n_train} training rows, {held.n} held-out activations")


def _gguf_path() -> Path:
    from mechjax.io import registry

    return Path(registry.resolve("smollm2-135m"))


# --------------------------------------------------------------------------------- sides


def _flops_model(cfg, layers: int, ctx: int) -> float:
    """Forward FLOPs per token of `layers` Llama blocks (matmuls and attention)."""
    d, h, kv, dh, m = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_mlp
    per_layer = (
        2 * (d * h * dh + 2 * d * kv * dh + h * dh * d + 3 * d * m) + 2 * 2 * h * dh * ctx / 2
    )
    return layers * per_layer


def per_token_flops(side: str, a) -> float:
    """FLOPs per training token of each side's own work. mechjax: blocks 0..L, the
    encoder forward and its weight gradient, the sparse decoder (k rows) both ways.
    SAELens: blocks 0..L too (its HF wrapper stops the forward at the hooked layer), a
    dense encoder and decoder (forward, weight gradients, the decoder's input gradient).
    sparsify: the whole model (its trainer runs the full forward), encoder as mechjax's,
    sparse decoder."""
    import mechjax as mj

    L = mj.load("smollm2-135m").config
    enc = 4 * L.d_model * a.d_sae
    if side == "mechjax":
        return _flops_model(L, a.layer + 1, a.ctx) + enc + 4 * a.k * L.d_model
    if side == "saelens":
        return _flops_model(L, a.layer + 1, a.ctx) + 10 * L.d_model * a.d_sae
    full = _flops_model(L, L.n_layers, a.ctx) + 2 * L.d_model * L.d_vocab
    return full + enc + 4 * a.k * L.d_model


def _matmul_peak_jax() -> float:
    import jax
    import jax.numpy as jnp

    a = jnp.ones((2048, 2048), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = max(best, 2 * 2048**3 / (time.perf_counter() - t))
    return best


def _matmul_peak_torch() -> float:
    import torch

    a = torch.ones(2048, 2048)
    best = 0.0
    for _ in range(6):
        t = time.perf_counter()
        a @ a
        best = max(best, 2 * 2048**3 / (time.perf_counter() - t))
    return best


def side_mechjax(a, data) -> dict:
    import numpy as np

    import mechjax as mj
    from mechjax import sae as S
    from mechjax.progress import CompileClock

    model = mj.load("smollm2-135m")
    site = mj.act_name("resid_post", a.layer)
    src = S.TokenSource(model, data["train"], site)
    cfg = S.SAETrainConfig(d_sae=a.d_sae, k=a.k, steps=a.steps, batch_size=a.batch, lr=a.lr,
                           warmup=0, decay="none", aux_k=0)  # fmt: skip
    rows = src.seqs_for(a.batch) * src.per_seq
    p0 = _pressure()
    with CompileClock() as clock:
        t = time.perf_counter()
        res = S.train_sae(src, cfg, progress=False)
        jax_block = res.sae.W_enc.block_until_ready()  # noqa: F841
        secs = time.perf_counter() - t
    out = Path(a.work) / "mechjax_sae"
    S.save(res.sae, out)
    flops = (
        a.steps
        * rows
        * (_flops_model(model.config, a.layer + 1, a.ctx) + 4 * 576 * a.d_sae + 4 * a.k * 576)
    )
    run_s = secs - clock.seconds
    return {"seconds": secs, "compile_seconds": clock.seconds, "tokens": a.steps * rows,
            "tokens_per_s": a.steps * rows / run_s, "flops": flops, "flops_per_s": flops / run_s,
            "matmul_peak": _matmul_peak_jax(), "sae_dir": str(out), "pressure": [p0, _pressure()],
            "versions": {"jax": __import__("jax").__version__}, "first_fvu": res.history[0]["fvu"],
            "rows_per_step": rows, "np": np.__version__}  # fmt: skip


def side_saelens(a, data) -> dict:
    import datasets
    import torch
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner
    from sae_lens import __version__ as sl_version
    from sae_lens.config import LoggingConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAEConfig

    torch.set_num_threads(a.threads)
    rows = a.batch
    cfg = LanguageModelSAERunnerConfig(
        sae=TopKTrainingSAEConfig(d_in=576, d_sae=a.d_sae, k=a.k, rescale_acts_by_decoder_norm=False,
                                  apply_b_dec_to_input=True),
        model_name=str(HF_DIR), model_class_name="AutoModelForCausalLM",
        hook_name=f"model.layers.{a.layer}", dataset_path="local", is_dataset_tokenized=True,
        streaming=False, context_size=a.ctx, prepend_bos=False, seqpos_slice=(1, None),
        training_tokens=a.steps * rows, train_batch_size_tokens=rows, n_batches_in_buffer=20,
        store_batch_size_prompts=8, lr=a.lr, lr_warm_up_steps=0, device="cpu",
        logger=LoggingConfig(log_to_wandb=False), n_checkpoints=0,
        checkpoint_path=str(Path(a.work) / "saelens_ckpt"), output_path=None, verbose=False,
    )  # fmt: skip
    ds = datasets.Dataset.from_dict({"input_ids": data["train"].tolist()})
    runner = LanguageModelSAETrainingRunner(cfg, override_dataset=ds)
    p0 = _pressure()
    t = time.perf_counter()
    sae = runner.run()
    secs = time.perf_counter() - t
    out = Path(a.work) / "saelens_sae"
    sae.save_inference_model(str(out)) if hasattr(sae, "save_inference_model") else sae.save_model(
        str(out)
    )
    flops = a.steps * rows * per_token_flops("saelens", a)
    return {"seconds": secs, "compile_seconds": 0.0, "tokens": a.steps * rows, "tokens_per_s": a.steps * rows / secs,
            "flops": flops, "flops_per_s": flops / secs, "matmul_peak": _matmul_peak_torch(), "sae_dir": str(out),
            "pressure": [p0, _pressure()], "versions": {"sae_lens": sl_version, "torch": torch.__version__}}  # fmt: skip


def side_sparsify(a, data) -> dict:
    """EleutherAI sparsify's Trainer on the same HF model, rows, width, k, lr and steps.
    It trains on every position (it excludes token ids, not positions) and decodes its k
    latents sparsely; its SAE is converted to a mechjax TopK SAE for the FVU."""
    import datasets
    import jax.numpy as jnp
    import numpy as np
    import torch
    import transformers
    from sparsify import SparseCoderConfig, TrainConfig, Trainer
    from sparsify import __version__ as sp_version

    from mechjax import sae as S

    torch.set_num_threads(a.threads)
    seqs = max(1, round(a.batch / a.ctx))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(HF_DIR), dtype=torch.float32).eval()
    ds = datasets.Dataset.from_dict({"input_ids": data["train"][: a.steps * seqs].tolist()})
    ds = ds.with_format("torch")
    cfg = TrainConfig(
        SparseCoderConfig(num_latents=a.d_sae, k=a.k), batch_size=seqs, loss_fn="fvu",
        optimizer="adam", lr=a.lr, lr_warmup_steps=0, auxk_alpha=0.0,
        hookpoints=[f"layers.{a.layer}"], log_to_wandb=False,
        save_dir=str(Path(a.work) / "sparsify_ckpt"), save_every=10**9,
    )  # fmt: skip
    trainer = Trainer(cfg, ds, hf)
    p0 = _pressure()
    t = time.perf_counter()
    trainer.fit()
    secs = time.perf_counter() - t
    sc = next(iter(trainer.saes.values()))
    get = lambda p: jnp.asarray(p.detach().numpy().astype(np.float32))
    sae = S.SAE(W_enc=get(sc.encoder.weight).T, b_enc=get(sc.encoder.bias), W_dec=get(sc.W_dec),
                b_dec=get(sc.b_dec), arch="topk", k=a.k, apply_b_dec_to_input=True)  # fmt: skip
    out = Path(a.work) / "sparsify_sae"
    S.save(sae, out)
    rows = a.steps * seqs * a.ctx
    flops = rows * per_token_flops("sparsify", a)
    return {"seconds": secs, "compile_seconds": 0.0, "tokens": rows, "tokens_per_s": rows / secs,
            "flops": flops, "flops_per_s": flops / secs, "matmul_peak": _matmul_peak_torch(), "sae_dir": str(out),
            "pressure": [p0, _pressure()], "versions": {"sparsify": sp_version, "torch": torch.__version__}}  # fmt: skip


def run_side(a) -> None:
    import numpy as np

    data = dict(np.load(Path(a.work) / "data.npz"))
    fn = {"mechjax": side_mechjax, "saelens": side_saelens, "sparsify": side_sparsify}[a.side]
    try:
        res = fn(a, data)
        import jax.numpy as jnp

        from mechjax import sae as S

        sae = S.load(res["sae_dir"])
        r = S.reconstruction(sae, jnp.asarray(data["eval_acts"]))
        res["final_fvu"] = float(r.fvu)
        res["l0"] = float(r.l0)
    except Exception as e:  # a peer that cannot run here is reported, not hidden
        res = {"error": f"{type(e).__name__}: {e}"[:500]}
    res["peak_rss_mb"] = _peak_mb()
    (Path(a.work) / f"{a.side}.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res))


# ------------------------------------------------------------------------- format check


def check_format(a) -> dict:
    """SAELens reads a file mechjax wrote and computes the same latents (and back)."""
    import jax
    import numpy as np
    import torch
    from sae_lens import SAE as SLSAE

    from mechjax import sae as S

    out = {}
    x = np.random.RandomState(0).normal(size=(64, 96)).astype(np.float32)
    for arch in ("relu", "topk", "jumprelu", "gated", "batchtopk", "abstopk"):
        sae = S.init_sae(jax.random.PRNGKey(1), 96, 384, arch, k=8)
        rng = np.random.RandomState(2)
        sae = sae.replace(b_enc=jax.numpy.asarray(rng.normal(size=384).astype(np.float32) * 0.1),
                          b_dec=jax.numpy.asarray(rng.normal(size=96).astype(np.float32)))  # fmt: skip
        if sae.threshold is not None:
            sae = sae.replace(
                threshold=jax.numpy.asarray(np.abs(rng.normal(size=384)).astype(np.float32) * 0.1)
            )
        d = Path(a.work) / "format" / arch
        S.save(sae, d)
        try:
            theirs = SLSAE.load_from_disk(str(d))
            with torch.no_grad():
                f_sl = theirs.encode(torch.from_numpy(x)).numpy()
                r_sl = theirs.decode(torch.from_numpy(f_sl)).numpy()
            f_mj = np.asarray(sae.encode(jax.numpy.asarray(x)))
            r_mj = np.asarray(sae.decode(jax.numpy.asarray(f_mj)))
            out[arch] = {"saelens_class": type(theirs).__name__, "latents_max_diff": float(np.abs(f_sl - f_mj).max()),
                         "same_active": bool(((f_sl != 0) == (f_mj != 0)).all()),
                         "recon_max_diff": float(np.abs(r_sl - r_mj).max())}  # fmt: skip
            back = Path(a.work) / "format" / f"{arch}_saelens"
            theirs.save_model(str(back))
            again = S.load(back)
            out[arch]["reloaded_latents_max_diff"] = float(
                np.abs(np.asarray(again.encode(jax.numpy.asarray(x))) - f_mj).max()
            )
        except Exception as e:
            out[arch] = {"error": f"{type(e).__name__}: {e}"[:300]}
    print(json.dumps(out, indent=1))
    (Path(a.work) / "format.json").write_text(json.dumps(out, indent=1))
    return out


# -------------------------------------------------------------------------------- --all


def _table(a) -> str:
    work = Path(a.work)
    res = {
        s: json.loads((work / f"{s}.json").read_text())
        for s in SIDES
        if (work / f"{s}.json").exists()
    }
    mj = res.get("mechjax", {})
    lines = ["| side | tokens/s (incl. model) | mechjax / side | final FVU | L0 | peak RSS MB | achieved GFLOP/s | of matmul peak | compile s |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for s, r in res.items():
        if "error" in r:
            lines.append(
                f"| {s} | not run: {r['error'][:160]} | | | | {r['peak_rss_mb']:.0f} | | | |"
            )
            continue
        ratio = mj["tokens_per_s"] / r["tokens_per_s"] if "tokens_per_s" in mj else float("nan")
        r = {**r, "flops_per_s": r["tokens_per_s"] * per_token_flops(s, a)}  # the current count
        lines.append(
            f"| {s} | {r['tokens_per_s']:.0f} | {ratio:.2f} | {r['final_fvu']:.3f} | {r['l0']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['flops_per_s'] / 1e9:.1f} | {r['flops_per_s'] / r['matmul_peak']:.2f} "
            f"(peak {r['matmul_peak'] / 1e9:.0f}) | {r['compile_seconds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    a = _args(argv)
    if a.prepare:
        prepare(a)
    if a.side:
        run_side(a)
    if a.check_format:
        check_format(a)
    if a.table:
        print(_table(a))
    if a.all:
        base = [sys.executable, __file__, "--layer", str(a.layer), "--d-sae", str(a.d_sae), "--k", str(a.k),
                "--batch", str(a.batch), "--steps", str(a.steps), "--lr", str(a.lr), "--ctx", str(a.ctx),
                "--threads", str(a.threads), "--work", a.work]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        subprocess.run(base + ["--prepare"], check=True, env=env)
        for side in SIDES:
            subprocess.run(base + ["--side", side], check=False, env=env)
        table = _table(a)
        (Path(a.work) / "table.md").write_text(table + "\n")
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
