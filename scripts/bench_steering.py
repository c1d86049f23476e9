"""Benchmark: the steering layer search, mechjax against the paper's per-candidate HF loop.

Stolfo et al. (2025), "Improving Instruction-Following in Language Models through
Activation Steering", choose the steering layer of an instruction by generating the
validation answers under every candidate layer and scoring them. Their code
(microsoft/llm-steer-instruct, `format/find_best_layer.py` + `utils/generation_utils.py`)
does it one candidate and one prompt at a time: for each candidate layer and each
validation prompt, one HF `generate` call with a forward hook on that decoder layer that
applies `adjust_rs` (h <- h + (c - h.u) u, u the unit direction, c the mean
with-instruction projection) at every position of every decoding step.
mechjax generates every (candidate, prompt) row in one compiled, batched loop
(`steering.generate_candidates`, what `steering.search_layer` runs).

Workload (fixed): SmolLM2-135M-Instruct (the GGUF of `mj.load("smollm2-135m")`, float32;
the peers load the float32 HF copy of the same weights in `out/bench/hf-smollm2`),
instruction `change_case:english_lowercase`, vectors (`compute_vectors`, last prompt
token, `resid_post`) from 32 augmented pairs (`data.augmented_pairs` on the first list of
`data.split_base(32, 4, exclude_keys=<format keys>)`), candidates = no steering +
`default_layers(30)` = layers 6, 8, ..., 28 (13 candidates), the 4 validation queries
(the second list) through the chat template, 32 new tokens, greedy, every row stopping
at EOS (id 2, `<|im_end|>`) in every library. 13 x 4 = 52 generated rows.

Libraries (`--lib`):

- `mechjax`: ONE `generate_candidates` call over the 52 rows (batch_size=52). The first
  call (compile + run) is reported apart; the timed calls follow it.
- `hf`: the paper's way. For each candidate, for each prompt (batch 1),
  `model.generate(ids, max_new_tokens=32, do_sample=False)` with a forward hook on
  `model.model.layers[l]` rewriting its output hidden states with adjust_rs in float32;
  the hook is removed after each candidate. One untimed warm-up `generate` first.
- `hf-batched`: the same, but each candidate's 4 prompts in one left-padded batch.
- `nnsight`: nnsight's `LanguageModel` around the same HF module; per candidate one
  `.generate` over the 4 prompts (left-padded, with the attention mask), the
  intervention applied at every step (`for _ in tracer.all(): layer.output = ...`).

Every library reads the token ids of the prompts and the direction and target of every
candidate layer from one .npz written by `--prepare` (mechjax computes them), so all use
exactly the same numbers; nothing is re-tokenized. Each `--lib` run writes its own JSON
(wall times, per-row generated token ids up to and including EOS, texts); `--compare`
prints the table: seconds, ratio against mechjax, and per row whether the greedy ids
equal mechjax's (and, where not, the first generated token that differs).

    .venv/bin/python scripts/bench_steering.py --prepare
    .venv/bin/python scripts/bench_steering.py --lib mechjax --repeats 2
    .venv-bench/bin/python scripts/bench_steering.py --lib hf
    .venv-bench/bin/python scripts/bench_steering.py --lib hf-batched
    .venv-bench/bin/python scripts/bench_steering.py --lib nnsight
    .venv/bin/python scripts/bench_steering.py --compare

The torch peers run with one intra-op thread by default (`--torch-threads 1`): on the
2-core benchmark machine, shared with another job, torch's default of 2 threads made a
32-token `generate` 4.8x slower (12.7 s against 2.7 s: OpenMP threads spinning against
the other job); mechjax keeps XLA's defaults. This favours the peers.

`--once` skips the warm-up and repeats (one pass of the workload, for timing the whole
process from outside); `--out DIR` changes `out/bench-steering/`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

T_START = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "bench-steering"
HF_DIR = ROOT / "out" / "bench" / "hf-smollm2"

MODEL = "smollm2-135m"
INSTRUCTION = "change_case:english_lowercase"
N_PAIRS, N_VALID, MAX_NEW = 32, 4, 32
LIBS = ("mechjax", "hf", "hf-batched", "nnsight")
LIB_NAMES = {
    "mechjax": "mechjax, one `generate_candidates` call (52 rows)",
    "hf": "HF, paper's loop (13 x 4 `generate`, batch 1)",
    "hf-batched": "HF, per candidate one batch of 4",
    "nnsight": "nnsight, per candidate one batch of 4",
}


# ------------------------------------------------------------------------- inputs


def prepare(out: Path) -> None:
    """mechjax computes the shared inputs: prompt ids, candidate directions and targets."""
    import mechjax as mj
    from mechjax import steering as st

    model = mj.load(MODEL)
    examples = st.data.format_examples(INSTRUCTION)
    keys = [e.key for e in st.data.format_examples()]
    vec_queries, valid = st.data.split_base(N_PAIRS, N_VALID, exclude_keys=keys)
    with_, without_, _ = st.data.augmented_pairs(examples, vec_queries)
    layers = st.default_layers(model.config.n_layers)
    vecs = st.compute_vectors(model, with_, without_, layers=layers)
    rows = st.encode_prompts(model, valid)
    lens = np.array([len(r) for r in rows], np.int32)
    ids = np.zeros((len(rows), lens.max()), np.int32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    tok = model.tokenizer
    out.mkdir(parents=True, exist_ok=True)
    np.savez(
        out / "inputs.npz",
        prompt_ids=ids,  # right-padded; row i is ids[i, :prompt_lens[i]]
        prompt_lens=lens,
        layers=np.asarray(layers, np.int32),
        directions=np.stack([vecs.at(layer)[0] for layer in layers]).astype(np.float32),
        targets=np.asarray([vecs.at(layer)[1] for layer in layers], np.float32),
        eos=np.int32(tok.eos_token_id),
        pad=np.int32(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id),
        queries=np.asarray(valid),
    )
    print(
        f"wrote {out / 'inputs.npz'}: {len(rows)} prompts ({lens.tolist()} tokens), layers {layers}"
    )


def load_inputs(out: Path) -> dict:
    path = out / "inputs.npz"
    if not path.exists():
        sys.exit(f"{path} missing: run `.venv/bin/python {Path(__file__).name} --prepare` first")
    z = np.load(path)
    inp = {k: z[k] for k in z.files}
    inp["rows"] = [inp["prompt_ids"][i, :n].tolist() for i, n in enumerate(inp["prompt_lens"])]
    # candidate 0 is "no steering", then one per layer
    inp["candidates"] = [None] + [
        (int(layer), inp["directions"][i], float(inp["targets"][i]))
        for i, layer in enumerate(inp["layers"])
    ]
    return inp


def until_eos(ids, eos: int) -> list[int]:
    """Generated ids up to and including the first EOS."""
    ids = [int(t) for t in ids]
    return ids[: ids.index(eos) + 1] if eos in ids else ids


# ------------------------------------------------------------------------- mechjax


def run_mechjax(inp: dict, repeats: int, once: bool) -> dict:
    import mechjax as mj
    from mechjax import steering as st

    model = mj.load(MODEL)
    prompts, steers = [], []
    for cand in inp["candidates"]:
        steer = [] if cand is None else [st.Steer(cand[0], cand[1], cand[2], "adjust")]
        prompts += inp["rows"]
        steers += [steer] * len(inp["rows"])

    def call():
        # returns numpy arrays: the call has finished when it returns
        return st.generate_candidates(model, prompts, steers, MAX_NEW, batch_size=len(prompts))

    t0 = time.perf_counter()
    gen = call()
    first = time.perf_counter() - t0
    times = [] if once else [_timed(call)[1] for _ in range(repeats)]
    eos = int(inp["eos"])
    tokens = [until_eos(gen.tokens[i][: gen.lengths[i]], eos) for i in range(len(prompts))]
    return {
        "seconds": statistics.median(times) if times else first,
        "first_call": first,
        "times": times,
        "tokens": tokens,
        "texts": list(gen.texts or []),
    }


def _timed(fn):
    t0 = time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t0


# ------------------------------------------------------------------------- torch peers


def _hf_model(threads: int):
    import torch
    import transformers

    torch.manual_seed(0)
    if threads:
        torch.set_num_threads(threads)
    if not (HF_DIR / "model.safetensors").exists():
        sys.exit(
            f"{HF_DIR} missing: make it with `scripts/bench/common.py:prepare` "
            "(HF's from_pretrained(dir, gguf_file=...) of the same GGUF, saved as float32)"
        )
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(HF_DIR), dtype=torch.float32)
    hf.eval().requires_grad_(False)
    tok = transformers.AutoTokenizer.from_pretrained(str(HF_DIR))
    return torch, hf, tok


def _adjust(torch, u, c):
    """adjust_rs on a hidden-state tensor [batch, pos, d], float32."""

    def f(h):
        hf32 = h.float()
        proj = (hf32 * u).sum(-1, keepdim=True)
        return (hf32 + (c - proj) * u).to(h.dtype)

    return f


def _hook(f):
    """Forward hook on a decoder layer: its output is a tensor (transformers >= 5) or a
    tuple whose first item is the hidden states (older versions)."""

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (f(output[0]),) + tuple(output[1:])
        return f(output)

    return hook


def _left_pad(torch, rows, pad):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


def run_hf(inp: dict, repeats: int, once: bool, batched: bool, threads: int) -> dict:
    torch, hf, tok = _hf_model(threads)
    eos, pad = int(inp["eos"]), int(inp["pad"])
    layers = hf.model.layers
    kw = dict(max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=eos, pad_token_id=pad)

    def gen(rows):
        ids, mask = _left_pad(torch, rows, pad)
        out = hf.generate(ids, attention_mask=mask, **kw)
        return [until_eos(o[ids.shape[1] :].tolist(), eos) for o in out]

    def sweep():
        tokens = []
        with torch.no_grad():
            for cand in inp["candidates"]:
                handle = None
                if cand is not None:
                    layer, u, c = cand
                    f = _adjust(torch, torch.as_tensor(u), c)
                    handle = layers[layer].register_forward_hook(_hook(f))
                try:
                    if batched:
                        tokens += gen(inp["rows"])
                    else:
                        for r in inp["rows"]:
                            tokens += gen([r])
                finally:
                    if handle is not None:
                        handle.remove()
        return tokens

    if not once:
        with torch.no_grad():
            gen([inp["rows"][0]])  # warm-up (allocator, kernels)
    runs = [_timed(sweep) for _ in range(1 if once else repeats)]
    tokens = runs[0][0]
    return {
        "seconds": statistics.median(t for _, t in runs),
        "times": [t for _, t in runs],
        "tokens": tokens,
        "texts": [tok.decode(t, skip_special_tokens=True) for t in tokens],
        "versions": {"torch": torch.__version__, "threads": torch.get_num_threads()},
    }


def run_nnsight(inp: dict, repeats: int, once: bool, threads: int) -> dict:
    import warnings

    torch, hf, tok = _hf_model(threads)
    import nnsight
    from nnsight import LanguageModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = LanguageModel(hf, tokenizer=tok)
    eos, pad = int(inp["eos"]), int(inp["pad"])
    ids, mask = _left_pad(torch, inp["rows"], pad)
    kw = dict(max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=eos, pad_token_id=pad)

    def gen(cand):
        with m.generate(**kw) as tr:
            with tr.invoke({"input_ids": ids, "attention_mask": mask}):
                if cand is not None:
                    layer, u, c = cand
                    f = _adjust(torch, torch.as_tensor(u), c)
                    for _ in tr.all():
                        m.model.layers[layer].output = f(m.model.layers[layer].output)
            with tr.invoke():
                out = tr.result.save()
        return [until_eos(o[ids.shape[1] :].tolist(), eos) for o in out]

    def sweep():
        with torch.no_grad():
            return [t for cand in inp["candidates"] for t in gen(cand)]

    if not once:
        with torch.no_grad():
            gen(None)  # warm-up
    runs = [_timed(sweep) for _ in range(1 if once else repeats)]
    tokens = runs[0][0]
    return {
        "seconds": statistics.median(t for _, t in runs),
        "times": [t for _, t in runs],
        "tokens": tokens,
        "texts": [tok.decode(t, skip_special_tokens=True) for t in tokens],
        "versions": {"nnsight": nnsight.__version__},
    }


# ------------------------------------------------------------------------- compare


def first_diff(a: list[int], b: list[int]) -> int | None:
    """Index of the first generated token where a and b differ (None: identical)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def compare(out: Path) -> None:
    res = {}
    for lib in LIBS:
        p = out / f"{lib}.json"
        if p.exists():
            res[lib] = json.loads(p.read_text())
    if "mechjax" not in res:
        sys.exit(f"{out / 'mechjax.json'} missing")
    ref = res["mechjax"]
    n_cand = len(ref["candidates"])
    n_rows = len(ref["tokens"])
    print(
        f"Steering layer search: {INSTRUCTION}, {n_cand} candidates x {n_rows // n_cand} "
        f"prompts = {n_rows} rows, {MAX_NEW} new tokens, greedy, stop at EOS\n"
    )
    print(
        "| library | seconds | ratio vs mechjax | identical greedy rows | first differing token |"
    )
    print("|---|---|---|---|---|")
    for lib, r in res.items():
        diffs = [first_diff(a, b) for a, b in zip(ref["tokens"], r["tokens"])]
        same = sum(d is None for d in diffs)
        where = sorted(d for d in diffs if d is not None)
        secs = f"{r['seconds']:.2f}"
        if lib == "mechjax":
            secs += f" (first call {r['first_call']:.1f})"
        ratio = r["seconds"] / ref["seconds"]
        print(
            f"| {LIB_NAMES[lib]} | {secs} | {ratio:.1f}x | {same}/{n_rows} | "
            f"{', '.join(map(str, where)) or '-'} |"
        )
    print()
    for lib, r in res.items():
        print(f"{lib}: in-script total {r['process_seconds']:.1f} s (model loading included)")
    for lib, r in res.items():
        if lib == "mechjax":
            continue
        for i, (a, b) in enumerate(zip(ref["tokens"], r["tokens"])):
            d = first_diff(a, b)
            if d is not None:
                cand = ref["candidates"][i // (n_rows // n_cand)]
                print(f"\n{lib} row {i} (layer {cand}) differs at token {d}:")
                print(f"  mechjax: {ref['texts'][i]!r}")
                print(f"  {lib}: {r['texts'][i]!r}")


# ------------------------------------------------------------------------- main


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepare", action="store_true", help="write the shared inputs (mechjax)")
    ap.add_argument("--lib", choices=LIBS)
    ap.add_argument("--compare", action="store_true", help="print the table from the JSONs")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs (median)")
    ap.add_argument("--once", action="store_true", help="one pass, no warm-up (whole process)")
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads of the peers (0: torch's default); see the docstring",
    )
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    if a.prepare:
        prepare(a.out)
    if a.lib:
        inp = load_inputs(a.out)
        if a.lib == "mechjax":
            r = run_mechjax(inp, a.repeats, a.once)
        elif a.lib == "nnsight":
            r = run_nnsight(inp, a.repeats, a.once, a.torch_threads)
        else:
            r = run_hf(inp, a.repeats, a.once, a.lib == "hf-batched", a.torch_threads)
        r["lib"] = a.lib
        r["candidates"] = [None if c is None else c[0] for c in inp["candidates"]]
        r["process_seconds"] = time.perf_counter() - T_START
        if not a.once:  # a whole-process timing run leaves the measured JSON alone
            (a.out / f"{a.lib}.json").write_text(json.dumps(r, indent=1))
        print(
            f"{a.lib}: {r['seconds']:.2f} s"
            + (f" (first call {r['first_call']:.2f} s)" if "first_call" in r else "")
            + f", in-script total {r['process_seconds']:.1f} s"
        )
    if a.compare:
        compare(a.out)
    if not (a.prepare or a.lib or a.compare):
        ap.error("give --prepare, --lib or --compare")


if __name__ == "__main__":
    main()
