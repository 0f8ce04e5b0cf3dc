"""A harmonic excitation from frame F0: the source of a source-filter wave decoder.

The spectrograms of every decoder trained here on CPU (the GMM-VAE and FACodec codecs, CLONE)
follow the formants and the timing but show no pitch harmonics (issue 12): nothing tells the
decoder where the harmonics are, and a network at frame rate cannot keep their phase coherent
from frame to frame. A source-filter decoder (the neural source-filter model of Wang et al.,
2019; DDSP, Engel et al., 2020) gives it a source that is already periodic and coherent: a
band-limited pulse train at the F0, which the network only has to shape
(`jaxtts.nn.vocos.VocosDecoder` with ``excitation=True``).

For frame F0 ``f0 [B, F]`` (Hz) and voicing ``voiced [B, F]``, at sample ``t`` of frame
``⌊t / hop⌋`` (frames cover ``[f hop, (f + 1) hop)``, as `jaxtts.audio.f0`'s):

* instantaneous phase ``φ(t) = 2π Σ_{s ≤ t} f0(s) / sr`` (continuous across frames);
* ``n(t) = clip(⌊(sr / 2) / f0(t)⌋, 1, max_harmonics)`` harmonics below Nyquist;
* ``e(t) = voiced(t) · Σ_{k=1}^{n} cos(k φ(t)) / sqrt(n / 2)``, summed in closed form (the
  Dirichlet kernel ``sin(n φ/2) cos((n + 1) φ/2) / sin(φ/2)``, equal to ``n`` where
  ``sin(φ/2) = 0``), so a voiced frame has unit RMS whatever its pitch.

Unvoiced samples are 0 (the decoder's noise branch makes them). No gradient flows into F0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MAX_HARMONICS = 200
F0_LOG_CENTRE = 5.0  # log(150 Hz): F0 features and F0 heads work on log(f0) - 5


def harmonic_excitation(f0: jax.Array, voiced: jax.Array, hop_length: int, sample_rate: int,
                        max_harmonics: int = MAX_HARMONICS) -> jax.Array:
  """``f0 [B, F]`` Hz and ``voiced [B, F]`` -> excitation ``e [B, F · hop]`` (float32)."""
  f0 = jax.lax.stop_gradient(jnp.asarray(f0, jnp.float32))
  voiced = jnp.asarray(voiced, bool) & (f0 > 0)
  f = jnp.repeat(jnp.where(voiced, f0, 0.0), hop_length, axis=-1)                  # [B, T]
  v = jnp.repeat(voiced, hop_length, axis=-1).astype(jnp.float32)
  cycles = jnp.cumsum(f / float(sample_rate), axis=-1)
  phi = 2.0 * jnp.pi * (cycles - jnp.floor(cycles))
  n = jnp.clip(jnp.floor(0.5 * sample_rate / jnp.maximum(f, 1.0)), 1.0, float(max_harmonics))
  half = jnp.sin(0.5 * phi)
  near = jnp.abs(half) < 1e-4
  dirichlet = jnp.sin(0.5 * n * phi) * jnp.cos(0.5 * (n + 1.0) * phi) / jnp.where(
      near, 1.0, half)
  pulse = jnp.where(near, n, dirichlet)
  return v * pulse / jnp.sqrt(0.5 * n)


def f0_head_losses(raw: jax.Array, f0: jax.Array, voiced: jax.Array, frame_mask: jax.Array):
  """The terms of an F0 head whose ``raw [B, F, 2]`` is ``(log f0 - F0_LOG_CENTRE, voicing
  logit)``, against ``f0, voiced [B, F]``: ``(mean |raw_0 + F0_LOG_CENTRE - log f0|`` over
  voiced frames, ``mean BCE(raw_1, voiced)`` over ``frame_mask``)."""
  v = (jnp.asarray(voiced, bool) & (f0 > 0)).astype(jnp.float32)
  fm = jnp.asarray(frame_mask, jnp.float32)
  err = jnp.abs(raw[..., 0] + F0_LOG_CENTRE - jnp.log(jnp.maximum(f0, 1.0)))
  f0_loss = jnp.sum(err * v) / jnp.maximum(jnp.sum(v), 1.0)
  z = raw[..., 1]
  bce = jnp.maximum(z, 0.0) - z * v + jnp.log1p(jnp.exp(-jnp.abs(z)))
  return f0_loss, jnp.sum(bce * fm) / jnp.maximum(jnp.sum(fm), 1.0)


def f0_from_head(raw: jax.Array):
  """``raw [B, F, 2]`` of an F0 head -> ``(f0 Hz [B, F], voiced [B, F] bool)``."""
  return jnp.exp(raw[..., 0] + F0_LOG_CENTRE), raw[..., 1] > 0


PITCH_CHANNELS = 2  # a latent's pitch channels: (voiced · (log f0 - F0_LOG_CENTRE), 2 voiced - 1)


def pitch_channels(f0: jax.Array, voiced: jax.Array) -> jax.Array:
  """``f0 [B, F]`` Hz and ``voiced [B, F]`` -> the latent's pitch channels ``[B, F, 2]``
  (float32): ``voiced · (log f0 - F0_LOG_CENTRE)`` (0 when unvoiced; about ±0.7 over 75-300 Hz)
  and ``2 voiced - 1`` (±1), the range of the learned channels, for the GMM-LM to model."""
  f0 = jax.lax.stop_gradient(jnp.asarray(f0, jnp.float32))
  v = (jnp.asarray(voiced, bool) & (f0 > 0)).astype(jnp.float32)
  log_f0 = v * (jnp.log(jnp.maximum(f0, 1.0)) - F0_LOG_CENTRE)
  return jnp.stack([log_f0, 2.0 * v - 1.0], axis=-1)


def pitch_from_channels(channels: jax.Array):
  """The inverse of `pitch_channels`: ``[..., 2]`` -> ``(f0 Hz [...], voiced [...] bool)``;
  a generated latent is voiced where its voicing channel is above 0."""
  voiced = channels[..., 1] > 0
  return jnp.where(voiced, jnp.exp(channels[..., 0] + F0_LOG_CENTRE), 0.0), voiced
