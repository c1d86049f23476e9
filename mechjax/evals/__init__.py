"""Evaluations of math reasoning and of answer calibration.

This subpackage owns the evaluation protocols of three papers (numbered as in the
project's reference list):

- `hle`, `calibration`, `answers`: Humanity's Last Exam's metrics (paper 8): accuracy over
  all questions, the Wald 95% interval, the RMS calibration error with bins of 100 (HLE's
  loop, which skips the last bin, and a fixed variant), parsing of "Answer:" /
  "Confidence:" model output, and exact-match judging. There is no judge model offline:
  answers are judged by normalised exact match only.
- `worlds`, `templates`: a MathWorld-style word-problem generator (agents, entities,
  quantities; transfer, comparison, part-whole and rate relations) and its sentence
  templates, reproducible from a seed.
- `biases`, `stats`: the paired problem sets of the cognitive-bias tests (paper 9:
  consistency, transfer vs comparison, carry) and paired statistics (paired t, McNemar).
- `robustness`, `robustness_pairs`: the measures of the causal robustness framework
  (paper 4) over probability vectors with bootstrap intervals, and its intervention
  types as generators of (base, intervened) problem pairs; `number_probs`: P(R) over
  candidate numbers from a model (multi-token numbers by mean token log-probability).

- `coref`, `conll`: the CoNLL coreference scores (MUC, B-cubed, CEAF-m, CEAF-e, BLANC,
  LEA, the CoNLL average; paper 2) equal to the official reference scorer on its test
  cases, and reading/writing of the CoNLL-2012 format.

Everything here is pure Python / numpy except `hle.run_jsonl` and `number_probs`, which
run a model.
"""

from mechjax.evals import (
    answers,
    biases,
    calibration,
    conll,
    coref,
    hle,
    number_probs,
    robustness,
    robustness_pairs,
    stats,
    templates,
    worlds,
)

__all__ = [
    "answers",
    "biases",
    "calibration",
    "conll",
    "coref",
    "hle",
    "number_probs",
    "robustness",
    "robustness_pairs",
    "stats",
    "templates",
    "worlds",
]
