"""Reproduction (offline analogue): "Groundedness in Retrieval-augmented Long-form
Generation: An Empirical Study" (Stolfo, NAACL Findings 2024; paper 10 of the reference
list).

The paper splits long-form answers of retrieval-augmented QA into sentences, calls a
sentence grounded when an NLI model (TRUE, T5-11B) judges it supported by the retrieved
documents (or by passages from the pre-training corpus), and reports for sentences that
contain a gold answer (EM+ sentences) the fraction that is ungrounded, across 3 datasets,
4 model families and decoding strategies. Claims checked here: (1) a significant fraction
of EM+ sentences is ungrounded; (2) beam search grounds better than greedy decoding and
sampling; (3) larger and instruction-tuned models ground better.

What runs here (`facts.py` for the world): invented organisations, five facts each, one
five-sentence document per organisation; a question about one fact; the two documents
closest to the question by MiniLM similarity are retrieved into the prompt (retrieval
accuracy is reported); SmolLM2-135M-Instruct (chat template) and Gemma 3 270M (a base
model, plain prompt) answer "in three to five sentences" with greedy decoding, beam
search (`mj.beam_search`, 4 beams, HF's defaults: length penalty 1, early stopping off)
and nucleus sampling (temperature 1, top-p 0.9). An answer is cut at its first blank line
or a new "Question:", "Answer:" or "Document" line (a base model goes on with new QA
pairs), and a last sentence cut off by the token budget is dropped. Each sentence is
judged by `mechjax.evals.grounding` (MiniLM cosine to the retrieved documents' sentences,
thresholded where balanced accuracy is best on labelled pairs: paraphrased facts against
value swaps, other organisations' facts and generic sentences), and checked by string
match (`facts.supported`: every number and invented name it states occurs in one
retrieved document).

Fidelity: low, by design. No paper dataset, model or judge is offline; the judge is a
similarity threshold, not entailment (it cannot see a swapped number: its accuracy per
kind of pair is reported), and the pre-training-corpus branch of the paper's grounding
does not exist here (invented facts have no pre-training support, so only the documents
count). Size and instruction tuning are confounded: the larger model is the base one.

Expected: EM+ sentences that the string match finds unsupported (the paper: a
significant fraction), and a higher grounded fraction for beam search than for sampling.
"""

from __future__ import annotations

import argparse
import functools
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mechjax.analyses.groundedness import facts as F

DEFAULT_MODELS = ("smollm2-135m", "gemma3-270m")
DECODINGS = ("greedy", "beam", "nucleus")
ENCODER = "minilm-l6"
INSTRUCTION = "Answer the question in three to five sentences, using the documents."
_CUT = re.compile(r"\n\s*\n|\n\s*(Question|Answer|Document)\b")


def _settings(quick: bool, smoke: bool = False) -> dict:
    if smoke:
        return {"n_questions": 4, "n_calibration": 8, "n_extra": 4, "max_new": 8,
                "batch": 4, "beams": 2, "seed": 0, "bootstrap": 200}  # fmt: skip
    if quick:
        return {"n_questions": 16, "n_calibration": 40, "n_extra": 24, "max_new": 48,
                "batch": 8, "beams": 4, "seed": 0, "bootstrap": 2000}  # fmt: skip
    return {"n_questions": 64, "n_calibration": 100, "n_extra": 64, "max_new": 64,
            "batch": 8, "beams": 4, "seed": 0, "bootstrap": 2000}  # fmt: skip


def build_task(settings: dict, encode) -> dict:
    """The world, the questions, the retrieved documents per question, calibration pairs."""
    n_q, n_cal = settings["n_questions"], settings["n_calibration"]
    orgs = F.make_world(n_q + n_cal + settings["n_extra"], settings["seed"])
    qs = F.questions(orgs[:n_q], settings["seed"])
    docs = [F.document(o) for o in orgs]
    doc_emb, q_emb = encode(docs), encode([q.text for q in qs])
    top = np.argsort(-(q_emb @ doc_emb.T), axis=1)[:, :2]
    retrieved = [[docs[j] for j in row] for row in top]
    hit = [i in row for i, row in enumerate(top)]
    claims, sources, labels, kinds = F.calibration_pairs(
        orgs[n_q : n_q + n_cal], orgs, seed=settings["seed"]
    )
    return {
        "orgs": orgs,
        "questions": qs,
        "retrieved": retrieved,
        "retrieval_hit": hit,
        "calibration": (claims, sources, labels, kinds),
        "names": F.invented_values(orgs),
    }


def prompt_text(question: str, documents: Sequence[str], tokenizer) -> str:
    """The user message (chat template when the tokenizer has one, else a plain prompt)."""
    body = "".join(f"Document {i + 1}: {d}\n" for i, d in enumerate(documents))
    text = f"{body}\nQuestion: {question}\n{INSTRUCTION}"
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template([{"role": "user", "content": text}])
    return text + "\nAnswer:"


def cut_answer(text: str, hit_budget: bool) -> str:
    """The answer part of a generation: up to a blank line or a new Question/Answer/
    Document line; a last sentence cut by the token budget (no end mark) is dropped."""
    from mechjax.steering.ifeval import split_sentences

    text = _CUT.split(text, maxsplit=1)[0].strip()
    if hit_budget:
        sents = split_sentences(text)
        if sents and not re.search(r"[.!?][\"')\]]*$", sents[-1]):
            text = text[: text.rfind(sents[-1])].strip()
    return text


def generate_answers(model, prompts: list[str], decoding: str, settings: dict) -> list[str]:
    """Raw generations for every prompt with one decoding strategy (batched, bucketed)."""
    import jax

    import mechjax as mj
    from mechjax.generation import generate_texts

    kw: dict = {"batch": settings["batch"]}
    if decoding == "beam":
        kw["generate_fn"] = functools.partial(mj.beam_search, num_beams=settings["beams"])
    elif decoding == "nucleus":
        kw.update(temperature=1.0, top_p=0.9, key=jax.random.key(settings["seed"]))
    elif decoding != "greedy":
        raise ValueError(f"decoding {decoding!r}; valid: {DECODINGS}")
    return generate_texts(model, prompts, settings["max_new"], **kw)


def judge_answers(task: dict, raw: list[str], encode, threshold: float, tokenizer, settings):
    """Per answer: its sentences with support, judge verdict, EM+ and string-match truth."""
    from mechjax.evals import grounding as G

    out = []
    for q, docs, text in zip(task["questions"], task["retrieved"], raw):
        hit_budget = len(tokenizer.encode(text)) >= settings["max_new"] - 1
        answer = cut_answer(text, hit_budget)
        rows = G.judge(answer, docs, encode, threshold) if answer else []
        out.append(
            {
                "raw": text,
                "answer": answer,
                "em": q.gold.lower() in answer.lower(),
                "sentences": [
                    {
                        "text": r.sentence,
                        "support": round(r.support, 4),
                        "grounded": r.grounded,
                        "em_plus": q.gold.lower() in r.sentence.lower(),
                        "supported": F.supported(r.sentence, docs, task["names"]),
                    }
                    for r in rows
                ],
            }
        )
    return out


def summarize(answers: list[dict]) -> dict:
    """Rates over answers and sentences: EM, EM+ grounded (judge, string match), all."""
    sents = [s for a in answers for s in a["sentences"]]
    em_plus = [s for s in sents if s["em_plus"]]
    checkable = [s for s in sents if s["supported"] is not None]

    def rate(xs, key):
        vals = [bool(s[key]) for s in xs if s[key] is not None]
        return float(np.mean(vals)) if vals else None

    agree = [s["grounded"] == s["supported"] for s in checkable]
    truth = np.array([s["supported"] for s in checkable], bool)
    pred = np.array([s["grounded"] for s in checkable], bool)
    from mechjax.evals.grounding import balanced_accuracy

    return {
        "n_answers": len(answers),
        "em": float(np.mean([a["em"] for a in answers])) if answers else None,
        "sentences_per_answer": len(sents) / max(1, len(answers)),
        "n_sentences": len(sents),
        "n_em_plus": len(em_plus),
        "em_plus_grounded_judge": rate(em_plus, "grounded"),
        "em_plus_supported_truth": rate(em_plus, "supported"),
        "grounded_judge": rate(sents, "grounded"),
        "n_checkable": len(checkable),
        "supported_truth": rate(checkable, "supported"),
        "judge_vs_truth_accuracy": float(np.mean(agree)) if agree else None,
        "judge_vs_truth_balanced": (
            balanced_accuracy(pred, truth) if truth.any() and (~truth).any() else None
        ),
        "per_question_grounded": [
            float(np.mean([s["grounded"] for s in a["sentences"]])) if a["sentences"] else None
            for a in answers
        ],
        "per_question_supported": [
            (
                float(
                    np.mean([s["supported"] for s in a["sentences"] if s["supported"] is not None])
                )
                if any(s["supported"] is not None for s in a["sentences"])
                else None
            )
            for a in answers
        ],
    }


def paired_difference(a: list, b: list, n_boot: int, seed: int = 0) -> dict:
    """Mean of a - b over questions where both are defined, with a bootstrap 95% interval."""
    pairs = np.array([(x, y) for x, y in zip(a, b) if x is not None and y is not None], float)
    if len(pairs) < 2:
        return {"n": int(len(pairs)), "mean": None, "ci": None}
    d = pairs[:, 0] - pairs[:, 1]
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(axis=1)
    return {
        "n": int(len(d)),
        "mean": float(d.mean()),
        "ci": [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))],
    }


def comparisons(per_decoding: dict, n_boot: int) -> dict:
    """Beam minus greedy and beam minus nucleus, per question (judge and string match)."""
    out = {}
    for other in ("greedy", "nucleus"):
        if "beam" not in per_decoding or other not in per_decoding:
            continue
        for key in ("per_question_grounded", "per_question_supported"):
            out[f"beam - {other}: {key.removeprefix('per_question_')}"] = paired_difference(
                per_decoding["beam"][key], per_decoding[other][key], n_boot
            )
    return out


def run_model(model, task: dict, encode, threshold: float, settings: dict, st, name: str):
    """Every decoding for one model: raw texts, judged sentences, summaries, comparisons."""
    prompts = [
        prompt_text(q.text, d, model.tokenizer)
        for q, d in zip(task["questions"], task["retrieved"])
    ]
    out: dict = {"decodings": {}, "answers": {}}
    for dec in DECODINGS:
        with st.stage(f"{name}: {dec}"):
            raw = generate_answers(model, prompts, dec, settings)
            answers = judge_answers(task, raw, encode, threshold, model.tokenizer, settings)
        out["answers"][dec] = answers
        out["decodings"][dec] = summarize(answers)
        d = out["decodings"][dec]
        st.log(
            f"  {name} {dec}: EM {d['em']:.2f}, {d['n_sentences']} sentences, EM+ {d['n_em_plus']} "
            f"(judge grounded {_f(d['em_plus_grounded_judge'])}, string match "
            f"{_f(d['em_plus_supported_truth'])})"
        )
        st.save({name: out})
    out["comparisons"] = comparisons(out["decodings"], settings["bootstrap"])
    return out


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def calibration_stage(task: dict, encode) -> dict:
    """Fit the judge's threshold on half the labelled pairs, score it on the other half."""
    from mechjax.evals import grounding as G
    from mechjax.steering.ifeval import split_sentences

    claims, sources, labels, kinds = task["calibration"]
    c_emb = encode(claims)
    scores = np.array(
        [
            G.support(c_emb[i : i + 1], encode([s for d in src for s in split_sentences(d)]))[0]
            for i, src in enumerate(sources)
        ]
    )
    fit = np.arange(len(claims)) % 8 < 4  # alternate blocks of 4 (one organisation each)
    cal = G.calibrate(scores[fit], labels[fit])
    held = G.accuracy(
        scores[~fit], labels[~fit], cal.threshold, [kinds[i] for i in np.flatnonzero(~fit)]
    )
    by_kind = {
        k: float(np.mean([scores[i] for i in range(len(kinds)) if kinds[i] == k]))
        for k in set(kinds)
    }
    return {
        "threshold": cal.threshold,
        "fit_balanced_accuracy": cal.balanced_accuracy,
        "n_fit": cal.n_pairs,
        "n_held_out": int((~fit).sum()),
        "held_out": held,
        "mean_support_by_kind": by_kind,
    }


def reproduce(
    out_dir: str | Path,
    *,
    quick: bool = False,
    models: Sequence[str] = DEFAULT_MODELS,
    smoke: bool = False,
    progress: bool | None = None,
    log=print,
) -> dict:
    """Calibration, then every model x decoding; details.json, results.json, report.md."""
    import mechjax as mj
    from mechjax.analyses.groundedness.report import results_table, write_report
    from mechjax.analyses.stages import Stages, write_json
    from mechjax.evals.grounding import SentenceEncoder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {**_settings(quick, smoke), "smoke": smoke}
    t0 = time.time()
    meta: dict = {"settings": {**settings, "quick": quick, "models": list(models)}}
    details: dict = {}
    with Stages(
        out / "details.json", 2 + len(models) * len(DECODINGS), progress=progress, log=log
    ) as st:
        st.save(meta)
        with st.stage("task and retrieval"):
            encode = SentenceEncoder(mj.load(ENCODER))
            task = build_task(settings, encode)
        details["task"] = {
            "n_questions": len(task["questions"]),
            "n_documents": len(task["orgs"]),
            "retrieval_accuracy": float(np.mean(task["retrieval_hit"])),
            "example": {
                "question": task["questions"][0].text,
                "gold": task["questions"][0].gold,
                "retrieved": task["retrieved"][0],
            },
            "questions": [{"text": q.text, "gold": q.gold} for q in task["questions"]],
        }
        with st.stage("judge calibration"):
            details["calibration"] = calibration_stage(task, encode)
        st.save({"task": details["task"], "calibration": details["calibration"]})
        threshold = details["calibration"]["threshold"]
        for name in models:
            model = mj.load(name)
            details[name] = run_model(model, task, encode, threshold, settings, st, name)
            st.save({name: details[name]})
        meta["seconds"] = round(time.time() - t0, 1)
        final = st.finish({**details, **meta})
    write_json(out / "results.json", {**results_table(details, models), "complete": True})
    write_report(out, details, meta)
    log(f"wrote {out / 'report.md'}, results.json and details.json in {meta['seconds']:.0f}s")
    return final


def build_parser() -> argparse.ArgumentParser:
    from mechjax.analyses.stages import reproduction_parser

    return reproduction_parser(
        "groundedness",
        "Groundedness of long-form RAG answers (offline analogue): invented facts, greedy, "
        "beam and nucleus decoding, a MiniLM judge calibrated on labelled pairs.",
        quick_help="16 questions, 48 new tokens per answer",
        models=DEFAULT_MODELS,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`mechjax reproduce groundedness --out DIR [--quick] [--models ...]`."""
    from mechjax.analyses.stages import reproduction_main

    return reproduction_main(argv, build_parser(), reproduce)


if __name__ == "__main__":
    raise SystemExit(main())
