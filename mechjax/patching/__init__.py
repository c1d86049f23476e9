"""Activation patching: sweeps over layers x positions (x heads) and path patching.

- `sweep`: `patch_sweep` and `PatchResult` (strategies, chunking, named positions);
- `path`: `path_patch` (sender heads -> receiver sites, Wang et al. 2022);
- `blocks`: running the model from a cached residual stream (`run_from_layer`,
  `run_metric`, `metric_of_final`), shared with attribution and circuits;
- `static`: metrics split into array leaves and a hashable static part.
"""

from mechjax.patching.blocks import metric_of_final, run_from_layer, run_metric
from mechjax.patching.path import path_patch
from mechjax.patching.static import join_static, split_static
from mechjax.patching.sweep import PatchResult, patch_sweep

__all__ = [
    "PatchResult",
    "join_static",
    "metric_of_final",
    "patch_sweep",
    "path_patch",
    "run_from_layer",
    "run_metric",
    "split_static",
]
