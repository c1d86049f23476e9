"""The arithmetic CMA reproduction end to end on SmolLM2-135M, a few pairs and four of
the 30 layers: files, results, report, and the largest IE cell of every grid against
single patched forwards."""

import json

import numpy as np
import pytest

from mechjax.analyses import arithmetic_cma

LAYERS = [0, 10, 20, 29]  # one early, one middle and two late layers of SmolLM2's 30


@pytest.mark.slow
def test_reproduction_writes_grids_results_report_and_the_retrieval_contrast(tmp_path):
    out = tmp_path / "cma"
    argv = ["--out", str(out), "--n", "2", "--batch", "2", "--ops", "*", "--templates", "5"]
    argv += ["--contrast", "2", "--layers", *map(str, LAYERS), "--quiet"]
    assert arithmetic_cma.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is True and results["layers"] == LAYERS
    grids = np.load(out / "cma.npz")
    (run,), contrast = results["runs"], results["contrast"]
    assert (run["op"], run["template"], run["task"]) == ("*", 5, "arithmetic")
    assert contrast["task"] == "number_retrieval" and contrast["tce"] is None
    assert "How" in "".join(grids["retrieval/labels"].tolist())
    late = [i for i, layer in enumerate(LAYERS) if layer >= 20]  # the late third of 30
    for tag, rec in (("times_t5", run), ("retrieval", contrast)):
        assert grids[f"{tag}/layers"].tolist() == LAYERS
        for kind in ("attn_out", "mlp_out"):
            g = grids[f"{tag}/{kind}"]
            assert g.shape == (len(LAYERS), len(grids[f"{tag}/labels"])) and np.isfinite(g).all()
            assert (out / f"{tag}_{kind}.png").stat().st_size > 10_000
            # the per-pair IE of the largest cell comes from single patched forwards
            # (mediation.ie_per_pair), the grid from the compiled sweep: same mean
            cell = rec[kind]["top_cell_pairs"]
            assert g[LAYERS.index(cell["layer"]), cell["pos"]] == pytest.approx(g.max())
            assert cell["mean"] == pytest.approx(g.max(), rel=1e-3, abs=1e-5)
            assert rec[kind]["roles"]["end/late"] == pytest.approx(
                g[late, -1].mean(), rel=1e-6, abs=1e-9
            )
            assert rec[kind]["roles"]["end/early"] == pytest.approx(g[0, -1], rel=1e-6, abs=1e-9)

    report = (out / "report.md").read_text()
    first = report.split("\n\n")[1]
    assert first.startswith("Fidelity:") and "SmolLM2-135M" in first and "GPT-J" in first
    assert "2 base/alt pairs" in first and "dequantized" in first
    claims = report.split("## Claims")[1].split("\n## ")[0]
    table = [line for line in claims.splitlines() if line.startswith("|")]
    assert table[0] == "| the paper | this run |"
    ours = "\n".join(table)
    # the measured numbers of results.json, as the report prints them (4 decimals)
    measured = [run["tce"], run["dce"], run["accuracy"], contrast["accuracy"]]
    measured += [run[k]["roles"]["end/late"] for k in ("attn_out", "mlp_out")]
    measured += [contrast["mlp_out"]["roles"]["end/late"]]
    measured += [run["mlp_out"]["roles"]["op2/early"], run["attn_out"]["roles"]["end/middle"]]
    measured += [run[k]["top"][0]["ie"] for k in ("attn_out", "mlp_out")]
    for x in measured:
        assert f"{x:.4f}" in ours, (x, ours)
    for fig in run["figures"] + contrast["figures"]:
        assert f"]({fig})" in report and (out / fig).exists()
