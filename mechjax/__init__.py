"""mechjax: mechanistic interpretability as JAX function transforms.

import mechjax as mj
model = mj.load("smollm2-135m")
out = mj.run(model, "The Eiffel Tower is in", hooks={"blocks.3.hook_resid_pre": mj.add(delta)},
             capture=["blocks.5.hook_resid_post"])
out.logits, out.cache["blocks.5.hook_resid_post"]  # or out.cache["resid_post", 5]
mj.test_prompt(model, "The Eiffel Tower is in the city of", " Paris")
"""

from mechjax import cache_analysis, weights
from mechjax.errors import (
    CheckpointError,
    FetchError,
    InputError,
    InterventionError,
    MechjaxError,
    SiteError,
)
from mechjax.generation import BeamGeneration, Generation, beam_search, generate, iter_generate
from mechjax.interventions import (
    Add,
    Apply,
    Intervention,
    MeanAblate,
    Patch,
    Project,
    Resample,
    Scale,
    ablate,
    add,
    apply_fn,
    patch,
    project,
    scale,
)
from mechjax.io.loading import load
from mechjax.model import (
    Cache,
    Family,
    Model,
    Output,
    run,
    run_with_cache,
)
from mechjax.prompting import PromptResult, test_prompt
from mechjax.sites import act_name

__version__ = "0.1.0"

__all__ = [
    "Add",
    "Apply",
    "Cache",
    "Generation",
    "BeamGeneration",
    "beam_search",
    "cache_analysis",
    "generate",
    "iter_generate",
    "weights",
    "CheckpointError",
    "Family",
    "FetchError",
    "InputError",
    "Intervention",
    "InterventionError",
    "MeanAblate",
    "MechjaxError",
    "Model",
    "Output",
    "Patch",
    "Project",
    "PromptResult",
    "Resample",
    "Scale",
    "SiteError",
    "ablate",
    "act_name",
    "add",
    "apply_fn",
    "load",
    "patch",
    "project",
    "run",
    "run_with_cache",
    "scale",
    "test_prompt",
]
