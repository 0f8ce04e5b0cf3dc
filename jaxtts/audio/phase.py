"""Losses on a predicted STFT's amplitude and phase against the target's (APNet).

Ai & Ling, "APNet: An All-Frame-Level Neural Vocoder Incorporating Direct Prediction of
Amplitude and Phase Spectra" (IEEE/ACM TASLP 2023), §III-C. A frame-rate decoder that
predicts a spectrum (``jaxtts.nn.vocos``) can be told what the spectrum should be directly,
bin by bin, instead of only through a loss on the waveform its inverse STFT makes:

* amplitude: ``L_A = mean (log|S_hat| - log|S|)^2`` (eq. 11; we use log10 and L1 as an
  option, see ``amplitude_loss``);
* the anti-wrapping function ``f_AW(x) = |x - 2 pi round(x / 2 pi)|`` (eq. 12), the distance
  between two angles;
* instantaneous phase ``L_IP = mean f_AW(P_hat - P)`` (eq. 13), group delay ``L_GD = mean
  f_AW(Delta_F P_hat - Delta_F P)`` (eq. 14, the difference along frequency) and
  instantaneous angular frequency ``L_IAF = mean f_AW(Delta_T P_hat - Delta_T P)`` (eq. 15,
  the difference along time).

All take ``[B, N, K]`` (frames, bins) arrays and an optional ``[B, N]`` frame mask, compute in
float32 and return a scalar mean over valid frames and all bins (the frequency difference has
``K - 1`` bins, the time difference ``N - 1`` frames, valid when both frames are).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np


def anti_wrap(x: jax.Array) -> jax.Array:
  """APNet eq. 12: ``|x - 2 pi round(x / 2 pi)|``, in ``[0, pi]``."""
  return jnp.abs(x - 2.0 * np.pi * jnp.round(x / (2.0 * np.pi)))


def masked_frame_mean(values: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  """Mean of ``values [B, N, K]`` over frames where ``mask [B, N]`` is 1 and all bins."""
  values = values.astype(jnp.float32)
  if mask is None:
    return jnp.mean(values)
  mask = mask.astype(jnp.float32)
  return jnp.sum(values * mask[..., None]) / jnp.maximum(jnp.sum(mask) * values.shape[-1], 1.0)


def amplitude_loss(log_magnitude: jax.Array, target: jax.Array,
                   mask: Optional[jax.Array] = None, eps: float = 1e-5) -> jax.Array:
  """``mean |log10(|S_hat|) - log10(max(|S|, eps))|`` over valid frames.

  APNet's eq. 11 is the squared natural-log difference; we use the L1 of log10, the distance
  DAC's mel loss uses (``jaxtts.audio.spectral.multiscale_mel_loss``), so the two weights are
  in the same units. ``log_magnitude`` is the head's natural-log output ``[B, N, K]`` (before
  any clip), ``target`` the complex (or magnitude) target spectrum ``[B, N, K]``.
  """
  pred = log_magnitude.astype(jnp.float32) / np.log(10.0)
  want = jnp.log10(jnp.maximum(jnp.abs(target).astype(jnp.float32), eps))
  return masked_frame_mean(jnp.abs(pred - want), mask)


def phase_losses(phase: jax.Array, target: jax.Array,
                 mask: Optional[jax.Array] = None) -> dict[str, jax.Array]:
  """APNet eqs. 13-15 for predicted phase ``[B, N, K]`` (radians, any wrap) against the
  complex target spectrum ``[B, N, K]``.

  Returns:
    ``{"instantaneous_phase", "group_delay", "instantaneous_frequency"}`` float32 scalars,
    each in ``[0, pi]``.
  """
  phase = phase.astype(jnp.float32)
  want = jnp.angle(target).astype(jnp.float32)
  pair_mask = None if mask is None else (mask[:, 1:] * mask[:, :-1])
  return {
      "instantaneous_phase": masked_frame_mean(anti_wrap(phase - want), mask),
      "group_delay": masked_frame_mean(anti_wrap(jnp.diff(phase, axis=-1)
                                            - jnp.diff(want, axis=-1)), mask),
      "instantaneous_frequency": masked_frame_mean(anti_wrap(jnp.diff(phase, axis=1)
                                                        - jnp.diff(want, axis=1)), pair_mask),
  }
