"""CLONE's two prosody KL terms (`000_31cfc13db0a5a5eb.txt`, appendix B).

* **Eq. 16**, the posterior ``q_φ(z | x, c) = N(μ_φ, σ_φ)`` against the flow prior
  ``p_θ(z | c) = N(f_θ(z); 0, I) |det ∂f_θ/∂z|`` (eq. 15), with one sample ``z ~ q_φ``::

      L_kl = −log σ_φ − 1/2 + f_θ(z)² / 2 − log|det ∂f_θ(z)/∂z|

  per latent dimension (the ``log 2π`` terms of eqs. 14 and 15 cancel). With VITS's mean-only
  couplings the last term is 0 and this is VITS's ``kl_loss(z_p, logs_q, m_p=0, logs_p=0)``.
* **Eq. 17**, the prosody predictor ``N(μ_pp, σ_pp)`` against the posterior, closed form::

      L_pp = log(σ_φ / σ_pp) + (σ_pp² + (μ_pp − μ_φ)²) / (2 σ_φ²) − 1/2

Both are summed over latent dimensions and averaged over valid phonemes, as VITS normalises its
KL by the mask's sum. Whether eq. 17's gradient reaches the posterior is not published; the
caller chooses (`jax.lax.stop_gradient` on ``μ_φ, log σ_φ``). Shapes: ``[B, P, D]`` statistics
(``log σ``, not ``σ``), ``mask [B, P, 1]``, ``logdet [B]`` summed over each row's valid phonemes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _per_phoneme_mean(total: jax.Array, mask: jax.Array) -> jax.Array:
  return total / jnp.maximum(jnp.sum(mask), 1.0)


def flow_prior_kl(z_p: jax.Array, log_sigma_q: jax.Array, logdet: jax.Array,
                  mask: jax.Array) -> jax.Array:
  """Eq. 16: ``z_p = f_θ(z)`` for ``z ~ q_φ``; returns the KL per valid phoneme (a scalar)."""
  mask = mask.astype(jnp.float32)
  per_dim = -log_sigma_q.astype(jnp.float32) - 0.5 + 0.5 * jnp.square(z_p.astype(jnp.float32))
  return _per_phoneme_mean(jnp.sum(per_dim * mask) - jnp.sum(logdet), mask)


def prosody_predictor_kl(mu_pp: jax.Array, log_sigma_pp: jax.Array, mu_q: jax.Array,
                         log_sigma_q: jax.Array, mask: jax.Array) -> jax.Array:
  """Eq. 17: ``KL(N(μ_pp, σ_pp) ‖ N(μ_φ, σ_φ))`` per valid phoneme (a scalar)."""
  mask = mask.astype(jnp.float32)
  mu_pp, log_sigma_pp, mu_q, log_sigma_q = (a.astype(jnp.float32) for a in
                                            (mu_pp, log_sigma_pp, mu_q, log_sigma_q))
  per_dim = (log_sigma_q - log_sigma_pp
             + (jnp.exp(2 * log_sigma_pp) + jnp.square(mu_pp - mu_q)) * 0.5
             * jnp.exp(-2 * log_sigma_q) - 0.5)
  return _per_phoneme_mean(jnp.sum(per_dim * mask), mask)
