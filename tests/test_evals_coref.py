"""Coreference scorers against the official reference scorer's test cases.

The cases (keys, responses and expected recall, precision, F1) are those of the CoNLL
reference scorer, conll/reference-coreference-scorers (v8.01, CC BY-SA 4.0):
`test/CorefMetricTestConfig.pm` lists the expected values per case id (A1..N6) and metric
(muc, bcub, ceafm, ceafe, blanc); `test/DataFiles/TC-*.key|response` hold the annotations,
written here as their entities (token spans, both ends inclusive, in the order the
scorer reads them). LEA is not in the reference scorer: its expected values are those of
the LEA authors' scorer's test suite (ns-moosavi/coval, `unittests.py`), run on the same
files. As in the reference harness (`test/test.pl`), a case passes when the summed
absolute difference of (recall, precision, F1) is below 1e-4.
"""

from __future__ import annotations

import pytest

from mechjax.errors import InputError
from mechjax.evals import conll, coref

# fmt: off
KEYS = {
    "A": [[(0, 1)], [(3, 6), (9, 9)], [(11, 12), (14, 14), (16, 18)]],
    "B": [[(1, 12), (47, 47)], [(29, 31), (62, 63), (66, 66)]],
    "C": [[(1, 12), (47, 47)], [(29, 31), (62, 63), (66, 66)], [(69, 69), (70, 70)]],
    "D": [[(1, 1), (3, 3), (5, 5), (7, 7), (9, 9)], [(13, 13), (15, 15)],
          [(19, 19), (21, 21), (23, 23), (25, 25), (27, 27)]],
    "E": [[(1, 1), (3, 3), (5, 5), (7, 7), (9, 9)], [(13, 13), (15, 15)],
          [(19, 19), (21, 21), (23, 23), (25, 25), (27, 27)]],
    "F": [[(1, 1), (3, 3), (5, 5), (7, 7)]],
    "G": [[(1, 1), (3, 3)], [(5, 5), (7, 7)]],
    "H": [[(1, 1), (3, 3), (5, 5), (7, 7)]],
    "I": [[(1, 1), (3, 3), (5, 5), (7, 7)]],
    "J": [[(1, 1), (3, 3), (5, 5)]],
    "K": [[(3, 3), (5, 5), (7, 7), (9, 9), (13, 13), (15, 15), (19, 19)]],
    "L": [[(1, 1), (3, 3), (5, 5)], [(7, 7), (9, 9), (11, 11), (13, 13)]],
    "M": [[(0, 1), (3, 6), (9, 9), (11, 12), (14, 14), (16, 18)]],
    "N": [[(0, 1)], [(3, 6)], [(9, 9)], [(11, 12)], [(14, 14)], [(16, 18)]],
}
RESPONSES = {
    "A1": [[(0, 1)], [(3, 6), (9, 9)], [(11, 12), (14, 14), (16, 18)]],
    "A2": [[(0, 1)], [(11, 12), (14, 14)]],
    "A3": [[(0, 1)], [(3, 6), (9, 9), (10, 10)], [(11, 12), (13, 13), (14, 14), (16, 18)],
           [(15, 15)]],
    "A4": [[(0, 1)], [(3, 6), (9, 9), (10, 10)], [(11, 12), (15, 15)], [(13, 13)]],
    "A5": [[(0, 1)], [(4, 5), (3, 6), (9, 9), (10, 10)], [(11, 12), (15, 15)], [(13, 13)]],
    "A6": [[(0, 1)], [(3, 6), (9, 9), (10, 10)], [(4, 5), (13, 13)], [(11, 12), (15, 15)]],
    "A7": [[(0, 1)], [(3, 6), (3, 6), (9, 9), (10, 10)], [(11, 12), (15, 15)], [(13, 13)]],
    "A8": [[(0, 1)], [(3, 6), (9, 9), (10, 10)], [(3, 6), (13, 13)], [(11, 12), (15, 15)]],
    "A9": [[(0, 1)], [(3, 6), (9, 9), (10, 10)], [(3, 6)] * 10 + [(13, 13)],
           [(11, 12), (15, 15)]],
    "A10": [[(0, 1)], [(3, 6)], [(9, 9)], [(11, 12)], [(14, 14)], [(16, 18)]],
    "A11": [[(0, 1), (3, 6), (9, 9), (11, 12), (14, 14), (16, 18)]],
    "A12": [[(0, 1)], [(3, 4)], [(7, 7)], [(9, 9)], [(11, 12)], [(14, 14)], [(16, 16)]],
    "A13": [[(0, 1), (3, 4), (7, 7), (9, 9), (11, 12), (14, 14), (16, 16)]],
    "B1": [[(29, 31), (47, 47), (54, 58)], [(62, 63), (66, 66)]],
    "C1": [[(29, 31), (47, 47), (54, 58)], [(62, 63), (66, 66)], [(69, 69), (70, 70)]],
    "D1": [[(1, 1), (3, 3), (5, 5), (7, 7), (9, 9)],
           [(13, 13), (15, 15), (19, 19), (21, 21), (23, 23), (25, 25), (27, 27)]],
    "E1": [[(1, 1), (3, 3), (5, 5), (7, 7), (9, 9), (19, 19), (21, 21), (23, 23), (25, 25),
            (27, 27)], [(13, 13), (15, 15)]],
    "F1": [[(1, 1), (3, 3)], [(5, 5), (7, 7)]],
    "G1": [[(1, 1), (3, 3), (5, 5), (7, 7)]],
    "H1": [[(1, 1), (3, 3), (5, 5), (7, 7)]],
    "I1": [[(1, 1), (3, 3)], [(5, 5), (7, 7)]],
    "J1": [[(1, 1), (5, 5)]],
    "K1": [[(1, 1), (3, 3), (5, 5)], [(7, 7), (9, 9), (11, 11)], [(13, 13), (15, 15), (17, 17)]],
    "L1": [[(1, 1), (3, 3)], [(5, 5), (7, 7)], [(11, 11), (13, 13), (15, 15)]],
    "M1": [[(0, 1), (3, 6), (9, 9), (11, 12), (14, 14), (16, 18)]],
    "M2": [[(0, 1)], [(3, 6)], [(9, 9)], [(11, 12)], [(14, 14)], [(16, 18)]],
    "M3": [[(0, 1), (3, 6)], [(9, 9), (11, 12), (14, 14)], [(16, 18)]],
    "M4": [[(0, 1), (3, 6), (9, 9), (10, 10), (13, 13), (15, 15)]],
    "M5": [[(0, 1)], [(3, 6)], [(9, 9)], [(10, 10)], [(13, 13)], [(15, 15)]],
    "M6": [[(0, 1), (3, 6)], [(9, 9), (10, 10), (13, 13)], [(15, 15)]],
    "N1": [[(0, 1)], [(3, 6)], [(9, 9)], [(11, 12)], [(14, 14)], [(16, 18)]],
    "N2": [[(0, 1), (3, 6), (9, 9), (11, 12), (14, 14), (16, 18)]],
    "N3": [[(0, 1), (3, 6)], [(9, 9), (11, 12), (14, 14)], [(16, 18)]],
    "N4": [[(0, 1)], [(3, 6)], [(9, 9)], [(10, 10)], [(13, 13)], [(15, 15)]],
    "N5": [[(0, 1), (3, 6), (9, 9), (10, 10), (13, 13), (15, 15)]],
    "N6": [[(0, 1), (3, 6)], [(9, 9), (10, 10), (13, 13)], [(15, 15)]],
}


def _f(r, p):
    return 2 * r * p / (r + p)


# (recall, precision, F1) per case and metric: test/CorefMetricTestConfig.pm
REFERENCE = {
    "A1": {"muc": [1, 1, 1], "bcub": [6 / 6, 6 / 6, 1], "ceafm": [1, 1, 1],
           "ceafe": [1, 1, 1], "blanc": [1, 1, 1]},
    "A2": {"muc": [1 / 3, 1 / 1, 0.5], "bcub": [(7 / 3) / 6, 3 / 3, 14 / 25],
           "ceafm": [0.5, 1, 0.66667], "ceafe": [0.6, 0.9, 0.72],
           "blanc": [0.21591, 1, 0.35385]},
    "A3": {"muc": [3 / 3, 3 / 5, 0.75], "bcub": [6 / 6, (4 + 7 / 12) / 9, 110 / 163],
           "ceafm": [1, 0.66667, 0.8], "ceafe": [0.88571, 0.66429, 0.75918],
           "blanc": [1, 0.42593, 0.59717]},
    "A4": {"muc": [1 / 3, 1 / 3, 1 / 3],
           "bcub": [(3 + 1 / 3) / 6, (1 + 4 / 3 + 1 / 2) / 7, _f(5 / 9, 17 / 42)],
           "ceafm": [0.66667, 0.57143, 0.61538], "ceafe": [0.73333, 0.55, 0.62857],
           "blanc": [0.35227, 0.27206, 0.30357]},
    "A5": {"muc": [1 / 3, 1 / 4, 2 / 7],
           "bcub": [(3 + 1 / 3) / 6, 2.5 / 8, _f(5 / 9, 5 / 16)],
           "ceafm": [0.66667, 0.5, 0.57143], "ceafe": [0.68889, 0.51667, 0.59048],
           "blanc": [0.35227, 0.19048, 0.24716]},
    "A6": {"muc": [1 / 3, 1 / 4, 2 / 7],
           "bcub": [(10 / 3) / 6, (1 + 4 / 3 + 1 / 2) / 8, _f(5 / 9, 17 / 48)],
           "ceafm": [0.66667, 0.5, 0.57143], "ceafe": [0.73333, 0.55, 0.62857],
           "blanc": [0.35227, 0.20870, 0.25817]},
    "A7": {"muc": [1 / 3, 1 / 3, 1 / 3],
           "bcub": [(10 / 3) / 6, (1 + 4 / 3 + 1 / 2) / 7, _f(5 / 9, 17 / 42)],
           "ceafm": [0.66667, 0.57143, 0.61538], "ceafe": [0.73333, 0.55, 0.62857],
           "blanc": [0.35227, 0.27206, 0.30357]},
    "A8": {"muc": [1 / 3, 1 / 3, 1 / 3],
           "bcub": [(10 / 3) / 6, (1 + 4 / 3 + 1 / 2) / 7, _f(5 / 9, 17 / 42)],
           "ceafm": [0.66667, 0.57143, 0.61538], "ceafe": [0.73333, 0.55, 0.62857],
           "blanc": [0.35227, 0.27206, 0.30357]},
    "A9": {"muc": [1 / 3, 1 / 3, 1 / 3],
           "bcub": [(10 / 3) / 6, (1 + 4 / 3 + 1 / 2) / 7, _f(5 / 9, 17 / 42)],
           "ceafm": [0.66667, 0.57143, 0.61538], "ceafe": [0.73333, 0.55, 0.62857],
           "blanc": [0.35227, 0.27206, 0.30357]},
    "A10": {"muc": [0, 0, 0], "bcub": [3 / 6, 6 / 6, 2 / 3], "blanc": [0.5, 0.36667, 0.42308]},
    "A11": {"muc": [3 / 3, 3 / 5, 6 / 8],
            "bcub": [6 / 6, (1 / 6 + 2 * 2 / 6 + 3 * 3 / 6) / 6, 14 / 25],
            "blanc": [0.5, 0.13333, 0.21053]},
    "A12": {"muc": [0, 0, 0],
            "bcub": [(1 + 1 / 2 + 2 / 3) / 6, 4 / 7, _f(13 / 36, 4 / 7)],
            "blanc": [0.22727, 0.11905, 0.15625]},
    "A13": {"muc": [1 / 3, 1 / 6, 2 / 9],
            "bcub": [(1 + 1 / 2 + 2 * 2 / 3) / 6, (1 / 7 + 1 / 7 + 2 * 2 / 7) / 7,
                     _f(17 / 36, 6 / 49)],
            "blanc": [0.125, 0.02381, 0.04]},
    "B1": {"blanc": [1 / 2 * (1 / 4 + 1 / 3)] * 3},
    "C1": {"blanc": [1 / 2 * (2 / 5 + 10 / 16)] * 3},
    "D1": {"muc": [9 / 9, 9 / 10, _f(9 / 9, 9 / 10)], "bcub": [12 / 12, 16 / 21, _f(1, 16 / 21)]},
    "E1": {"muc": [9 / 9, 9 / 10, _f(9 / 9, 9 / 10)], "bcub": [1, 7 / 12, _f(1, 7 / 12)]},
    "F1": {"muc": [2 / 3, 2 / 2, _f(2 / 3, 1)]},
    "G1": {"muc": [2 / 2, 2 / 3, _f(1, 2 / 3)]},
    "H1": {"muc": [1, 1, 1]},
    "I1": {"muc": [2 / 3, 2 / 2, _f(2 / 3, 1)]},
    "J1": {"muc": [1 / 2, 1 / 1, _f(1 / 2, 1)]},
    "K1": {"muc": [3 / 6, 3 / 6, 3 / 6]},
    "L1": {"muc": [2 / 5, 2 / 4, _f(2 / 5, 2 / 4)]},
    "M1": {"muc": [1, 1, 1], "bcub": [1, 1, 1], "ceafm": [1, 1, 1], "ceafe": [1, 1, 1],
           "blanc": [1, 1, 1]},
    "M2": {"muc": [0, 0, 0], "blanc": [0, 0, 0]},
    "M3": {"blanc": [0.26667, 1, 0.42105]},
    "M4": {"blanc": [0.2, 0.2, 0.2]},
    "M5": {"muc": [0, 0, 0], "blanc": [0, 0, 0]},
    "M6": {"blanc": [0.06667, 0.25, 0.10526]},
    "N1": {"muc": [0, 0, 0], "blanc": [1, 1, 1]},
    "N2": {"muc": [0, 0, 0], "blanc": [0, 0, 0]},
    "N3": {"blanc": [0.73333, 1, 0.84615]},
    "N4": {"muc": [0, 0, 0], "blanc": [0.2, 0.2, 0.2]},
    "N5": {"blanc": [0, 0, 0]},
    "N6": {"blanc": [0.13333, 0.18182, 0.15385]},
}

# LEA (recall, precision, F1): ns-moosavi/coval unittests.py, same key/response files
_a3 = (1 + 3 * (1 / 3) + 4 * (3 / 6)) / 9
_d1 = (5 + 7 * (11 / 21)) / 12
_e1 = (10 * (20 / 45) + 2) / 12
LEA = {
    "A1": [1, 1, 1], "A2": [(1 + 3 * (1 / 3)) / 6, 1, 0.5], "A3": [1, _a3, _f(1, _a3)],
    "A4": [(1 + 2 + 0) / 6, (1 + 3 * (1 / 3)) / 7, _f(0.5, 2 / 7)],
    "A5": [(1 + 2) / 6, (1 + 4 * (1 / 6)) / 8, _f(0.5, 5 / 24)],
    "A6": [(1 + 2) / 6, (1 + 3 / 3) / 8, _f(0.5, 1 / 4)],
    "A7": [(1 + 2) / 6, (1 + 3 / 3) / 7, _f(0.5, 2 / 7)],
    "A10": [1 / 6, 1 / 6, 1 / 6], "A11": [(0 + 2 + 3) / 6, 4 / 15, _f(5 / 6, 4 / 15)],
    "A12": [1 / 6, 1 / 7, _f(1 / 6, 1 / 7)], "A13": [(3 / 3) / 6, 1 / 21, _f(1 / 6, 1 / 21)],
    "B1": [(3 / 3) / 5, 2 / 5, _f(1 / 5, 2 / 5)], "C1": [(3 / 3 + 2) / 7, 4 / 7, _f(3 / 7, 4 / 7)],
    "D1": [1, _d1, _f(1, _d1)], "E1": [1, _e1, _f(1, _e1)],
    "F1": [2 / 6, 1, _f(2 / 6, 1)], "G1": [1, 2 / 6, _f(1, 2 / 6)], "H1": [1, 1, 1],
    "I1": [2 / 6, 1, _f(2 / 6, 1)], "J1": [1 / 3, 1, _f(1 / 3, 1)],
    "K1": [3 / 21, 3 / 9, _f(3 / 21, 3 / 9)],
    "L1": [(1 + 4 / 6) / 7, (2 + 3 / 3) / 7, _f((1 + 2 / 3) / 7, 3 / 7)],
    "M1": [1, 1, 1], "M2": [0, 0, 0], "M3": [4 / 15, 5 / 6, _f(4 / 15, 5 / 6)],
    "M4": [3 / 15, 3 / 15, 3 / 15], "M5": [0, 0, 0], "M6": [1 / 15, 2 / 6, _f(1 / 15, 2 / 6)],
    "N1": [1, 1, 1], "N2": [0, 0, 0], "N3": [1 / 6, 1 / 6, 1 / 6], "N4": [3 / 6, 3 / 6, 3 / 6],
    "N5": [0, 0, 0], "N6": [0, 0, 0],
}
# fmt: on

CASES = [(case, metric, v) for case, ms in REFERENCE.items() for metric, v in ms.items()]
CASES += [(case, "lea", v) for case, v in LEA.items()]


def _key(case: str):
    return KEYS[case[0]]


@pytest.mark.parametrize("case,metric,expected", CASES, ids=[f"{c}-{m}" for c, m, _ in CASES])
def test_reference_case(case, metric, expected):
    got = coref.METRICS[metric](_key(case), RESPONSES[case]).score()
    diff = sum(abs(a - b) for a, b in zip(got, expected))
    assert diff < 1e-4, f"{case} {metric}: got {tuple(got)}, expected {tuple(expected)}"


def test_every_reference_case_is_covered():
    # the 36 cases of CorefMetricTestConfig.pm (A1-A13, B1-L1, M1-M6, N1-N6), 91 values
    assert len(REFERENCE) == 36 and sum(map(len, REFERENCE.values())) == 91
    assert set(LEA) <= set(RESPONSES) and len(LEA) == 34  # every case but A8, A9


def test_conll_round_trip_and_corpus_scores():
    """Write every case as CoNLL-2012, read it back, score it as a corpus of one document."""
    for case, response in RESPONSES.items():
        key = _key(case)
        n = max(e for ent in key + response for _, e in ent) + 1
        words = [[f"w{i}" for i in range(n)]]
        k = conll.read_conll(conll.write_conll("doc", words, key))
        r = conll.read_conll(conll.write_conll("doc", words, response))
        assert [sorted(e) for e in k["(doc); part 000"].entities] == [sorted(e) for e in key]
        scores = coref.score_corpus(
            {d: v.entities for d, v in k.items()}, {d: v.entities for d, v in r.items()}
        )
        for metric, expected in REFERENCE[case].items():
            assert sum(abs(a - b) for a, b in zip(scores[metric], expected)) < 1e-4, (case, metric)
        assert scores["conll"].f1 == pytest.approx(
            (scores["muc"].f1 + scores["bcub"].f1 + scores["ceafe"].f1) / 3
        )


CONLL_TEXT = """#begin document (test/doc); part 000
test/doc 0 0 John (1|(2)
test/doc 0 1 Smith 1)
test/doc 0 2 said -
test/doc 0 3 he (1)

test/doc 0 4 and (3+4)
test/doc 0 5 his (1(5
test/doc 0 6 dog 5)1)
test/doc 0 7 . _
#end document
#begin document (test/other); part 001
x 0 0 it (9)
x 0 1 it (9)
#end document
"""


def test_read_conll_brackets():
    docs = conll.read_conll(CONLL_TEXT)
    assert list(docs) == ["(test/doc); part 000", "(test/other); part 001"]
    d = docs["(test/doc); part 000"]
    assert d.tokens == ["John", "Smith", "said", "he", "and", "his", "dog", "."]
    # entity order as the reference scorer reads: one-token mentions of a line first (2
    # before 1), then openings, then closings; split antecedents dropped
    assert d.entities == [[(0, 0)], [(0, 1), (3, 3), (5, 6)], [(5, 6)]]
    assert docs["(test/other); part 001"].entities == [[(0, 0), (1, 1)]]


def test_read_conll_errors(tmp_path):
    with pytest.raises(InputError, match=r"entity 4 closes at token 1 unopened"):
        conll.read_conll("#begin document a\nw 0 0 x -\nw 0 1 y 4)\n#end document\n")
    with pytest.raises(InputError, match=r"still open"):
        conll.read_conll("#begin document a\nw 0 0 x (4\n#end document\n")
    with pytest.raises(InputError, match=r"no '#end document'"):
        conll.read_conll("#begin document a\nw 0 0 x (4)\n")
    with pytest.raises(InputError, match=r"no CoNLL file"):
        conll.read_conll(tmp_path / "missing.conll")
    with pytest.raises(InputError, match=r"outside the 2 tokens"):
        conll.write_conll("d", [["a", "b"]], [[(1, 2)]])


def test_scorer_input_errors():
    with pytest.raises(InputError, match=r"key mention \(1, 1\) appears twice"):
        coref.muc([[(1, 1)], [(1, 1), (2, 2)]], [])
    with pytest.raises(InputError, match=r"unknown coreference metrics \['bogus'\]"):
        coref.score_corpus({"d": [[1, 2]]}, {"d": [[1, 2]]}, ["muc", "bogus"])
    with pytest.raises(InputError, match="CoNLL average needs"):
        coref.conll_f1({"muc": coref.Score(1, 1, 1)})


def test_corpus_is_micro_averaged():
    """Counts are summed over documents before the ratios (not a mean of per-doc F1)."""
    key = {"a": [[1, 2, 3, 4]], "b": [[1, 2]]}
    resp = {"a": [[1, 2], [3, 4]], "b": [[1], [2]]}
    s = coref.score_corpus(key, resp, ["muc"])["muc"]
    assert (s.recall, s.precision) == (2 / 4, 2 / 2)  # (2 + 0) / (3 + 1), (2 + 0) / (2 + 0)
    assert coref.score_corpus(key, {}, ["muc", "blanc"])["muc"] == coref.Score(0, 0, 0)


def test_cli_scores_conll_files(tmp_path, capsys):
    import json

    from mechjax.cli.main import main

    words = [[f"w{i}" for i in range(20)]]
    (tmp_path / "key.conll").write_text(conll.write_conll("doc", words, KEYS["A"]))
    (tmp_path / "resp.conll").write_text(conll.write_conll("doc", words, RESPONSES["A4"]))
    assert main(["eval", "coref", str(tmp_path / "key.conll"), str(tmp_path / "resp.conll"),
                 "--json"]) == 0  # fmt: skip
    got = json.loads(capsys.readouterr().out)
    for metric, expected in REFERENCE["A4"].items():
        assert sum(abs(got[metric][k] - e) for k, e in zip(("recall", "precision", "f1"),
                                                           expected)) < 1e-4  # fmt: skip
    assert set(got) == set(coref.METRICS) | {"conll"}
    assert main(["eval", "coref", str(tmp_path / "key.conll"), str(tmp_path / "resp.conll")]) == 0
    assert "CoNLL F1" in capsys.readouterr().out
    (tmp_path / "bad.conll").write_text("#begin document (doc); part 000\nx 0 0 w (1\n")
    assert main(["eval", "coref", str(tmp_path / "key.conll"), str(tmp_path / "bad.conll")]) == 2
    assert "has no '#end document'" in capsys.readouterr().err
