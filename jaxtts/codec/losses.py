"""GAN losses for the codec discriminators (DAC's ``GANLoss``, descript-audio-codec
``dac/nn/loss.py``; GMM-VAE paper ``../shared/papers/002_3b51400f309666e7.txt`` §3.1: mel loss
"and add discriminators, as done in ... DAC").

Inputs are the outputs of ``jaxtts.codec.discriminators.Discriminators``: a list over K
sub-discriminators of lists of feature maps ``[B, H, W, C]`` whose last entry is the logits map
``D_k(x)`` [B, H, W, 1]. Every mean is over all elements of one map (batch included), each
sub-discriminator's term is summed (not averaged) over k, and everything is computed in
float32 (maps may be bf16). Scalars are returned as float32 ``[]``.

* LSGAN (Mao et al., 2017; DAC's default):
  ``L_D = sum_k mean((1 - D_k(x))^2) + mean(D_k(G(z))^2)``,
  ``L_G = sum_k mean((1 - D_k(G(z)))^2)``.
* Hinge (Lim & Ye, 2017; MelGAN / EnCodec):
  ``L_D = sum_k mean(relu(1 - D_k(x))) + mean(relu(1 + D_k(G(z))))``,
  ``L_G = sum_k mean(-D_k(G(z)))``.
* Feature matching (MelGAN; DAC ``feat_loss``):
  ``L_FM = sum_k sum_{l < L_k} mean(|f_kl(G(z)) - sg(f_kl(x))|)`` over the intermediate maps
  (the logits are excluded), with the real features under stop-gradient.

`head_spectrum_losses` (not a GAN loss) is the APNet amplitude and phase objective on the
spectrum a Vocos head predicts, shared by the codec tasks that configure one.

``discriminator_loss`` does not stop gradients: call it with the discriminator applied to
``jax.lax.stop_gradient(G(z))`` so the generator is not updated through it.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from jaxtts.audio import phase as phase_lib
from jaxtts.nn.vocos import same_frames_stft

Outputs = Sequence[Sequence[jax.Array]]
KINDS = ("lsgan", "hinge")


def _check(kind: str) -> None:
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _f32(x: jax.Array) -> jax.Array:
  return jnp.asarray(x, jnp.float32)


def discriminator_loss(real_outputs: Outputs, fake_outputs: Outputs,
                       kind: str = "lsgan") -> jax.Array:
  """Discriminator loss summed over sub-discriminators (uses the logits, ``outputs[k][-1]``).

  Args:
    real_outputs: K lists of feature maps of ``D(x)``; ``real_outputs[k][-1]`` [B, H, W, 1].
    fake_outputs: the same for ``D(G(z))`` (pass ``G(z)`` through ``stop_gradient`` first).
    kind: ``'lsgan'``: ``sum_k mean((1 - D_k(x))^2) + mean(D_k(G(z))^2)``;
      ``'hinge'``: ``sum_k mean(relu(1 - D_k(x))) + mean(relu(1 + D_k(G(z))))``.

  Returns:
    float32 scalar.
  """
  _check(kind)
  if len(real_outputs) != len(fake_outputs):
    raise ValueError(f"{len(real_outputs)} real vs {len(fake_outputs)} fake sub-discriminators")
  loss = jnp.zeros((), jnp.float32)
  for real, fake in zip(real_outputs, fake_outputs):
    r, f = _f32(real[-1]), _f32(fake[-1])
    if kind == "lsgan":
      loss += jnp.mean(jnp.square(1.0 - r)) + jnp.mean(jnp.square(f))
    else:
      loss += jnp.mean(jax.nn.relu(1.0 - r)) + jnp.mean(jax.nn.relu(1.0 + f))
  return loss


def generator_adversarial_loss(fake_outputs: Outputs, kind: str = "lsgan") -> jax.Array:
  """Generator adversarial loss summed over sub-discriminators.

  Args:
    fake_outputs: K lists of feature maps of ``D(G(z))``; ``fake_outputs[k][-1]`` [B, H, W, 1].
    kind: ``'lsgan'``: ``sum_k mean((1 - D_k(G(z)))^2)``; ``'hinge'``: ``sum_k mean(-D_k(G(z)))``.

  Returns:
    float32 scalar.
  """
  _check(kind)
  loss = jnp.zeros((), jnp.float32)
  for fake in fake_outputs:
    f = _f32(fake[-1])
    loss += jnp.mean(jnp.square(1.0 - f)) if kind == "lsgan" else jnp.mean(-f)
  return loss


def feature_matching_loss(real_features: Outputs, fake_features: Outputs) -> jax.Array:
  """``sum_k sum_{l < L_k - 1} mean(|fake[k][l] - stop_gradient(real[k][l])|)`` (DAC).

  Args:
    real_features: K lists of L_k feature maps ``[B, H, W, C]`` of ``D(x)`` (last = logits,
      not matched). Gradients never flow into them.
    fake_features: the same structure and shapes for ``D(G(z))``.

  Returns:
    float32 scalar.
  """
  if len(real_features) != len(fake_features):
    raise ValueError(f"{len(real_features)} real vs {len(fake_features)} fake sub-discriminators")
  loss = jnp.zeros((), jnp.float32)
  for real, fake in zip(real_features, fake_features):
    if len(real) != len(fake):
      raise ValueError(f"{len(real)} real vs {len(fake)} fake feature maps")
    for r, f in zip(real[:-1], fake[:-1]):
      loss += jnp.mean(jnp.abs(_f32(f) - jax.lax.stop_gradient(_f32(r))))
  return loss


def head_spectrum_losses(log_magnitude: jax.Array, phase: jax.Array, audio: jax.Array,
                         frame_mask: jax.Array, hop: int) -> dict:
  """APNet's losses (`jaxtts.audio.phase`) on a Vocos head's spectrum ``log_magnitude``,
  ``phase`` ``[B, F, n_fft // 2 + 1]`` against the analysis STFT of the same frames of
  ``audio [B, T]`` (padding zeroed; `jaxtts.nn.vocos.same_frames_stft`), over the real frames
  ``frame_mask [B, F]``: ``spectrum_amplitude_loss`` (log10-amplitude L1),
  ``spectrum_phase_loss`` (instantaneous phase + group delay + instantaneous frequency) and
  each phase term as ``phase/<name>``."""
  frames = phase.shape[1]
  n_fft = 2 * (phase.shape[-1] - 1)
  audio = jnp.pad(audio, ((0, 0), (0, max(0, frames * hop - audio.shape[-1]))))
  target = same_frames_stft(audio[:, :frames * hop], n_fft, hop)
  terms = phase_lib.phase_losses(phase, target, frame_mask)
  return {"spectrum_amplitude_loss": phase_lib.amplitude_loss(log_magnitude, target,
                                                              frame_mask),
          "spectrum_phase_loss": sum(terms.values()),
          **{f"phase/{k}": v for k, v in terms.items()}}
