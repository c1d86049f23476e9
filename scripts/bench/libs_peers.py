"""nnsight, pyvene and penzai on every workload."""

from __future__ import annotations

from bench.common import GEN_BATCH, GEN_NEW, STEER_LAYER, Cannot
from bench.libs_torch import _Torch


class NNsightLib(_Torch):
    """nnsight `LanguageModel` around the same HF module; the docs' patterns."""

    def __init__(self, work, inp):
        super().__init__(work, inp)
        import warnings

        from nnsight import LanguageModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.m = LanguageModel(self.hf, tokenizer=self.tok)

    def workload(self, w):
        torch, m, L, H = self.torch, self.m, self.L, self.H
        layers = m.model.layers
        if w == "a":

            def fn():
                resid = []
                with torch.no_grad(), m.trace(self.fwd):
                    for l in range(L):
                        resid.append(layers[l].input.save())
                    resid.append(layers[L - 1].output.save())
                    logits = m.lm_head.output.save()
                return logits, resid

            return fn, lambda o: {"logits": o[0][:, ::16], "resid": torch.stack(list(o[1]))}
        if w == "b":
            # per layer one trace over P corrupted copies, row i patched at position i
            def fn():
                P = self.clean.shape[1]
                clean = []
                with torch.no_grad():
                    with m.trace(self.clean):
                        for l in range(L):
                            clean.append(layers[l].input.save())
                    base = self.corrupt.expand(P, -1)
                    idx = torch.arange(P)
                    rows = []
                    for l in range(L):
                        with m.trace(base):
                            layers[l].input[idx, idx] = clean[l][0, idx]
                            last = m.lm_head.output[:, -1].save()
                        rows.append(last[:, self.answer] - last[:, self.wrong])
                return torch.stack(rows)

            return fn, lambda g: {"grid": g}
        if w == "c":

            def fn():
                zc, mc, zs, ms, gz, gm = [], [], [], [], [None] * L, [None] * L
                with torch.no_grad(), m.trace(self.clean):
                    for l in range(L):
                        zc.append(layers[l].self_attn.o_proj.input.save())
                        mc.append(layers[l].mlp.output.save())
                with m.trace(self.corrupt):
                    refs = []
                    for l in range(L):
                        z = layers[l].self_attn.o_proj.input
                        z.requires_grad_(True)
                        zs.append(z.save())
                        mo = layers[l].mlp.output
                        mo.requires_grad_(True)
                        ms.append(mo.save())
                        refs.append((z, mo))
                    logits = m.lm_head.output
                    metric = (logits[:, -1, self.answer] - logits[:, -1, self.wrong]).mean()
                    with metric.backward():
                        for l in reversed(range(L)):
                            gm[l] = refs[l][1].grad.save()
                            gz[l] = refs[l][0].grad.save()
                b, p = self.clean.shape
                heads = torch.stack(
                    [((zc[l] - zs[l]) * gz[l]).reshape(b, p, H, -1).sum((0, 3)) for l in range(L)]
                )
                mlp = torch.stack([((mc[l] - ms[l]) * gm[l]).sum((0, 2)) for l in range(L)])
                return heads, mlp

            return fn, lambda r: {"heads": r[0], "mlps": r[1]}
        if w == "d":
            raise Cannot("no EAP-IG in nnsight (a documented pattern for node attribution only)")
        if w == "g":
            raise Cannot("not written (TransformerLens is this workload's peer)")
        if w in ("e", "f"):

            def fn():
                with (
                    torch.no_grad(),
                    m.generate(
                        max_new_tokens=GEN_NEW, do_sample=False, pad_token_id=self.pad
                    ) as tr,
                ):
                    with tr.invoke(self.gen):
                        if w == "f":
                            for _ in tr.all():
                                layers[STEER_LAYER].input[:] += self.steer
                    with tr.invoke():
                        out = tr.result.save()
                return out

            return fn, lambda o: {"tokens": o[:, self.gen.shape[1] :]}
        raise Cannot(f"unknown workload {w}")


class PyveneLib(_Torch):
    """pyvene `IntervenableModel` around the same HF module."""

    def __init__(self, work, inp):
        super().__init__(work, inp)
        import pyvene as pv

        self.pv = pv

    def workload(self, w):
        torch, pv, hf, L = self.torch, self.pv, self.hf, self.L
        if w == "a":
            # keep_last_dim: without it pyvene mis-reshapes multi-position collections
            collect = lambda: pv.CollectIntervention(keep_last_dim=True)  # noqa: E731
            cfg = [
                {"layer": l, "component": "block_input", "intervention": collect()}
                for l in range(L)
            ] + [{"layer": L - 1, "component": "block_output", "intervention": collect()}]
            pvm = pv.IntervenableModel(cfg, model=hf)
            b, p = self.fwd.shape
            loc = [[list(range(p))] * b] * (L + 1)

            def fn():
                with torch.no_grad():
                    (_, collected), out = pvm(
                        {"input_ids": self.fwd},
                        unit_locations={"base": loc},
                        output_original_output=True,
                    )
                return out.logits, collected

            return fn, lambda o: {
                "logits": o[0][:, ::16],
                "resid": torch.stack([c.reshape(b, p, -1) for c in o[1]]),
            }
        if w == "b":

            def fn():
                P = self.clean.shape[1]
                base, src = self.corrupt.expand(P, -1), self.clean.expand(P, -1)
                loc = [[[i] for i in range(P)]]
                rows = []
                with torch.no_grad():
                    for l in range(L):
                        pvm = pv.IntervenableModel(
                            {
                                "layer": l,
                                "component": "block_input",
                                "intervention_type": pv.VanillaIntervention,
                            },
                            model=hf,
                        )
                        _, cf = pvm(
                            {"input_ids": base}, [{"input_ids": src}], {"sources->base": (loc, loc)}
                        )
                        lg = cf.logits[:, -1]
                        rows.append(lg[:, self.answer] - lg[:, self.wrong])
                return torch.stack(rows)

            return fn, lambda g: {"grid": g}
        if w in ("c", "d"):
            raise Cannot("no gradients with respect to activations in pyvene's API")
        if w == "g":
            raise Cannot("not written (TransformerLens is this workload's peer)")
        if w == "e":
            raise Cannot("n/a: without an intervention pyvene generates with HF generate")
        if w == "f":
            pvm = pv.IntervenableModel(
                {
                    "layer": STEER_LAYER,
                    "component": "block_input",
                    "intervention_type": pv.AdditionIntervention,
                },
                model=hf,
            )

            def fn():
                with torch.no_grad():
                    _, out = pvm.generate(
                        {"input_ids": self.gen},
                        unit_locations=None,
                        source_representations=self.steer,
                        intervene_on_prompt=True,
                        **self.gen_kwargs(),
                    )
                return out

            return fn, lambda o: {"tokens": o[:, self.gen.shape[1] :]}
        raise Cannot(f"unknown workload {w}")


class PenzaiLib:
    """penzai's Llama conversion of the same HF module (see `_convert`), run under jit."""

    def __init__(self, work, inp):
        import jax

        self.jax, self.inp = jax, inp
        self.model = self._convert(work)

    @staticmethod
    def _convert(work):
        import torch
        import transformers
        from penzai.models.transformer.variants import llamalike_common

        hf = transformers.AutoModelForCausalLM.from_pretrained(
            str(work / "hf-smollm2"), dtype=torch.float32
        ).eval()
        # penzai 0.2.5's `llama_from_huggingface_model` refuses this config under
        # transformers 5 (tie_word_embeddings, rope_parameters); the shared converter
        # it calls works once `rope_theta` is where it looks for it.
        hf.config.rope_theta = hf.config.rope_parameters["rope_theta"]
        return llamalike_common.llamalike_from_huggingface_model(hf)

    def workload(self, w):
        import jax.numpy as jnp
        from penzai import pz
        from penzai.models.transformer import model_parts
        from penzai.toolshed import jit_wrapper

        jax, model = self.jax, self.model
        if w == "a":

            @pz.pytree_dataclass
            class Tap(pz.nn.Layer):
                cell: pz.StateVariable

                def __call__(self, x, **side):
                    self.cell.value = x
                    return x

            L = len(pz.select(model).at_instances_of(model_parts.TransformerBlock).get_sequence())
            last = pz.StateVariable(None)
            tapped = (
                pz.select(model)
                .at_instances_of(model_parts.TransformerBlock)
                .pick_nth_selected(L - 1)
                .insert_after(Tap(last))
            )
            cells = []

            def tap(block):
                cells.append(pz.StateVariable(None))
                return pz.nn.Sequential([Tap(cells[-1]), block])

            tapped = pz.select(tapped).at_instances_of(model_parts.TransformerBlock).apply(tap)
            cells.append(last)
            jitted = jit_wrapper.Jitted(tapped)
            tokens = pz.nx.wrap(jnp.asarray(self.inp["fwd_tokens"])).tag("batch", "seq")

            def fn():
                logits = jitted(tokens)
                resid = [c.value.unwrap("batch", "seq", "embedding") for c in cells]
                return jax.block_until_ready((logits.unwrap("batch", "seq", "vocabulary"), resid))

            return fn, lambda o: {"logits": o[0][:, ::16], "resid": jnp.stack(o[1])}
        if w in ("b", "c", "d", "g"):
            raise Cannot("no patching, attribution or circuit helpers in penzai (user code)")
        if w in ("e", "f"):
            from penzai.models.transformer import sampling_mode, simple_decoding_loop

            base = model
            if w == "f":
                steer = pz.nx.wrap(jnp.asarray(self.inp["steer"])).tag("embedding")

                @pz.pytree_dataclass
                class AddSteer(pz.nn.Layer):
                    delta: pz.nx.NamedArray

                    def __call__(self, x, **side):
                        return x + self.delta

                blocks = pz.select(model).at_instances_of(model_parts.TransformerBlock)
                base = blocks.pick_nth_selected(STEER_LAYER).insert_before(AddSteer(steer))
            prompt = pz.nx.wrap(jnp.asarray(self.inp["gen_tokens"])).tag("batch", "seq")
            n_prompt = self.inp["gen_tokens"].shape[1]

            def fn():
                lm = sampling_mode.KVCachingTransformerLM.from_uncached(
                    base, cache_len=n_prompt + GEN_NEW, batch_axes={"batch": GEN_BATCH}
                )
                out = simple_decoding_loop.temperature_sample_pyloop(
                    _JittedLM(lm, jit_wrapper.Jitted(lm)),
                    prompt=prompt,
                    rng=jax.random.key(0),
                    temperature=1e-6,
                    max_sampling_steps=GEN_NEW,
                )
                return jax.block_until_ready(out.unwrap("batch", "seq"))

            return fn, lambda o: {"tokens": o}
        raise Cannot(f"unknown workload {w}")


class _JittedLM:
    """penzai's `Jitted` wrapper for the calls, the wrapped model for its attributes
    (`temperature_sample_pyloop` reads `pad_id` and the cache state, which `Jitted` hides)."""

    def __init__(self, lm, jitted):
        self._lm, self._jitted = lm, jitted

    def __call__(self, *args, **kwargs):
        return self._jitted(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._lm, name)
