"""Sparse autoencoders: architectures, training, activation sources, evaluation, file
formats, and the dense-latent analysis of Sun et al. (2025).

- `architectures`: `SAE` (ReLU+L1, TopK, BatchTopK, JumpReLU, AbsoluteTopK, Gated; and
  transcoders with an optional skip) as a pytree with `encode`, `decode`, `__call__`.
- `losses`: each architecture's objective and the aux-k loss for dead latents.
- `store`: `ActivationStore` (harvest once, memory or disk shards, shuffled batches) and
  `TokenSource` (the model runs inside the training step, up to the site).
- `training`: `train_sae` (one compiled step; `mechjax.training`'s checkpoints, resume
  and logs; dead-latent and density tracking; data parallel over a mesh).
- `evaluation`: reconstruction metrics, CE loss and KL with the SAE spliced in (through
  `mj.apply_fn`), CE loss recovered against zero ablation, density and its histogram.
- `formats`: `load` (SAELens directories, Gemma Scope `params.npz`) and `save` (SAELens).
- `dense`: density, antipodality, dense-subspace ablation, the dense-latent detectors.

    import mechjax as mj
    from mechjax import sae as S
    sae = S.load("path/to/saelens_dir")
    f = sae.encode(acts)                       # or S.encode(sae, acts): module-level
    S.evaluate(model, sae, tokens)["ce_recovered"]
"""

from mechjax.sae import architectures, dense, evaluation, formats, losses, store, training
from mechjax.sae.architectures import (
    ARCHITECTURES,
    SAE,
    SAEMeta,
    SAEOutput,
    decode,
    encode,
    init_sae,
    normalize_decoder,
)
from mechjax.sae.evaluation import check_site, density_histogram, evaluate, reconstruction
from mechjax.sae.formats import load, save
from mechjax.sae.store import ActivationStore, TokenSource
from mechjax.sae.training import SAETrainConfig, TrainedSAE, train_sae

__all__ = [
    "ARCHITECTURES",
    "ActivationStore",
    "SAE",
    "SAEMeta",
    "SAEOutput",
    "SAETrainConfig",
    "TokenSource",
    "TrainedSAE",
    "architectures",
    "check_site",
    "decode",
    "dense",
    "density_histogram",
    "encode",
    "evaluate",
    "evaluation",
    "formats",
    "init_sae",
    "load",
    "losses",
    "normalize_decoder",
    "reconstruction",
    "save",
    "store",
    "train_sae",
    "training",
]
