"""Metrics: logit difference, probabilities, KL, indirect effect, normalisation."""

import jax.numpy as jnp
import numpy as np

from mechjax import metrics


def test_logit_diff_positions_and_pytree():
    logits = jnp.arange(2 * 3 * 5, dtype=jnp.float32).reshape(2, 3, 5)
    assert float(metrics.logit_diff(logits, [4, 4], [0, 0])) == 4.0
    np.testing.assert_allclose(
        metrics.logit_diff(logits, [1, 2], [0, 0], [0, -1], mean=False), [1, 2]
    )
    assert float(metrics.LogitDiff(jnp.array([4, 4]), jnp.array([0, 0]))(logits)) == 4.0


def test_probabilities_and_kl():
    logits = jnp.log(jnp.array([[[0.1, 0.2, 0.7]]]))
    np.testing.assert_allclose(metrics.answer_prob(logits, [2]), 0.7, rtol=1e-6)
    np.testing.assert_allclose(metrics.answer_logprob(logits, [1]), np.log(0.2), rtol=1e-6)
    assert abs(float(metrics.kl_to_clean(logits, logits))) < 1e-7
    other = jnp.log(jnp.array([[[0.3, 0.3, 0.4]]]))
    ref = sum(p * np.log(p / q) for p, q in zip([0.1, 0.2, 0.7], [0.3, 0.3, 0.4]))
    np.testing.assert_allclose(metrics.kl_to_clean(other, logits), ref, rtol=1e-5)
    np.testing.assert_allclose(
        metrics.restricted_probs(logits, jnp.array([1, 2])), [[2 / 9, 7 / 9]], rtol=1e-6
    )


def test_indirect_effect_and_normalisation():
    # P(r) = 0.6 -> P*(r) = 0.3, P(r') = 0.1 -> P*(r') = 0.4: 1/2 (1 + 3) = 2
    assert np.isclose(metrics.indirect_effect(0.6, 0.3, 0.1, 0.4), 2.0)
    assert np.isclose(metrics.effect_average_diff(0.6, 0.3, 0.1, 0.4), 0.6)
    assert np.isclose(metrics.effect_increase_p_res_alt(0.1, 0.4), 0.3)
    assert np.isclose(
        metrics.relative_confidence_change(0.5, 0.25, 0, 0, result_changes=False), 1.0
    )
    assert float(metrics.normalized_metric(3.0, 5.0, 1.0)) == 0.5
    assert float(metrics.normalized_metric(1.0, 5.0, 1.0)) == 0.0
