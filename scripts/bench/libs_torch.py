"""HF transformers (the floor) and TransformerLens on every workload."""

from __future__ import annotations

from pathlib import Path

from bench.common import EAP_STEPS, GEN_NEW, HF_NAME, STEER_LAYER, Cannot


class _Torch:
    """Shared by the torch peers: the HF model from the float32 copy of the GGUF."""

    def __init__(self, work: Path, inp):
        import torch
        import transformers

        self.torch = torch
        torch.manual_seed(0)
        d = str(work / "hf-smollm2")
        self.hf = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        self.hf.requires_grad_(False)
        self.hf.generation_config.eos_token_id = None  # every row runs to GEN_NEW tokens
        self.tok = transformers.AutoTokenizer.from_pretrained(d)
        self.inp = inp
        t = lambda k: torch.as_tensor(inp[k]).long()  # noqa: E731
        self.fwd, self.clean, self.corrupt, self.gen = (
            t("fwd_tokens"),
            t("clean"),
            t("corrupt"),
            t("gen_tokens"),
        )
        self.answer, self.wrong, self.pad = int(inp["answer"]), int(inp["wrong"]), int(inp["pad"])
        self.steer = torch.as_tensor(inp["steer"])
        self.L = self.hf.config.num_hidden_layers
        self.H = self.hf.config.num_attention_heads

    def metric(self, logits):
        return (logits[:, -1, self.answer] - logits[:, -1, self.wrong]).mean()

    def gen_kwargs(self):
        return dict(
            max_new_tokens=GEN_NEW,
            do_sample=False,
            pad_token_id=self.pad,
            attention_mask=self.torch.ones_like(self.gen),
        )


class HFLib(_Torch):
    """Plain transformers with hand-written torch hooks: the floor."""

    def workload(self, w):
        torch, hf, L = self.torch, self.hf, self.L
        layers = hf.model.layers
        if w == "a":

            def fn():
                box = {}
                h = layers[L - 1].register_forward_hook(
                    lambda m, a, o: box.update(post=o[0] if isinstance(o, tuple) else o)
                )
                try:
                    with torch.no_grad():
                        out = hf(self.fwd, output_hidden_states=True)
                finally:
                    h.remove()
                return out.logits, list(out.hidden_states[:L]) + [box["post"]]

            return fn, lambda o: {"logits": o[0][:, ::16], "resid": torch.stack(o[1])}
        if w == "b":
            # one forward per layer over a batch of P corrupted copies, row i patched at
            # position i (batched like nnsight's invokes, the fastest plain-torch sweep)
            def fn():
                with torch.no_grad():
                    hs = hf(self.clean, output_hidden_states=True).hidden_states
                    P = self.clean.shape[1]
                    base = self.corrupt.expand(P, -1)
                    idx = torch.arange(P)
                    grid = torch.zeros(L, P)
                    for l in range(L):

                        def pre(mod, args, kwargs, l=l):
                            x = args[0].clone()
                            x[idx, idx] = hs[l][0, idx]
                            return (x,) + tuple(args[1:]), kwargs

                        h = layers[l].register_forward_pre_hook(pre, with_kwargs=True)
                        try:
                            lg = hf(base).logits
                        finally:
                            h.remove()
                        grid[l] = lg[:, -1, self.answer] - lg[:, -1, self.wrong]
                return grid

            return fn, lambda g: {"grid": g}
        if w == "c":

            def fn():
                zs, mlps, hooks = {}, {}, []

                def keep(store, l, is_input):
                    def f(mod, args, out=None):
                        store[l] = args[0] if is_input else out

                    return f

                for l in range(L):
                    hooks.append(
                        layers[l].self_attn.o_proj.register_forward_pre_hook(keep(zs, l, True))
                    )
                    hooks.append(layers[l].mlp.register_forward_hook(keep(mlps, l, False)))
                try:
                    with torch.no_grad():
                        hf(self.clean)
                    zc, mc = dict(zs), dict(mlps)
                    emb = hf.model.embed_tokens.register_forward_hook(
                        lambda m, a, o: o.requires_grad_(True)
                    )
                    try:
                        m = self.metric(hf(self.corrupt).logits)
                        grads = torch.autograd.grad(
                            m, [zs[l] for l in range(L)] + [mlps[l] for l in range(L)]
                        )
                    finally:
                        emb.remove()
                finally:
                    for h in hooks:
                        h.remove()
                b, p = self.clean.shape
                heads = torch.stack(
                    [
                        ((zc[l] - zs[l]) * grads[l]).reshape(b, p, self.H, -1).sum((0, 3))
                        for l in range(L)
                    ]
                )
                mlp = torch.stack(
                    [((mc[l] - mlps[l]) * grads[L + l]).sum((0, 2)) for l in range(L)]
                )
                return heads, mlp

            return fn, lambda r: {"heads": r[0], "mlps": r[1]}
        if w == "d":
            raise Cannot(
                "not written: plain HF has no per-head q/k/v input sites to take EAP-IG's "
                "edge gradients at"
            )
        if w == "g":
            raise Cannot("not written: per-head patching needs hooks inside the attention")
        if w in ("e", "f"):

            def fn():
                h = None
                if w == "f":
                    h = layers[STEER_LAYER].register_forward_pre_hook(
                        lambda m, args, kw: ((args[0] + self.steer,) + tuple(args[1:]), kw),
                        with_kwargs=True,
                    )
                try:
                    with torch.no_grad():
                        return hf.generate(self.gen, **self.gen_kwargs())
                finally:
                    if h is not None:
                        h.remove()

            return fn, lambda o: {"tokens": o[:, self.gen.shape[1] :]}
        raise Cannot(f"unknown workload {w}")


class TLLib(_Torch):
    """TransformerLens 4.x: `TransformerBridge` around the same HF module (HookedTransformer
    was removed in 4.0); raw HF weights, no weight processing, eager attention."""

    def __init__(self, work, inp):
        super().__init__(work, inp)
        from transformer_lens.model_bridge import TransformerBridge

        self.br = TransformerBridge.boot_transformers(
            HF_NAME, hf_model=self.hf, tokenizer=self.tok, device="cpu"
        )
        self.br.eval()

    def workload(self, w):
        torch, br, L = self.torch, self.br, self.L
        if w == "a":
            names = {f"blocks.{l}.hook_resid_pre" for l in range(L)} | {
                f"blocks.{L - 1}.hook_resid_post"
            }

            def fn():
                with torch.no_grad():
                    return br.run_with_cache(self.fwd, names_filter=lambda n: n in names)

            order = [f"blocks.{l}.hook_resid_pre" for l in range(L)] + [
                f"blocks.{L - 1}.hook_resid_post"
            ]
            return fn, lambda o: {
                "logits": o[0][:, ::16],
                "resid": torch.stack([o[1][n] for n in order]),
            }
        if w == "b":
            from transformer_lens import patching

            def fn():
                with torch.no_grad():
                    _, cache = br.run_with_cache(self.clean)
                    return patching.get_act_patch_resid_pre(br, self.corrupt, cache, self.metric)

            return fn, lambda g: {"grid": g}
        if w == "g":
            from transformer_lens import patching

            t = lambda k: torch.as_tensor(self.inp[k]).long()  # noqa: E731
            clean, corrupt = t("ioi_clean"), t("ioi_corrupt")
            rows = torch.arange(clean.shape[0])
            ans, wrong = t("ioi_answers"), t("ioi_wrongs")

            def metric(logits):
                last = logits[:, -1]
                return (last[rows, ans] - last[rows, wrong]).mean()

            cells = _sample_cells(self.inp, clean.shape[1], self.L, self.H)
            if cells is None:

                def fn():
                    with torch.no_grad():
                        _, cache = br.run_with_cache(clean)
                        return patching.get_act_patch_attn_head_out_by_pos(
                            br, corrupt, cache, metric
                        )

                return fn, lambda g: {"grid": g}
            import pandas as pd

            # the function's own loop over a sample of its index rows: one patched
            # forward per row, the same cost per cell as the full sweep
            index = pd.DataFrame(cells, columns=["layer", "pos", "head"])
            self.time_scale = self.L * clean.shape[1] * self.H / len(cells)

            def fn():
                with torch.no_grad():
                    _, cache = br.run_with_cache(clean)
                    return patching.generic_activation_patch(
                        br,
                        corrupt,
                        cache,
                        metric,
                        patch_setter=patching.layer_pos_head_vector_patch_setter,
                        activation_name="z",
                        index_df=index,
                    )

            return fn, lambda g: {"grid": g, "cells": torch.as_tensor(cells)}
        if w == "c":
            from transformer_lens.tools.analysis import attribution_patching as ap

            self.hf.requires_grad_(True)  # TL takes its gradients through backward hooks
            fn = lambda: ap.attribution_patch(  # noqa: E731
                br,
                self.clean,
                self.corrupt,
                self.metric,  # noqa: E731
                ap.EdgeAttributionConfig(granularity="node"),
            )
            return fn, self._nodes
        if w == "d":
            from transformer_lens.tools.analysis import attribution_patching as ap

            try:
                ap.EdgeAttributionConfig(granularity="edge", ig_steps=EAP_STEPS)
            except NotImplementedError as e:
                raise Cannot(f"attribution_patch: {e} (edge granularity also refuses GQA)") from e
            raise Cannot("not wired up")
        if w in ("e", "f"):

            def steer(x, hook):
                return x + self.steer

            def fn():
                hooks = [(f"blocks.{STEER_LAYER}.hook_resid_pre", steer)] if w == "f" else []
                with torch.no_grad(), br.hooks(fwd_hooks=hooks):
                    return br.generate(
                        self.gen,
                        max_new_tokens=GEN_NEW,
                        do_sample=False,
                        stop_at_eos=False,
                        verbose=False,
                    )

            return fn, lambda o: {"tokens": o[:, self.gen.shape[1] :]}
        raise Cannot(f"unknown workload {w}")

    def _nodes(self, res):
        import numpy as np

        P = self.clean.shape[1]
        heads, mlps = np.zeros((self.L, P, self.H), np.float32), np.zeros((self.L, P), np.float32)
        for node, s in res.node_scores.items():
            if node.kind == "attn_head_out":
                heads[node.layer, node.position, node.head] = s
            elif node.kind == "mlp_out":
                mlps[node.layer, node.position] = s
        return {"heads": heads, "mlps": mlps}


def _sample_cells(inp, n_pos: int, n_layers: int, n_heads: int):
    """`--sample-cells N` of workload (g): N (layer, pos, head) cells drawn with a fixed
    seed (None: every cell)."""
    import numpy as np

    n = int(inp.get("sample_cells", 0))
    if n <= 0 or n >= n_layers * n_pos * n_heads:
        return None
    flat = np.random.RandomState(0).choice(n_layers * n_pos * n_heads, n, replace=False)
    return [tuple(int(x) for x in np.unravel_index(i, (n_layers, n_pos, n_heads))) for i in flat]
