"""Activation steering for instruction following (Stolfo et al. 2025).

    from mechjax import steering
    vecs = steering.compute_vectors(model, with_instr, without_instr)    # every layer, one pass
    hooks = {"blocks.12.hook_resid_post": steering.adjust_rs(*vecs.at(12))}
    mj.generate(model, prompts, 64, hooks=hooks, chat=True)
    search = steering.search_layer(model, vecs, queries, ids, kwargs)    # one compiled sweep
    steering.ifeval.check("change_case:english_lowercase", text)

- `vectors`: steering vectors from paired prompts; `adjust_rs` and `add_vector`.
- `search`: candidates (layers x coefficients x compositions) generated in one compiled
  loop, the degeneracy filter (perplexity), the layer search.
- `ifeval`: IFEval-style instruction checkers.
- `data`: the paper's IFEval-derived prompts, shipped with the package (MIT).
"""

from mechjax.steering import data, ifeval
from mechjax.steering.search import (
    Candidate,
    LayerSearch,
    Steer,
    add_at,
    adjust_at,
    candidate_hooks,
    default_layers,
    generate_candidates,
    is_degenerate,
    perplexity,
    score,
    search_layer,
)
from mechjax.steering.vectors import (
    AddVector,
    AdjustRS,
    SteeringVectors,
    add_vector,
    adjust_rs,
    answer_text,
    compute_vectors,
    encode_prompts,
    prompt_text,
    resolve_template,
)

__all__ = [
    "AddVector",
    "AdjustRS",
    "Candidate",
    "LayerSearch",
    "Steer",
    "SteeringVectors",
    "add_at",
    "add_vector",
    "adjust_at",
    "adjust_rs",
    "answer_text",
    "candidate_hooks",
    "compute_vectors",
    "data",
    "default_layers",
    "encode_prompts",
    "generate_candidates",
    "ifeval",
    "is_degenerate",
    "perplexity",
    "prompt_text",
    "resolve_template",
    "score",
    "search_layer",
]
