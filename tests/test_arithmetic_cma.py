"""The arithmetic CMA reproduction end to end on SmolLM2-135M, a few pairs: files,
summary, and the largest IE cell of every grid against single patched forwards."""

import json

import numpy as np
import pytest

from mechjax.analyses import arithmetic_cma


@pytest.mark.slow
def test_reproduction_writes_grids_summary_and_the_retrieval_contrast(tmp_path):
    out = tmp_path / "cma"
    assert (
        arithmetic_cma.main(
            [
                "--out",
                str(out),
                "--n",
                "2",
                "--batch",
                "2",
                "--ops",
                "*",
                "--templates",
                "5",
                "--contrast",
                "2",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    grids = np.load(out / "cma.npz")
    (run,), contrast = summary["runs"], summary["contrast"]
    assert (run["op"], run["template"], run["task"]) == ("*", 5, "arithmetic")
    assert contrast["task"] == "number_retrieval" and contrast["tce"] is None
    assert "How" in "".join(grids["retrieval/labels"].tolist())
    for tag, rec in (("times_t5", run), ("retrieval", contrast)):
        for kind in ("attn_out", "mlp_out"):
            g = grids[f"{tag}/{kind}"]
            assert g.shape == (30, len(grids[f"{tag}/labels"])) and np.isfinite(g).all()
            assert (out / f"{tag}_{kind}.png").stat().st_size > 10_000
            # the per-pair IE of the largest cell comes from single patched forwards
            # (mediation.ie_per_pair), the grid from the compiled sweep: same mean
            cell = rec[kind]["top_cell_pairs"]
            assert g[cell["layer"], cell["pos"]] == pytest.approx(g.max())
            assert cell["mean"] == pytest.approx(g.max(), rel=1e-3, abs=1e-5)
            assert rec[kind]["roles"]["end/late"] == pytest.approx(
                g[20:, -1].mean(), rel=1e-6, abs=1e-9
            )
