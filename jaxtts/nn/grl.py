"""Gradient reversal (Ganin & Lempitsky, 2015), NaturalSpeech 3 §3.2.1's adversarial heads.

``gradient_reversal(x, alpha)`` is the identity forward and multiplies the incoming gradient
by ``-alpha`` backward, so a classifier after it learns to predict its label while the
features before it learn to hide that label. FACodec puts one before the phone classifier on
the prosody codes, the F0 regressor on the content codes, both on the detail codes and the
speaker classifier on their sum (α = 1 in the paper).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def gradient_reversal(x: jax.Array, alpha: float = 1.0) -> jax.Array:
  """Identity on ``x`` (any shape); backward: ``-alpha * g``. ``alpha`` is a static float."""
  return x


def _forward(x, alpha):
  return x, None


def _backward(alpha, _, g):
  return (jax.tree.map(lambda t: (-alpha * t).astype(t.dtype), g),)


gradient_reversal.defvjp(_forward, _backward)


def reversed_features(x: jax.Array, alpha: float = 1.0, enabled: bool = True) -> jax.Array:
  """`gradient_reversal` when ``enabled`` (the "no GRL" ablation passes ``enabled=False``,
  which stops the gradient instead, so the head still trains but the features do not see
  it)."""
  return gradient_reversal(x, float(alpha)) if enabled else jax.lax.stop_gradient(
      jnp.asarray(x))
