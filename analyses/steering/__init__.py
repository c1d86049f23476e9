"""`mechjax reproduce steering`: "Improving Instruction-Following in Language Models
through Activation Steering" (Stolfo, Balachandran, Yousefi, Horvitz, Nushi; ICLR 2025)
on SmolLM2-135M-Instruct and Gemma 3 270M.

    mechjax reproduce steering --out DIR [--quick] [--models smollm2-135m gemma3-270m]

Per model (results.json rewritten after every instruction, `"complete": false` until the
end):

1. format instructions (every checkable one in the paper's format set): a vector per
   layer from augmented pairs (instruction-free IFEval queries whose key is not an
   evaluation key, plus an instruction sentence of that id), the layer search on
   held-out validation queries (candidates range(L // 5, L, 2) and no steering, all in
   one compiled generation, degenerate layers zeroed), then adherence on the paper's
   evaluation examples in four conditions: no instruction, instruction, steering without
   the instruction, both (`adjust_rs` at the chosen layer);
2. length: a conciseness vector from one-sentence pairs, `add_vector` at about 3/8 of the
   depth (the paper's layer 12 of 32) with weights w = a |u| for several a; words and
   sentences per answer against w;
3. keywords: inclusion and exclusion, one vector per word (`add_vector` at about 3/4 of
   the depth, the paper's layer 24 of 32); the weight chosen among a few multiples of
   |u| on the first half of the examples, adherence on the second half;
4. composition: lowercase (`adjust_rs` at its chosen layer) together with the length
   vector (`add_vector`), and whether each still works.

Departures from the paper (report.md says them too): the models are a 135M instruction-
tuned model and a 270M base model (the paper used Phi-3, Gemma 2 2B/9B, Mistral 7B);
vectors come from about 32 pairs per instruction built from the shipped files (the
paper's augmented set is not available offline); generations are short (64 new tokens);
the degeneracy filter uses the unsteered model's own perplexity (no GPT-2 offline) with
threshold 1.3; the language instruction is not checked (no offline language identifier).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_MODELS = ("smollm2-135m", "gemma3-270m")
LENGTH_PHRASINGS = (
    " Answer in one sentence.",
    " Your response should contain only one sentence.",
    " Respond with a single sentence.",
    " Please keep your answer to one sentence.",
)


def _settings(quick: bool, smoke: bool = False) -> dict:
    if smoke:  # seconds per model, for tests: numbers not meaningful
        return {
            "instructions": ["change_case:english_lowercase"],
            "n_vector": 4,
            "n_valid": 2,
            "n_eval": 2,
            "max_new_tokens": 8,
            "layers": [1],
            "length_alphas": [0.0, 4.0],
            "n_length": 2,
            "n_keyword": 2,
            "n_keyword_pairs": 2,
            "keyword_alphas": [2.0],
            "seed": 0,
        }
    return {
        "instructions": (
            [
                "change_case:english_lowercase",
                "detectable_format:title",
                "startend:quotation",
                "punctuation:no_comma",
            ]
            if quick
            else None  # every checkable format instruction
        ),
        "n_vector": 16 if quick else 32,
        "n_valid": 4 if quick else 6,
        "n_eval": 6 if quick else None,  # None: every evaluation example
        "max_new_tokens": 32 if quick else 64,
        "layers": None,  # the paper's range(L // 5, L, 2)
        "length_alphas": [0.0, 2.0, 4.0, 8.0] if quick else [-4.0, 0.0, 2.0, 4.0, 8.0],
        "n_length": 6 if quick else 12,
        "n_keyword": 8 if quick else 24,
        "n_keyword_pairs": 8 if quick else 12,
        "keyword_alphas": [2.0, 4.0] if quick else [1.0, 2.0, 4.0, 8.0],
        "seed": 0,
    }


CONDITIONS = ("no_instr", "instr", "steer", "instr_steer")


def _conditions(model, examples, steers, settings, template) -> dict:
    """Adherence in the four conditions, all rows in one compiled generation.

    `examples`: (with, without, instruction id, kwargs); `steers[i]`: example i's candidate.
    """
    from mechjax import steering as st

    rows, cands, ids, kws = [], [], [], []
    for cond in CONDITIONS:
        for (w, wo, iid, kw), s in zip(examples, steers):
            rows.append(w if cond in ("instr", "instr_steer") else wo)
            cands.append(s if cond in ("steer", "instr_steer") else [])
            ids.append([iid])
            kws.append([kw])
    toks = st.encode_prompts(model, rows, template)
    gen = st.generate_candidates(model, toks, cands, settings["max_new_tokens"])
    assert gen.texts is not None
    texts = [st.answer_text(t, model, template) for t in gen.texts]
    ok = st.score(texts, ids, kws).reshape(len(CONDITIONS), len(examples))
    n = len(examples)
    words = np.array([st.ifeval.count_words(t) for t in texts]).reshape(len(CONDITIONS), n)
    out: dict = {c: round(float(ok[i].mean()), 4) for i, c in enumerate(CONDITIONS)}
    out["n"] = n
    out["pass"] = {c: ok[i].astype(int).tolist() for i, c in enumerate(CONDITIONS)}
    out["mean_words"] = {c: round(float(words[i].mean()), 2) for i, c in enumerate(CONDITIONS)}
    out["examples"] = {c: texts[i * n : i * n + 2] for i, c in enumerate(CONDITIONS)}
    return out


def _format_instruction(model, iid, settings, template, eval_keys) -> dict:
    from mechjax import steering as st

    exs = st.data.format_examples(iid)
    vq, valq = st.data.split_base(
        settings["n_vector"], settings["n_valid"], exclude_keys=eval_keys, seed=settings["seed"]
    )
    w, wo, _ = st.data.augmented_pairs(exs, vq, seed=settings["seed"])
    _, _, val_kw = st.data.augmented_pairs(exs, valq, seed=settings["seed"] + 1)
    layers = settings["layers"] or st.default_layers(model.config.n_layers)
    vecs = st.compute_vectors(model, w, wo, layers=layers, template=template)
    search = st.search_layer(
        model,
        vecs,
        valq,
        [[iid]] * len(valq),
        [[k] for k in val_kw],
        layers=layers,
        max_new_tokens=settings["max_new_tokens"],
        template=template,
    )
    ev = exs if settings["n_eval"] is None else exs[: settings["n_eval"]]
    steer = [] if search.best is None else [st.adjust_at(vecs, search.best)]
    cond = _conditions(
        model,
        [(e.prompt, e.prompt_without_instruction, iid, e.kwargs) for e in ev],
        [steer] * len(ev),
        settings,
        template,
    )
    # the layer with the best validation accuracy, even when no steering won: the
    # composition stage and the report use it
    steered = [i for i, c in enumerate(search.candidates) if c is not None]
    top = steered[int(np.argmax(search.score[steered]))]
    return {
        **{c: cond[c] for c in CONDITIONS},
        "layer": search.best,
        "best_steering_layer": search.candidates[top],
        "n_eval": cond["n"],
        "search": {
            "candidates": list(search.candidates),
            "accuracy": search.accuracy.round(4).tolist(),
            "degenerate": search.degenerate.tolist(),
            # None where the perplexity was not needed (an accuracy of 0) or not defined
            "min_perplexity": [
                None if np.all(np.isnan(row)) else round(float(np.nanmin(row)), 3)
                for row in search.perplexity
            ],
        },
        "pass": cond["pass"],
        "mean_words": cond["mean_words"],
        "examples": cond["examples"],
        "vector_norm": dict(zip(map(str, vecs.layers), vecs.norm.round(3).tolist())),
    }


def _length_vectors(model, settings, template, eval_keys):
    """(layer, the conciseness vector, the held-out queries) of the length stage."""
    from mechjax import steering as st

    layer = round(model.config.n_layers * 12 / 32)
    vq, valq = st.data.split_base(
        settings["n_vector"],
        settings["n_length"],
        exclude_keys=eval_keys,
        seed=settings["seed"] + 7,
    )
    w = [q + LENGTH_PHRASINGS[i % len(LENGTH_PHRASINGS)] for i, q in enumerate(vq)]
    return layer, st.compute_vectors(model, w, vq, layers=[layer], template=template), valq


def _length(model, settings, template, eval_keys) -> tuple[dict, object]:
    from mechjax import steering as st

    layer, vecs, valq = _length_vectors(model, settings, template, eval_keys)
    norm = float(vecs.norm[0])
    toks = st.encode_prompts(model, valq, template)
    alphas = settings["length_alphas"]
    rows, cands = [], []
    for a in alphas:
        rows += toks
        cands += [[st.add_at(vecs, layer, a * norm)] if a else []] * len(toks)
    gen = st.generate_candidates(model, rows, cands, settings["max_new_tokens"])
    assert gen.texts is not None
    n = len(toks)
    texts = [st.answer_text(t, model, template) for t in gen.texts]
    words = np.array([st.ifeval.count_words(t) for t in texts]).reshape(len(alphas), n)
    sents = np.array([len(st.ifeval.split_sentences(t)) for t in texts]).reshape(len(alphas), n)
    ppl = st.perplexity(model, gen).reshape(len(alphas), n)
    return {
        "layer": layer,
        "vector_norm": round(norm, 4),
        "alphas": alphas,
        "weights": [round(a * norm, 4) for a in alphas],
        "mean_words": words.mean(1).round(2).tolist(),
        "mean_sentences": sents.mean(1).round(2).tolist(),
        "degenerate_fraction": st.is_degenerate(ppl).mean(1).round(3).tolist(),
        "examples": {str(a): texts[i * n] for i, a in enumerate(alphas)},
        "n": n,
    }, vecs


def _keywords(model, kind, settings, template, eval_keys) -> dict:
    from mechjax import steering as st

    iid = "keywords:existence" if kind == "include" else "keywords:forbidden_words"
    key = "keywords" if kind == "include" else "forbidden_words"
    layer = round(model.config.n_layers * 24 / 32)
    exs = st.data.keyword_examples(kind)[: settings["n_keyword"]]
    vq, _ = st.data.split_base(
        settings["n_keyword_pairs"], 0, exclude_keys=eval_keys, without="keywords:", seed=3
    )
    steers_by_alpha: dict[float, list] = {a: [] for a in settings["keyword_alphas"]}
    for e in exs:
        word = e.kwargs[key][0]
        w, wo = st.data.keyword_pairs(word, vq, kind)
        vecs = st.compute_vectors(model, w, wo, layers=[layer], template=template)
        for a in settings["keyword_alphas"]:
            steers_by_alpha[a].append([st.add_at(vecs, layer, a * float(vecs.norm[0]))])
    half = max(1, len(exs) // 2)
    val, ev = list(range(half)), list(range(half, len(exs))) or list(range(half))
    # the weight: best "steer" adherence on the validation half, degenerate outputs zeroed
    val_rows, val_cands, val_ids, val_kws = [], [], [], []
    for a in settings["keyword_alphas"]:
        for i in val:
            val_rows.append(exs[i].prompt_without_instruction)
            val_cands.append(steers_by_alpha[a][i])
            val_ids.append([iid])
            val_kws.append([exs[i].kwargs])
    gen = st.generate_candidates(
        model, st.encode_prompts(model, val_rows, template), val_cands, settings["max_new_tokens"]
    )
    assert gen.texts is not None
    val_texts = [st.answer_text(t, model, template) for t in gen.texts]
    ok = st.score(val_texts, val_ids, val_kws).reshape(len(settings["keyword_alphas"]), len(val))
    degen = st.is_degenerate(st.perplexity(model, gen)).reshape(ok.shape).any(1)
    val_score = np.where(degen, 0.0, ok.mean(1))
    alpha = settings["keyword_alphas"][int(np.argmax(val_score))]
    cond = _conditions(
        model,
        [(exs[i].prompt, exs[i].prompt_without_instruction, iid, exs[i].kwargs) for i in ev],
        [steers_by_alpha[alpha][i] for i in ev],
        settings,
        template,
    )
    return {
        **{c: cond[c] for c in CONDITIONS},
        "layer": layer,
        "alpha": alpha,
        "validation": {
            "alphas": settings["keyword_alphas"],
            "steer_accuracy": ok.mean(1).round(4).tolist(),
            "degenerate": degen.tolist(),
        },
        "n_eval": cond["n"],
        "examples": cond["examples"],
    }


def _composition(model, fmt: dict, length_vecs, length: dict, settings, template) -> dict:
    """Lowercase (adjust_rs) plus the length vector (add_vector), on lowercase examples."""
    from mechjax import steering as st

    iid = "change_case:english_lowercase"
    exs = st.data.format_examples(iid)
    if settings["n_eval"] is not None:
        exs = exs[: settings["n_eval"]]
    layers = settings["layers"] or st.default_layers(model.config.n_layers)
    vq, _ = st.data.split_base(
        settings["n_vector"], 0, exclude_keys=[e.key for e in st.data.format_examples()]
    )
    w, wo, _ = st.data.augmented_pairs(st.data.format_examples(iid), vq, seed=settings["seed"])
    vecs = st.compute_vectors(model, w, wo, layers=layers, template=template)
    f_layer = fmt["best_steering_layer"]
    alphas = [a for a in length["alphas"] if a > 0]
    alpha = max(alphas) if alphas else 4.0
    fmt_steer = st.adjust_at(vecs, f_layer)
    len_steer = st.add_at(length_vecs, length["layer"], alpha * length["vector_norm"])
    cands = {
        "none": [],
        "format": [fmt_steer],
        "length": [len_steer],
        "both": [fmt_steer, len_steer],
    }
    toks = st.encode_prompts(model, [e.prompt_without_instruction for e in exs], template)
    rows, steers = [], []
    for c in cands.values():
        rows += toks
        steers += [c] * len(toks)
    gen = st.generate_candidates(model, rows, steers, settings["max_new_tokens"])
    assert gen.texts is not None
    n = len(toks)
    texts = [st.answer_text(t, model, template) for t in gen.texts]
    ok = st.score(texts, [[iid]] * len(rows)).reshape(len(cands), n)
    words = np.array([st.ifeval.count_words(t) for t in texts]).reshape(len(cands), n)
    out = {
        name: {
            "lowercase": round(float(ok[i].mean()), 4),
            "mean_words": round(float(words[i].mean()), 2),
        }
        for i, name in enumerate(cands)
    }
    out["format_layer"] = f_layer
    out["length_layer"] = length["layer"]
    out["length_alpha"] = alpha
    out["n"] = n
    out["examples"] = {name: texts[i * n] for i, name in enumerate(cands)}
    return out


def _instruction_ids(settings: dict) -> list[str]:
    from mechjax import steering as st

    return settings["instructions"] or sorted(
        {e.instruction_id for e in st.data.format_examples()} & set(st.ifeval.CHECKABLE)
    )


def _model_stages(stages, name: str, settings: dict, results: dict, prior: dict) -> None:
    """Every stage of one model; a stage already in `prior[name]` (a resumed run) is
    kept, not run again."""
    import mechjax as mj
    from mechjax import steering as st

    log = stages.log
    model = mj.load(name)
    template = "auto"
    tok = model.tokenizer
    r: dict = {
        "model": name,
        "n_layers": model.config.n_layers,
        "template": "chat" if tok is not None and tok.chat_template else "qa",
        "instruction_tuned": bool(tok is not None and tok.chat_template),
        "format": {},
    }
    done = prior.get(name) or {}
    r["format"].update(done.get("format", {}))
    stage_keys = ("length", "keywords_include", "keywords_exclude", "composition")
    for key in stage_keys:
        if key in done:
            r[key] = done[key]
    results[name] = r
    reused = list(r["format"]) + [k for k in stage_keys if k in done]
    if reused:
        log(f"  {name}: kept from the earlier run: {', '.join(reused)}")
    eval_keys = [e.key for e in st.data.format_examples()]
    eval_keys += [e.key for k in ("include", "exclude") for e in st.data.keyword_examples(k)]
    for iid in _instruction_ids(settings):
        if iid in r["format"]:
            continue
        with stages.stage(f"{name}: {iid}"):
            res = _format_instruction(model, iid, settings, template, eval_keys)
        r["format"][iid] = res
        log(
            f"  {name} {iid}: no_instr {res['no_instr']:.2f} instr {res['instr']:.2f} "
            f"steer {res['steer']:.2f} instr_steer {res['instr_steer']:.2f} layer {res['layer']}"
        )
        stages.save({name: r})
    length_vecs = None
    if "length" not in r:
        with stages.stage(f"{name}: length"):
            r["length"], length_vecs = _length(model, settings, template, eval_keys)
        log(f"  {name} length: words {r['length']['mean_words']} for {r['length']['alphas']}")
        stages.save({name: r})
    for kind in ("include", "exclude"):
        if f"keywords_{kind}" in r:
            continue
        with stages.stage(f"{name}: keywords {kind}"):
            r[f"keywords_{kind}"] = _keywords(model, kind, settings, template, eval_keys)
        k = r[f"keywords_{kind}"]
        log(f"  {name} keywords {kind}: steer {k['steer']:.2f} vs no_instr {k['no_instr']:.2f}")
        stages.save({name: r})
    if "change_case:english_lowercase" in r["format"] and "composition" not in r:
        with stages.stage(f"{name}: composition"):
            if length_vecs is None:  # resumed after the length stage: the same vector again
                length_vecs = _length_vectors(model, settings, template, eval_keys)[1]
            r["composition"] = _composition(
                model,
                r["format"]["change_case:english_lowercase"],
                length_vecs,
                r["length"],
                settings,
                template,
            )
        stages.save({name: r})


def reproduce(
    out_dir: str | Path,
    *,
    quick: bool = False,
    models: Sequence[str] = DEFAULT_MODELS,
    smoke: bool = False,
    progress: bool | None = None,
    resume: bool = False,
    instructions: Sequence[str] | None = None,
    log=print,
) -> dict:
    """Run every stage for every model; write results.json and report.md.

    `resume`: keep the stages an earlier run with the same settings left in
    `out_dir/details.json` (an interrupted run, or a model run in another folder whose
    section was copied in) and run only the rest. `instructions`: the format instruction
    ids to run (default: every checkable one)."""
    from mechjax.analyses.stages import Stages, prior_details
    from mechjax.analyses.steering.report import results_table, write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {**_settings(quick, smoke), "smoke": smoke}
    if instructions:
        from mechjax import steering as st

        bad = sorted(set(instructions) - set(_instruction_ids({"instructions": None})))
        if bad:
            valid = ", ".join(_instruction_ids({"instructions": None}))
            raise st.ifeval.InstructionError(
                f"no checkable format examples for {bad}; valid: {valid}"
            )
        settings["instructions"] = list(instructions)
    n_instr = len(_instruction_ids(settings))
    t0 = time.time()
    details: dict = {}
    meta: dict = {"settings": {**settings, "quick": quick, "models": list(models)}}
    # each instruction's result stands alone, so a run over other instructions resumes
    free = ("quick", "models", "instructions")
    prior = prior_details(out / "details.json", settings, free) if resume else {}
    with Stages(
        out / "details.json", (n_instr + 4) * len(models), progress=progress, log=log
    ) as stages:
        stages.timings.update(prior.get("stage_seconds", {}))
        stages.save({"settings": meta["settings"]})
        for name in models:
            _model_stages(stages, name, settings, details, prior)
        # the stages' own times (a resumed run adds the earlier run's): model loading apart
        meta["seconds"] = round(sum(t["seconds"] for t in stages.timings.values()), 1)
        meta["wall_seconds_this_run"] = round(time.time() - t0, 1)
        final = stages.finish({**details, **meta})
    from mechjax.analyses.stages import write_json

    write_json(out / "results.json", {**results_table(details, models), "complete": True})
    write_report(out, details, meta)
    log(
        f"wrote {out / 'report.md'}, {out / 'results.json'} and details.json in {meta['seconds']:.0f}s"
    )
    return final


def build_parser() -> argparse.ArgumentParser:
    from mechjax.analyses.stages import reproduction_parser

    ap = reproduction_parser(
        "steering",
        "Reproduce 'Improving Instruction-Following through Activation Steering'.",
        quick_help="4 instructions, short answers (minutes)",
        models=DEFAULT_MODELS,
        out_help="output folder (report.md, results.json)",
    )
    ap.add_argument(
        "--instructions",
        nargs="+",
        default=None,
        help="format instruction ids to run (default: every checkable one; --quick: four)",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep the stages an interrupted run left in --out (same settings) and run the rest",
    )
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """`mechjax reproduce steering --out DIR [--quick] [--models ...]`."""
    from mechjax.analyses.stages import reproduction_main

    return reproduction_main(
        argv, build_parser(), reproduce, resume="resume", instructions="instructions"
    )


if __name__ == "__main__":
    raise SystemExit(main())
