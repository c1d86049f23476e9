"""Reproduction of "On the Emergence of Induction Heads for In-Context Learning".

Musat, Pimentel, Noci, Stolfo, Sachan, Hofmann (arXiv 2511.01033). Claims re-measured:

- Theorem 1: trained from zero on the minimal ICL task (population MSE, gradient flow),
  the disentangled two-layer attention-only transformer stays in a 19-dimensional
  subspace, alpha in R^3 (layer-1 key-query), beta in R^12 (layer-2 key-query),
  gamma in R^4 (output). Expected here: off-subspace residual ~1e-6 in float32.
- Only alpha_3 (previous-token attention), beta_2 (match on token) and gamma_3 (copy)
  drive the emergence, in the order gamma_3, beta_2, alpha_3 (Theorem 2), and a PCA of
  the parameter trajectory shows about 3 dominant directions.
- t_ICL = Theta(N^2): the fitted slope of log t_ICL against log N is expected near 2.
  Gradient descent runs to N = 64; the gradient flow of the 19 coordinates (`flow.py`,
  on the O(N) loss of `large_n.py`) to N = 16384, with local slopes, the fit over the
  largest N, a log-corrected fit and the plateau's drivers (found: t_ICL ~ N^2 / ln N,
  local slope 2 - 1/ln N, from the causal first layer's harmonic averaging).
- The same order of the progress measures (the paper's Eqs. 20-22) in a standard
  two-layer attention-only transformer trained with cross-entropy.

Reconstruction (the paper's code is not public and its Eqs. 4-7 were not available; what
follows is derived from the published structure "W1 = diag(a1 I, a2 I + a3 M)", 3 + 12 +
4 = 19 parameters, and the symmetry argument of Theorem 1):

- Task: N item-label pairs then a query, `x_1 y_1 ... x_N y_N x_q` (T = 2N + 1 positions),
  `x_q = x_j` for a uniformly drawn j, target `y_j`. Items and labels are distinct
  orthonormal vectors of a token space R^{d_tok}. Positions are orthonormal vectors of
  R^{d_pos} = C^{N+1} seen as a real space, with the label position of a pair the image of
  its item position under the fixed rotation M (multiplication by i, so M^T = -M,
  M^2 = -I): `p(y_k) = M p(x_k)`. The query has its own position.
- Disentangled transformer (Friedman et al. 2023): layers concatenate instead of add.
  `x0_i = [t_i; p_i]`; layer 1 scores `x0_i^T W1 x0_j` (causal softmax, no value or output
  matrices) and `x1_i = [x0_i; sum_j A1_ij x0_j]`; layer 2 attends from the query with
  `x1_q^T W2 x1_j` and `x2_q = [x1_q; sum_j A2_qj x1_j]`; the prediction is `W3 x2_q`,
  the loss `0.5 * ||W3 x2_q - y||^2` (W1 is 2D x 2D, W2 4D x 4D, W3 D x 8D).
- The 19 coordinates (`Ansatz.induction`): a token block of any weight is a multiple of I,
  a position block a combination of I and M, token-position blocks are 0:
  alpha_1 (t,t) I; alpha_2, alpha_3 (p,p) I and M; beta_1..4 the token blocks (query row,
  key column) (t,t), (t,h1t), (h1t,t), (h1t,h1t), so beta_2 matches the query token with
  the token layer 1 moved into a key; beta_5..12 the position blocks (p,p), (p,h1p),
  (h1p,p), (h1p,h1p), each I then M; gamma_1..4 read the token parts t, h1t, h2t, h2h1t
  of the final stream, so gamma_3 copies the token layer 2 attended to.
- Population loss: Theorem 1 follows from invariance under rotations of the token space
  and under the rotations of the position space that commute with M. The confinement test
  trains on the orbit of the N canonical sequences under finite groups with the same
  commutant (signed cyclic permutations of tokens; the Weyl-Heisenberg group of C^{N+1}
  for positions): an exact population whose gradient cannot leave the ansatz unless the
  model or the ansatz is wrong.
- Emergence runs use the dynamics inside the 19-dim subspace computed from Gram matrices
  (exactly the full model restricted to the subspace; a test checks both agree), full-batch
  gradient descent on the coordinates, `theta -= lr * grad` (= gradient descent on the
  full weights with step lr * D when d_tok = d_pos = D). With orthonormal embeddings the
  only randomness of the task is the query index, so a seed is a finite training set of
  N sequences with random query indices; the exact population (every j once) is run too,
  in the same `vmap`.
- t_ICL: first step at which the loss falls below half its initial value 0.5 (the loss
  sits near 0.5 (1 - 1/N) on the plateau). Also reported: first step at which the
  layer-2 attention from the query to the correct label exceeds 0.5.
- Emergence time of a coordinate: first step at which it reaches 10% of its value at the
  end of the run (runs go on for at least half of t_ICL beyond t_ICL).
- Slope CI: ordinary least squares of log t_ICL on log N over all (N, seed) points, 95%
  interval from the t distribution with n - 2 degrees of freedom. Local slopes between
  consecutive N are reported too, since Theta(N^2) is an asymptotic statement.

Standard transformer: `models/toy.py` with 2 attention-only layers, one head each, no
LayerNorm, trained with cross-entropy and Adam through `mechjax.training` on repeated
random tokens `r_1..r_L` followed by a random rotation `r_{k+1}..r_L r_1..r_k` (loss on
the second half, where induction predicts the next token). This is the usual induction
task of Olsson et al. (2022) except for the rotation: with a fixed repeat distance a
2-layer model solves the task with a purely positional head (observed here: layer 0 then
stops attending to the previous token and beta_2 turns negative). It gives a loss at up
to L - 1 positions per sequence, where the one-query ICL format gives one, so an
induction head forms within a CPU budget. Checkpoints are loaded as one stacked pytree
and the progress measures (Eqs. 20-22), loss and induction-head score are evaluated over
them with one `vmap`. Onset of a measure: first checkpoint at which its change from
step 0 reaches 10% of its final change.
"""

from mechjax.analyses.induction.dynamics import (  # noqa: F401
    Fit,
    GramData,
    Trajectory,
    attention_step,
    coordinate_onsets,
    emergence_step,
    emergence_sweep,
    fit_loglog,
    gram_data,
    pca,
    reduced_forward,
    reduced_loss,
    sample_query_sets,
    train_reduced,
)
from mechjax.analyses.induction.flow import (  # noqa: F401
    FlowRun,
    LogFit,
    fit_log_corrected,
    flow_sweep,
    gradient_flow,
    local_slopes,
    plateau,
)
from mechjax.analyses.induction.large_n import (  # noqa: F401
    query_weights,
    structured_loss,
    structured_losses,
)
from mechjax.analyses.induction.report import (  # noqa: F401
    build_parser,
    main,
    reproduce,
)
from mechjax.analyses.induction.standard import (  # noqa: F401
    StandardSetup,
    induction_batch,
    induction_loss,
    induction_score,
    previous_token_score,
    progress_measures,
    train_standard,
)
from mechjax.analyses.induction.theory import (  # noqa: F401
    POSITION,
    TOKEN,
    Ansatz,
    Block,
    DTOutput,
    ICLData,
    canonical_sequences,
    commutant_dim,
    coordinate_index,
    disentangled_forward,
    finite_group,
    init_disentangled,
    mse_loss,
    position_group,
    rotation_M,
    symmetric_population,
    token_group,
    train_disentangled,
)
