"""Causal variables: featurizers, interchange interventions, causal models, DAS and IIA.

- `featurizers`: invertible maps from a site's activation to features (neurons, PCA, DAS
  rotations, boundless DAS, differential binary masks, SAE latents), as pytrees.
- `interchange`: the `Interchange` intervention for `mj.run` (per-example positions,
  several sources at once).
- `causal_models`: high-level causal models as pure functions (IOI, arithmetic, MCQA) and
  counterfactual datasets built from them.
- `data`: `CounterfactualData`, the (base, source, label) pairs every method reads.
- `das`: training featurizers with optax against counterfactual labels, IIA, a search
  over layers as one compiled program, saving and loading (orbax).
"""

from mechjax.causal import das
from mechjax.causal.das import TrainConfig, iia, search, site_acts, train
from mechjax.causal.data import CounterfactualData
from mechjax.causal.featurizers import (
    BoundlessRotation,
    Featurizer,
    Identity,
    NeuronMask,
    Rotation,
    SAEFeatures,
    SAEMask,
    Subspace,
    boundless_rotation,
    from_sae,
    identity,
    interchange,
    interchange_many,
    neuron_mask,
    orthogonality_error,
    pca,
    rotation,
    sae_features,
    sae_mask,
)
from mechjax.causal.interchange import Interchange, gather, interchange_at, scatter

__all__ = [
    "BoundlessRotation",
    "CounterfactualData",
    "Featurizer",
    "Identity",
    "Interchange",
    "NeuronMask",
    "Rotation",
    "SAEFeatures",
    "SAEMask",
    "Subspace",
    "TrainConfig",
    "boundless_rotation",
    "das",
    "from_sae",
    "gather",
    "identity",
    "iia",
    "interchange",
    "interchange_at",
    "interchange_many",
    "neuron_mask",
    "orthogonality_error",
    "pca",
    "rotation",
    "sae_features",
    "sae_mask",
    "scatter",
    "search",
    "site_acts",
    "train",
]
