"""`mechjax reproduce NAME [options]`: run one paper reproduction of `mechjax.analyses`.

Each reproduction owns its options: its module's `main(argv)` parses everything after
NAME, so `mechjax reproduce NAME --help` prints that reproduction's own help.
`mechjax reproduce --list` names them all: each one's summary, its paper, and whether its
full run is committed under `docs/reproductions/` (read from the checkout next to the
package; an installed wheel has no docs, and says so).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple


class Reproduction(NamedTuple):
    module: str  # imported only when the reproduction runs (it pulls in jax)
    summary: str  # the line `--list` prints
    # the paper's title and identifier; "" = the summary's leading "Title (Authors year)"
    paper: str = ""
    # the committed full run's folder, relative to the repository; "" = docs/reproductions/NAME
    docs: str = ""


REPRODUCTIONS = {
    "induction-emergence": Reproduction(
        "mechjax.analyses.induction",
        "Emergence of induction heads (Musat et al. 2025): 19-dim subspace, "
        "t_ICL ~ N^2, order of emergence; toy models, CPU, --quick in minutes",
        paper=(
            "On the Emergence of Induction Heads for In-Context Learning (Musat et "
            "al., arXiv 2511.01033)"
        ),
    ),
    "entropy-neurons": Reproduction(
        "mechjax.analyses.entropy_neurons",
        "Confidence regulation neurons (Stolfo, Wu et al. 2024): entropy neurons' null-space "
        "writes, LN-mediated effects, token-frequency neurons, induction; SmolLM2, Gemma 3",
        paper="Confidence Regulation Neurons (Stolfo, Wu et al., NeurIPS 2024)",
    ),
    "arithmetic-cma": Reproduction(
        "mechjax.analyses.arithmetic_cma",
        "Arithmetic reasoning via causal mediation (Stolfo et al. 2023): indirect "
        "effects of attention/MLP outputs, TCE/DCE, number-retrieval control; SmolLM2",
        paper=(
            "A Mechanistic Interpretation of Arithmetic Reasoning using Causal "
            "Mediation Analysis (Stolfo, Belinkov, Sachan, EMNLP 2023)"
        ),
    ),
    "steering": Reproduction(
        "mechjax.analyses.steering",
        "Instruction following through activation steering (Stolfo et al. 2025): format, "
        "length and keyword vectors, layer search, composition; SmolLM2, Gemma 3",
        paper=(
            "Improving Instruction-Following through Activation Steering (Stolfo et al., ICLR 2025)"
        ),
    ),
    "arithmetic-probes": Reproduction(
        "mechjax.analyses.arithmetic_probes",
        "Probing for arithmetic errors (Sun, Stolfo, Sachan 2025): digit probes per layer "
        "for predicted and gold answers, error detectors, CoT transfer; SmolLM2, Gemma 3",
        paper="Probing for Arithmetic Errors in LMs (Sun, Stolfo, Sachan, EMNLP 2025)",
    ),
    "robustness": Reproduction(
        "mechjax.analyses.robustness",
        "Causal robustness of math reasoning (Stolfo, Jin et al. 2023): TCE and DCE of "
        "operands, operation and surface text on P(R), controls; SmolLM2, Gemma 3",
        paper=(
            "A Causal Framework to Quantify the Robustness of Mathematical "
            "Reasoning (Stolfo, Jin et al., ACL 2023)"
        ),
    ),
    "cognitive-biases": Reproduction(
        "mechjax.analyses.cognitive_biases",
        "Cognitive biases in math word problems (Opedal, Stolfo et al. 2024): consistency, "
        "transfer vs comparison, carry; direct and CoT; a digit-level transformer; SmolLM2",
        paper=(
            "Do LMs Exhibit the Same Cognitive Biases in Problem Solving as Human "
            "Learners? (Opedal, Stolfo et al., ICML 2024)"
        ),
    ),
    "das": Reproduction(
        "mechjax.analyses.das",
        "Causal variables (MIB, Mueller et al. 2025): DAS, boundless DAS, PCA and neuron "
        "masks, IIA per layer on IOI variables; a toy model with a known site; SmolLM2, Gemma 3",
        paper=(
            "MIB: A Mechanistic Interpretability Benchmark (Mueller, Geiger, "
            "Wiegreffe et al., ICML 2025)"
        ),
    ),
    "dense-latents": Reproduction(
        "mechjax.analyses.dense_latents",
        "Dense SAE latents are features (Sun, Stolfo et al. 2025): TopK and AbsoluteTopK "
        "SAEs, density, antipodal pairs, dense-subspace ablation and retraining; SmolLM2",
    ),
    "mib": Reproduction(
        "mechjax.analyses.mib",
        "Circuit localization (MIB, Mueller et al. 2025): CPR/CMD of EAP, EAP-IG, IFR, "
        "learned masks and random on IOI and addition; AUROC on a known circuit; SmolLM2, Gemma 3",
        paper=(
            "MIB: A Mechanistic Interpretability Benchmark (Mueller, Geiger, "
            "Wiegreffe et al., ICML 2025)"
        ),
    ),
    "mechanistic-probe": Reproduction(
        "mechjax.analyses.mechanistic_probe",
        "MechanisticProbe (Hou et al. 2023): the reasoning tree read from attention "
        "(S_P1, S_P2) in a GPT-2 trained on k-th smallest, vs random init; SmolLM2",
        paper=(
            "Towards a Mechanistic Interpretation of Multi-Step Reasoning (Hou et al., EMNLP 2023)"
        ),
    ),
    "groundedness": Reproduction(
        "mechjax.analyses.groundedness",
        "Groundedness in retrieval-augmented long-form generation (Stolfo 2024), offline "
        "analogue: invented facts, greedy, beam and nucleus answers, a MiniLM judge "
        "calibrated on labelled pairs, string-match truth; SmolLM2, Gemma 3",
        paper=(
            "Groundedness in Retrieval-augmented Long-form Generation: An Empirical Study "
            "(Stolfo, NAACL Findings 2024)"
        ),
    ),
    "fluid-representations": Reproduction(
        "mechjax.analyses.fluid_representations",
        "Fluid representations in reasoning models (Kharlapenko, Stolfo et al. 2026), offline "
        "analogue: Blocksworld traces under standard, Mystery and random names; in- and "
        "cross-naming similarity, injection and replacement; SmolLM2, Gemma 3",
        paper="Fluid Representations in Reasoning Models (Kharlapenko et al., arXiv 2602.04843)",
    ),
    "socratic-cot": Reproduction(
        "mechjax.analyses.socratic_cot",
        "Socratic CoT distillation (Shridhar, Stolfo, Sachan 2023): answer-only, CoT, "
        "decomposer + solver and unified students trained on a rule-based teacher; offline",
    ),
    "coreference": Reproduction(
        "mechjax.analyses.coreference",
        "Coreference in long documents (LongtoNotes, Shridhar et al. 2022): CoNLL scorers; "
        "CoNLL F1 of an attention-based antecedent ranker by chain and document length; SmolLM2",
    ),
}


REPO = Path(__file__).resolve().parents[2]  # the checkout, in an editable install


def paper_of(r: Reproduction) -> str:
    """The paper a reproduction reruns: its `paper` field, else its summary up to the
    first "): " (every summary opens with "Title (Authors year)")."""
    if r.paper:
        return r.paper
    head, sep, _ = r.summary.partition("): ")
    return head + ")" if sep else r.summary


def full_run_status(name: str, r: Reproduction, repo: Path = REPO) -> str:
    """Whether the full run is committed: its folder, and what its results.json says
    (a quick run, or an unfinished one, is named as such)."""
    rel = r.docs or f"docs/reproductions/{name}"
    folder = repo / rel
    if not (repo / "docs" / "reproductions").is_dir():
        return f"full run: not in this install (see {rel} in the repository)"
    if not (folder / "report.md").is_file():
        return "full run: not committed"
    notes = []
    try:
        res = json.loads((folder / "results.json").read_text())
    except (OSError, ValueError):
        res = None
        notes.append("no results.json")
    if isinstance(res, dict):
        settings = res.get("settings")
        if res.get("quick") or (isinstance(settings, dict) and settings.get("quick")):
            notes.append("a --quick run")
        if res.get("complete") is False:
            notes.append("incomplete")
    return f"full run: {rel}" + (f" ({', '.join(notes)})" if notes else "")


def list_reproductions(out=None, repo: Path = REPO) -> int:
    """Print every reproduction: name and summary, then its paper and full-run status."""
    import sys

    out = out or sys.stdout
    width = max(len(n) for n in REPRODUCTIONS)
    for name, r in sorted(REPRODUCTIONS.items()):
        print(f"{name:{width}s}  {r.summary}", file=out)
        print(f"{'':{width}s}    paper: {paper_of(r)}", file=out)
        print(f"{'':{width}s}    {full_run_status(name, r, repo)}", file=out)
    print("\n`mechjax reproduce NAME --help` shows a reproduction's own options.", file=out)
    return 0


def cmd_reproduce(args, rest: list[str]) -> int:
    """Forward everything after NAME (help included) to the reproduction's `main`."""
    import importlib

    mod = importlib.import_module(REPRODUCTIONS[args.name].module)
    return mod.main(["--help", *rest] if args.help else rest) or 0
