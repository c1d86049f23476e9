"""The mechjax side of every workload."""

from __future__ import annotations

from pathlib import Path

from bench.common import EAP_STEPS, GEN_NEW, MODEL, STEER_LAYER, Cannot


class MechjaxLib:
    def __init__(self, work: Path, inp):
        import jax
        import jax.numpy as jnp

        import mechjax as mj
        from mechjax import metrics
        from mechjax.io import registry

        self.jax, self.jnp, self.mj = jax, jnp, mj
        self.model = mj.load(registry.resolve(MODEL))
        self.inp = inp
        self.metric = metrics.LogitDiff(jnp.asarray(inp["answer"]), jnp.asarray(inp["wrong"]))
        self.clean, self.corrupt = jnp.asarray(inp["clean"]), jnp.asarray(inp["corrupt"])

    def workload(self, w):
        jax, jnp, mj, model = self.jax, self.jnp, self.mj, self.model
        L = model.config.n_layers
        if w == "a":
            sites = tuple(f"blocks.{l}.hook_resid_pre" for l in range(L)) + (
                f"blocks.{L - 1}.hook_resid_post",
            )
            run = jax.jit(lambda m, t: mj.run(m, t, capture=sites))
            tokens = jnp.asarray(self.inp["fwd_tokens"])
            fn = lambda: jax.block_until_ready(run(model, tokens))  # noqa: E731
            return fn, lambda o: {
                "logits": o.logits[:, ::16],
                "resid": jnp.stack([o.cache[s] for s in sites]),
            }
        if w == "b":
            from mechjax.patching import patch_sweep

            fn = lambda: jax.block_until_ready(  # noqa: E731
                patch_sweep(model, self.clean, self.corrupt, self.metric, "resid_pre")
            )
            return fn, lambda r: {"grid": r.grid}
        if w == "c":
            from mechjax.attribution import atp

            fn = lambda: jax.block_until_ready(  # noqa: E731
                atp(model, self.clean, self.corrupt, self.metric, ("z", "mlp_out"), mode="denoise")
            )
            return fn, lambda r: {
                "heads": jnp.stack([r[f"blocks.{l}.attn.hook_z"] for l in range(L)]),
                "mlps": jnp.stack([r[f"blocks.{l}.hook_mlp_out"] for l in range(L)]),
            }
        if w == "d":
            from mechjax.circuits import eap_ig

            fn = lambda: jax.block_until_ready(  # noqa: E731
                eap_ig(model, self.clean, self.corrupt, self.metric, steps=EAP_STEPS)[0]
            )
            return fn, lambda s: {"edges": s}
        if w == "g":
            from mechjax import metrics
            from mechjax.patching import patch_sweep

            inp = self.inp
            clean, corrupt = jnp.asarray(inp["ioi_clean"]), jnp.asarray(inp["ioi_corrupt"])
            metric = metrics.LogitDiff(
                jnp.asarray(inp["ioi_answers"]), jnp.asarray(inp["ioi_wrongs"])
            )
            fn = lambda: jax.block_until_ready(  # noqa: E731
                patch_sweep(model, clean, corrupt, metric, "z", progress=False)
            )
            return fn, lambda r: {"grid": r.grid}
        if w in ("e", "f"):
            hooks = None
            if w == "f":
                hooks = {
                    f"blocks.{STEER_LAYER}.hook_resid_pre": mj.add(jnp.asarray(self.inp["steer"]))
                }
            tokens = self.inp["gen_tokens"]
            fn = lambda: mj.generate(model, tokens, GEN_NEW, hooks=hooks, stop_tokens=())  # noqa: E731
            return fn, lambda g: {"tokens": g.tokens}
        raise Cannot(f"unknown workload {w}")
