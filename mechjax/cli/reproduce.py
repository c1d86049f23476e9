"""`mechjax reproduce NAME [options]`: run one paper reproduction of `mechjax.analyses`.

Each reproduction owns its options: its module's `main(argv)` parses everything after
NAME, so `mechjax reproduce NAME --help` prints that reproduction's own help.
`mechjax reproduce --list` names them all with one line each.
"""

from __future__ import annotations

from typing import NamedTuple


class Reproduction(NamedTuple):
    module: str  # imported only when the reproduction runs (it pulls in jax)
    summary: str  # the line `--list` prints


REPRODUCTIONS = {
    "induction-emergence": Reproduction(
        "mechjax.analyses.induction",
        "Emergence of induction heads (Musat et al. 2025): 19-dim subspace, "
        "t_ICL ~ N^2, order of emergence; toy models, CPU, --quick in minutes",
    ),
    "entropy-neurons": Reproduction(
        "mechjax.analyses.entropy_neurons",
        "Confidence regulation neurons (Stolfo, Wu et al. 2024): entropy neurons' null-space "
        "writes, LN-mediated effects, token-frequency neurons, induction; SmolLM2, Gemma 3",
    ),
    "arithmetic-cma": Reproduction(
        "mechjax.analyses.arithmetic_cma",
        "Arithmetic reasoning via causal mediation (Stolfo et al. 2023): indirect "
        "effects of attention/MLP outputs, TCE/DCE, number-retrieval control; SmolLM2",
    ),
    "steering": Reproduction(
        "mechjax.analyses.steering",
        "Instruction following through activation steering (Stolfo et al. 2025): format, "
        "length and keyword vectors, layer search, composition; SmolLM2, Gemma 3",
    ),
    "arithmetic-probes": Reproduction(
        "mechjax.analyses.arithmetic_probes",
        "Probing for arithmetic errors (Sun, Stolfo, Sachan 2025): digit probes per layer "
        "for predicted and gold answers, error detectors, CoT transfer; SmolLM2, Gemma 3",
    ),
    "robustness": Reproduction(
        "mechjax.analyses.robustness",
        "Causal robustness of math reasoning (Stolfo, Jin et al. 2023): TCE and DCE of "
        "operands, operation and surface text on P(R), controls; SmolLM2, Gemma 3",
    ),
    "cognitive-biases": Reproduction(
        "mechjax.analyses.cognitive_biases",
        "Cognitive biases in math word problems (Opedal, Stolfo et al. 2024): consistency, "
        "transfer vs comparison, carry; direct and CoT; a digit-level transformer; SmolLM2",
    ),
    "das": Reproduction(
        "mechjax.analyses.das",
        "Causal variables (MIB, Mueller et al. 2025): DAS, boundless DAS, PCA and neuron "
        "masks, IIA per layer on IOI variables; a toy model with a known site; SmolLM2, Gemma 3",
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
    ),
    "mechanistic-probe": Reproduction(
        "mechjax.analyses.mechanistic_probe",
        "MechanisticProbe (Hou et al. 2023): the reasoning tree read from attention "
        "(S_P1, S_P2) in a GPT-2 trained on k-th smallest, vs random init; SmolLM2",
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


def list_reproductions(out=None) -> int:
    """Print every reproduction's name and one-line description."""
    import sys

    out = out or sys.stdout
    width = max(len(n) for n in REPRODUCTIONS)
    for name, r in sorted(REPRODUCTIONS.items()):
        print(f"{name:{width}s}  {r.summary}", file=out)
    print("\n`mechjax reproduce NAME --help` shows a reproduction's own options.", file=out)
    return 0


def cmd_reproduce(args, rest: list[str]) -> int:
    """Forward everything after NAME (help included) to the reproduction's `main`."""
    import importlib

    mod = importlib.import_module(REPRODUCTIONS[args.name].module)
    return mod.main(["--help", *rest] if args.help else rest) or 0
