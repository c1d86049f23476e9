"""`mechjax reproduce coreference`: LongtoNotes (Shridhar et al. 2022, arXiv 2210.03650),
coreference in long documents, as an offline analogue on SmolLM2-135M.

    mechjax reproduce coreference --out DIR [--quick] [--smoke]

The paper merges OntoNotes documents that had been split into parts, so coreference
chains get longer (LongtoNotes_s: 2615 tokens per document against OntoNotes' 466), and
reports (README table) that models lose CoNLL F1 on long documents: the span-based model
of Joshi et al. (2020) trained on OntoNotes scores 77.4 on OntoNotes and 70.8 on
LongtoNotes_s; trained on LongtoNotes it scores 71.5 there.

What runs here (stages; details.json rewritten after each):

1. documents: synthetic stories (`documents.py`) with 4 entities whose chains hold exactly
   `chain_length` mentions (names, pronouns, roles), padded with mention-free sentences to
   a target length in tokens, for a grid of (chain length, document length) cells; train
   and test documents per cell.
2. features: SmolLM2 reads each document once; the attention from every mention's last
   token to every earlier mention, per layer and head (`predictor.attention_features`).
3. scorers: an antecedent ranking model on those features (`predictor.fit_scorer`),
   trained three times: on the short documents only (the OntoNotes analogue), on as many
   documents taken from every length (the LongtoNotes analogue, the same amount of data),
   and on every training document.
4. evaluate: gold mentions, predicted clusters (best-first), the CoNLL scores of
   `mechjax.evals.coref` per cell (MUC, B-cubed, CEAF-e, their mean the CoNLL F1; LEA,
   BLANC, CEAF-m beside), antecedent accuracy by mention kind and distance; the text's own
   resolution rule as a check that every chain is recoverable from the text.

Fidelity: OntoNotes and LongtoNotes need an LDC licence and are not offline, and no
trained coreference model is; so the documents are synthetic (gold mentions given, every
pronoun resolvable by recency and gender), and the predictor is a linear probe of a small
pretrained LM's attention, not a span-based or memory model. What carries over is the
measurement: CoNLL F1 with the official scorer's definitions, as chains and documents
grow, and the effect of training on long documents.
"""

from __future__ import annotations

import argparse
import random
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PREDICTORS = ("short_trained", "mixed_trained", "all_trained", "rule")

_BASE: dict[str, Any] = {
    "model": "smollm2-135m",
    "n_entities": 4,
    "chains": [2, 4, 8, 16],
    "lengths": [128, 256, 512, 1024],
    "short_max": 256,  # the "short" training documents: at most this many tokens
    "n_train": 6,  # documents per cell
    "n_test": 6,
    "scorer_steps": 400,
    "seed": 0,
}
SETTINGS: dict[str, dict[str, Any]] = {
    "full": _BASE,
    "quick": {**_BASE, "chains": [2, 4, 8], "lengths": [128, 256, 512], "n_train": 4, "n_test": 4},
    "smoke": {  # seconds, for tests: numbers not meaningful
        **_BASE,
        "n_entities": 2,
        "chains": [2, 3],
        "lengths": [64, 128],
        "short_max": 64,
        "n_train": 2,
        "n_test": 2,
        "scorer_steps": 5,
    },
}


def cell_name(chain: int, length: int) -> str:
    return f"c{chain}_t{length}"


def _n_tokens(model, text: str) -> int:
    return len(model.tokenizer.encode(text))  # with the BOS the model's convention adds


def build_documents(model, settings: dict) -> dict[str, dict[str, list]]:
    """Per feasible cell, train and test documents of (about, at most) the target length."""
    from mechjax.analyses.coreference.documents import make_document

    s = settings
    cells: dict[str, dict[str, list]] = {}
    for ci, chain in enumerate(s["chains"]):
        for li, length in enumerate(s["lengths"]):
            docs: dict[str, list] = {"train": [], "test": []}
            feasible = True
            for split, n, offset in (("train", s["n_train"], 0), ("test", s["n_test"], 500)):
                for k in range(n):
                    seed = ((s["seed"] * 100 + ci) * 100 + li) * 1000 + offset + k

                    def make(filler: int, seed=seed):
                        return make_document(random.Random(seed), s["n_entities"], chain, filler)

                    base = _n_tokens(model, make(0).text)
                    if base > length:
                        feasible = False
                        break
                    filler = max(0, (length - base) // 8)
                    doc = make(filler)
                    while filler > 0 and _n_tokens(model, doc.text) > length:
                        filler -= 1
                        doc = make(filler)
                    docs[split].append(doc)
                if not feasible:
                    break
            if feasible:
                cells[cell_name(chain, length)] = docs
    return cells


def _features(
    model, cells: dict, settings: dict, cache: Path, log, cached: list | None = None
) -> dict[str, dict[str, list]]:
    """Attention features of every document; each cell cached to disk (a rerun reuses it,
    and its name is appended to `cached`)."""
    from mechjax.analyses.coreference.predictor import DocFeatures, attention_features

    m_pad = settings["n_entities"] * max(settings["chains"])
    cache.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, list]] = {}
    for name, docs in cells.items():
        path = cache / f"{name}.npz"
        width = int(name.split("_t")[1])
        if path.exists():
            if cached is not None:
                cached.append(name)
            z = np.load(path, allow_pickle=False)
            out[name] = {
                split: [
                    DocFeatures(
                        z[f"{split}{k}_feats"],
                        int(z[f"{split}{k}_n"]),
                        z[f"{split}{k}_kinds"],
                        z[f"{split}{k}_entity"],
                        int(z[f"{split}{k}_tokens"]),
                    )  # fmt: skip
                    for k in range(len(docs[split]))
                ]
                for split in docs
            }
            continue
        t0 = time.time()
        out[name] = {
            split: [attention_features(model, d, width, m_pad) for d in docs[split]]
            for split in docs
        }
        arrays = {}
        for split, feats in out[name].items():
            for k, f in enumerate(feats):
                arrays.update(
                    {
                        f"{split}{k}_feats": f.feats.astype(np.float32),
                        f"{split}{k}_n": np.asarray(f.n_mentions),
                        f"{split}{k}_kinds": f.kinds,
                        f"{split}{k}_entity": f.entity,
                        f"{split}{k}_tokens": np.asarray(f.n_tokens),
                    }
                )
        np.savez(path, **arrays)
        log(f"  features {name}: {sum(map(len, docs.values()))} documents, {time.time() - t0:.0f}s")
    return out


def _distance_bins() -> list[tuple[int, int]]:
    return [(0, 16), (16, 64), (64, 256), (256, 1_000_000)]


def evaluate_cell(docs: list, feats: list, scorer) -> dict:
    """CoNLL scores of one cell's test documents, and antecedent accuracy per kind/distance."""
    from mechjax.analyses.coreference.predictor import KINDS, clusters_of, predict_antecedents
    from mechjax.evals import coref

    key, resp = {}, {}
    kinds = {k: [0, 0] for k in KINDS + ("first",)}
    bins = _distance_bins()
    by_dist = [[0, 0] for _ in bins]
    dist_by_doc = []  # per document, [hits, links] per distance bin
    for n, (doc, f) in enumerate(zip(docs, feats)):
        mine = [[0, 0] for _ in bins]
        dist_by_doc.append(mine)
        ante = predict_antecedents(scorer, f)
        spans = [m.words for m in doc.mentions]
        key[str(n)] = doc.chains
        resp[str(n)] = clusters_of(ante, spans)
        seen: dict[int, int] = {}  # entity -> index of its latest mention
        for i, m in enumerate(doc.mentions):
            if m.entity not in seen:
                kinds["first"][0] += int(ante[i] < 0)
                kinds["first"][1] += 1
            else:
                ok = int(ante[i] >= 0 and doc.mentions[ante[i]].entity == m.entity)
                kinds[m.kind][0] += ok
                kinds[m.kind][1] += 1
                dist = m.words[0] - doc.mentions[seen[m.entity]].words[1]
                b = next(k for k, (lo, hi) in enumerate(bins) if lo <= dist < hi)
                by_dist[b][0] += ok
                by_dist[b][1] += 1
                mine[b][0] += ok
                mine[b][1] += 1
            seen[m.entity] = i
    scores = coref.score_corpus(key, resp)
    return {
        "scores": {m: list(v) for m, v in scores.items()},
        "doc_counts": doc_counts(key, resp),
        "antecedent_accuracy": {k: (a / n if n else None) for k, (a, n) in kinds.items()},
        "accuracy_by_distance": [a / n if n else None for a, n in by_dist],
        "n_by_distance": [n for _, n in by_dist],
        "distance_by_doc": dist_by_doc,
    }


def doc_counts(key: dict, resp: dict) -> dict[str, list]:
    """Per document, the MUC, B-cubed and CEAF-e counts (recall and precision numerators
    and denominators): a resample of documents sums them into a corpus score."""
    from mechjax.evals import coref

    out: dict[str, list] = {m: [] for m in ("muc", "bcub", "ceafe")}
    for name in key:
        for m, c in coref.score_document(key[name], resp[name], out).items():
            out[m].append([float(x) for x in c])
    return out


def evaluate_rule(docs: list) -> dict:
    from mechjax.analyses.coreference.documents import rule_clusters
    from mechjax.evals import coref

    key = {str(n): d.chains for n, d in enumerate(docs)}
    resp = {str(n): rule_clusters(d) for n, d in enumerate(docs)}
    return {"scores": {m: list(v) for m, v in coref.score_corpus(key, resp).items()}}


def _cell_stats(docs: list, feats: list) -> dict:
    mentions = [len(d.mentions) for d in docs]
    return {
        "tokens": float(np.mean([f.n_tokens for f in feats])),
        "mentions": float(np.mean(mentions)),
        "filler": float(np.mean([d.n_filler for d in docs])),
        "pronoun_share": float(np.mean([m.kind == "pronoun" for d in docs for m in d.mentions])),
    }


def reproduce(
    out_dir: str | Path,
    *,
    quick: bool = False,
    smoke: bool = False,
    model_name: str | None = None,
    progress: bool | None = None,
    keep_features: bool = False,
    log=print,
) -> dict:
    """Documents, features, scorers, evaluation per cell; details.json, results.json, report."""
    import mechjax as mj
    from mechjax.analyses.coreference.predictor import fit_scorer
    from mechjax.analyses.coreference.report import write_figures, write_report
    from mechjax.analyses.stages import Stages, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(SETTINGS["smoke" if smoke else "quick" if quick else "full"])
    if model_name:
        settings["model"] = model_name
    t0 = time.time()
    meta: dict = {
        "settings": {**settings, "quick": quick, "smoke": smoke, "models": [settings["model"]]}
    }
    details: dict = {}
    with Stages(out / "details.json", 4, progress=progress, log=log) as st:
        st.save(meta)
        model = mj.load(settings["model"])
        with st.stage("documents"):
            cells = build_documents(model, settings)
        details["cells"] = {}
        cached: list[str] = []
        with st.stage("features"):
            feats = _features(model, cells, settings, out / "features", st.log, cached)
        details["features_from_cache"] = cached
        for name in cells:
            details["cells"][name] = {
                "train": _cell_stats(cells[name]["train"], feats[name]["train"]),
                "test": _cell_stats(cells[name]["test"], feats[name]["test"]),
            }
        example = cells[next(iter(cells))]["test"][0]
        details["example"] = {"text": example.text, "chains": example.chains}
        st.save({"cells": details["cells"], "example": details["example"]})
        with st.stage("scorers"):
            short = [
                f
                for name in cells
                if int(name.split("_t")[1]) <= settings["short_max"]
                for f in feats[name]["train"]
            ]
            every = [f for name in cells for f in feats[name]["train"]]
            # as many documents as the short set, taken in turn from every cell: the
            # effect of long documents apart from the amount of training data
            turns = [feats[name]["train"] for name in cells]
            mixed = [t[k] for k in range(max(map(len, turns))) for t in turns if k < len(t)]
            mixed = mixed[: len(short)]
            train_sets = {"short_trained": short, "mixed_trained": mixed, "all_trained": every}
            scorers = {
                p: fit_scorer(docs, steps=settings["scorer_steps"])
                for p, docs in train_sets.items()
            }
        details["n_train_docs"] = {p: len(docs) for p, docs in train_sets.items()}
        with st.stage("evaluate"):
            results: dict = {p: {} for p in PREDICTORS}
            for name in cells:
                test_docs, test_feats = cells[name]["test"], feats[name]["test"]
                for p, sc in scorers.items():
                    results[p][name] = evaluate_cell(test_docs, test_feats, sc)
                results["rule"][name] = evaluate_rule(test_docs)
                row = ", ".join(
                    f"{p} {results[p][name]['scores']['conll'][2]:.3f}" for p in PREDICTORS
                )
                st.log(f"  {name}: CoNLL F1 {row}")
            details["results"] = results
            details["head_weights"] = {
                p: np.asarray(sc.w / sc.sd).reshape(model.config.n_layers, -1).round(4).tolist()
                for p, sc in scorers.items()
            }
        meta["seconds"] = round(time.time() - t0, 1)
        final = st.finish({**details, **meta})
    write_json(out / "results.json", {**results_table(final), "complete": True})
    write_figures(out, final)
    write_report(out, final, meta)
    if not keep_features:
        shutil.rmtree(out / "features", ignore_errors=True)
    log(f"wrote {out / 'report.md'}, results.json and details.json in {meta['seconds']:.0f}s")
    return final


def results_table(details: dict, models: Sequence[str] | None = None) -> dict:
    """results.json: CoNLL F1 per predictor and cell, with the cells' sizes."""
    res = details.get("results", {})
    return {
        "conll_f1": {
            p: {c: r["scores"]["conll"][2] for c, r in res.get(p, {}).items()} for p in PREDICTORS
        },
        "cells": {c: v["test"] for c, v in details.get("cells", {}).items()},
        "model": details["settings"]["model"],
    }


def build_parser() -> argparse.ArgumentParser:
    from mechjax.analyses.stages import reproduction_parser

    ap = reproduction_parser(
        "coreference",
        "Coreference in long documents (LongtoNotes) as an offline analogue on SmolLM2.",
        quick_help="chains of 2-8 mentions, documents of 128-512 tokens, 4+4 per cell",
    )
    ap.add_argument("--model", default=None, help="registered model (default smollm2-135m)")
    ap.add_argument(
        "--keep-features",
        action="store_true",
        help="keep DIR/features (a killed run reuses the cells it finished either way)",
    )
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """`mechjax reproduce coreference --out DIR [--quick] [--smoke]`."""
    from mechjax.analyses.stages import reproduction_main

    return reproduction_main(
        argv, build_parser(), reproduce, model_name="model", keep_features="keep_features"
    )


if __name__ == "__main__":
    raise SystemExit(main())
