"""GMM-VAE: a DAC-style convolutional autoencoder with a Gaussian-mixture latent prior.

Paper: Lin & He, "Continuous Autoregressive Modeling with Stochastic Monotonic Alignment for
Speech Synthesis" (ICLR 2025), ``../shared/papers/002_3b51400f309666e7.txt``: §3.1 eq. 4
(objective), §4 "Training Procedure" (DAC architecture with the quantizer removed; only the
mixture means are learned, equal weights, identity covariances) and appendix A.5 (sizes).

Architecture (descript-audio-codec ``dac/model/dac.py`` without quantizer; channels-last):

  Encoder  wav [B, T] -> [B, T, 1] -> WNConv(k7, encoder_dim)
           -> EncoderBlock(stride s_i, channels C -> 2C) for each encoder stride
              (3 x ResidualUnit(C, dilation 1, 3, 9) -> Snake -> WNConv(k=2s, stride s, 2C))
           -> Snake -> WNConv(k3, latent_dim)                              -> h [B, F, D]
  Decoder  h [B, F, D] -> WNConv(k7, decoder_dim)
           -> DecoderBlock(stride s_i, C -> C/2) for each decoder stride
              (Snake -> WNConvTranspose(k=2s, stride s, C/2) -> 3 x ResidualUnit(C/2))
           -> Snake -> WNConv(k7, 1) -> tanh                               -> wav [B, F * hop]
  ResidualUnit(C, d): x + WNConv(k1, C)(Snake(WNConv(k7, C, dilation d)(Snake(x))))

with ``hop = prod(encoder_strides) = prod(decoder_strides)``.

Framing: ``GMMVAE.encode`` right-pads the waveform with zeros to a multiple of the hop (DAC's
``preprocess``), so ``F = ceil(T / hop)`` (``= T // hop`` whenever ``T % hop == 0``) and
``__call__`` crops the decoder output back to ``T``. This matters for the paper's 8960-sample
segments at hop 512 (17.5 frames -> 18). For odd strides (e.g. the tiny preset's 5) the
downsampling convolution pads ``ceil(s/2)`` left and ``floor(s/2)`` right (DAC pads
``ceil(s/2)`` on both sides, which only differs by a possible extra frame when T is not a
multiple of ``s``); the transposed convolution uses DAC's ``output_padding = s % 2``.

Paper configuration (A.5; ``configs/gmm_vae.py:paper``)::

    GMMVAE(encoder_dim=64, encoder_strides=(2, 4, 8, 8), decoder_dim=1536,
           decoder_strides=(8, 8, 4, 2), latent_dim=1024,   # DAC default: 64 * 2**4
           dilations=(1, 3, 9), num_mixtures=3)               # λ = 50 in the task loss

  Parameter counts (``jax.eval_shape`` of ``init``; weight norm adds one gain per output
  channel, or per input channel for the transposed convolutions as torch's
  ``weight_norm(dim=0)`` does, and every conv has a bias): encoder 22,307,968, decoder
  54,104,162, prior means 3,072, total 76,415,202 (paper: 22.4M + 54.1M = 76.5M). The decoder
  matches to the reported precision; the encoder is 0.09M (0.4 %) below 22.4M. DAC's nine
  quantizer input projections (WNConv 1024 -> 8, k1: 73,872 parameters) would bring it to
  22.38M, so the paper's encoder count probably still included them; no quantizer is built
  here. ``tests/test_gmm_vae.py`` checks these numbers against a closed-form count.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtts.audio.excitation import (PITCH_CHANNELS, f0_from_head, pitch_channels,
                                     pitch_from_channels)
from jaxtts.nn.conv import Conv1d, ConvTranspose1d
from jaxtts.nn.dtypes import dtype_of
from jaxtts.nn.mixture import diagonal_gmm_log_prob
from jaxtts.nn.snake import Snake
from jaxtts.nn.vocos import VocosDecoder, VocosEncoder

_ACT = ("batch", "time", "channels")


# ----------------------------------------------------------------------------- GMM prior ----

def gmm_log_prob(h: jax.Array, means: jax.Array, log_weights: Optional[jax.Array] = None,
                 log_scales: Optional[jax.Array] = None) -> jax.Array:
  """Log density of a diagonal Gaussian mixture, ``log sum_l pi_l N(h; mu_l, diag sigma_l^2)``.

  Args:
    h: ``[..., D]`` points (computed in float32).
    means: ``[L, D]`` mixture means ``mu_l``.
    log_weights: ``[L]`` mixture logits; normalised here with ``log_softmax`` (so normalised
      log-weights and unnormalised logits both work). ``None`` = equal weights ``1 / L``.
    log_scales: ``[L, D]`` log standard deviations ``log sigma_l``; ``None`` = unit variances.

  Returns:
    ``[...]`` float32 log densities, with the full normalising constants
    ``-D/2 log(2 pi) - sum_d log sigma_ld`` (logsumexp over mixtures, so it is stable far from
    every mean). Delegates to the shared ``jaxtts.nn.mixture.diagonal_gmm_log_prob``.
  """
  means = jnp.asarray(means)
  if means.ndim != 2:
    raise ValueError(f"means must be [L, D], got shape {means.shape}")
  return diagonal_gmm_log_prob(h, log_weights, means, log_scales)


def gmm_prior_nll(h: jax.Array, frame_mask: Optional[jax.Array] = None, *, means: jax.Array,
                  log_weights: Optional[jax.Array] = None,
                  log_scales: Optional[jax.Array] = None, per_dim: bool = True) -> jax.Array:
  """The prior term of eq. 4: negative log-likelihood of the latents under the GMM prior.

  Eq. 4 regularises with ``lambda * KL(q(h|x) || sum_l pi_l N(mu_l, Sigma_l))``. The posterior
  is a Dirac delta, ``q(h|x) = delta(h - E(x))``, so
  ``KL = E_q[log q(h|x)] - E_q[log p(h)] = -H(q) - log p(E(x))``. The (differential) entropy of
  a delta does not depend on ``x``, on the encoder or on the prior parameters, so it is a
  constant that carries no gradient, and the Monte-Carlo estimate of the remaining expectation
  is exact with a single sample, ``h = E(x)``. The trainable part of the KL is therefore the
  NLL ``-log p(E(x))``, which is what this function returns. Its gradient pulls latents toward
  the mixture means and (with learned means) the means toward the latents.

  Normalisation: with ``per_dim=True`` (the default, and what the ``gmm_vae`` task's λ
  multiplies) the result is the mean over valid frames of ``-log p(h_f) / D``, nats per
  latent dimension; with ``per_dim=False`` it is the mean over valid frames of the total
  ``-log p(h_f)`` (nats per frame, what ``torch.distributions.MixtureSameFamily.log_prob``
  gives). Per-dimension keeps one λ meaningful across latent sizes (e.g. the paper's D = 1024
  and tiny test models); λ_total = λ_per_dim / D converts between the two.

  Args:
    h: ``[B, F, D]`` latents.
    frame_mask: optional ``[B, F]`` (1 = real frame); ``None`` = all frames.
    means, log_weights, log_scales: as in ``gmm_log_prob``.
    per_dim: divide by ``D`` (see above).

  Returns:
    float32 scalar.
  """
  nll = -gmm_log_prob(h, means, log_weights, log_scales)  # [B, F]
  if frame_mask is None:
    out = jnp.mean(nll)
  else:
    frame_mask = jnp.asarray(frame_mask, jnp.float32)
    out = jnp.sum(nll * frame_mask) / jnp.maximum(jnp.sum(frame_mask), 1.0)
  if per_dim:
    out = out / h.shape[-1]
  return out


class GMMPrior(nn.Module):
  """Learned Gaussian-mixture prior of eq. 4, ``sum_l pi_l N(mu_l, diag sigma_l^2)``.

  Parameters: ``means`` [L, D] (init N(0, 1), logical ``('mixture', 'latent')``); with
  ``learn_weights`` also ``logits`` [L] (init 0, ``('mixture',)``); with ``learn_scales`` also
  ``log_scales`` [L, D] (init 0, ``('mixture', 'latent')``). The paper (§4) learns only the
  means: equal weights and identity covariances are the defaults.
  """
  num_mixtures: int = 3
  latent_dim: int = 1024
  learn_weights: bool = False
  learn_scales: bool = False

  def setup(self):
    self.means = self.param(
        "means", nn.with_logical_partitioning(nn.initializers.normal(1.0), ("mixture", "latent")),
        (self.num_mixtures, self.latent_dim), jnp.float32)
    if self.learn_weights:
      self.logits = self.param(
          "logits", nn.with_logical_partitioning(nn.initializers.zeros, ("mixture",)),
          (self.num_mixtures,), jnp.float32)
    if self.learn_scales:
      self.log_scales = self.param(
          "log_scales", nn.with_logical_partitioning(nn.initializers.zeros,
                                                     ("mixture", "latent")),
          (self.num_mixtures, self.latent_dim), jnp.float32)

  def parameters(self) -> Tuple[jax.Array, Optional[jax.Array], Optional[jax.Array]]:
    """``(means [L, D], log_weights [L] or None, log_scales [L, D] or None)``."""
    log_weights = jax.nn.log_softmax(self.logits) if self.learn_weights else None
    log_scales = self.log_scales if self.learn_scales else None
    return self.means, log_weights, log_scales

  def log_prob(self, h: jax.Array) -> jax.Array:
    """``log p(h)``: ``[..., D] -> [...]``."""
    means, log_weights, log_scales = self.parameters()
    return gmm_log_prob(h, means, log_weights, log_scales)

  def __call__(self, h: jax.Array, frame_mask: Optional[jax.Array] = None, *,
               per_dim: bool = True) -> jax.Array:
    """``gmm_prior_nll`` of ``h`` [B, F, D] under this prior (scalar)."""
    means, log_weights, log_scales = self.parameters()
    return gmm_prior_nll(h, frame_mask, means=means, log_weights=log_weights,
                         log_scales=log_scales, per_dim=per_dim)


def frame_mask_from_lengths(lengths: jax.Array, num_frames: int, hop_length: int) -> jax.Array:
  """``[B, num_frames]`` float mask: frame ``f`` is valid when ``f * hop_length < length``
  (it holds at least one real sample)."""
  starts = hop_length * jnp.arange(num_frames)
  return (starts[None, :] < jnp.asarray(lengths)[:, None]).astype(jnp.float32)


# ------------------------------------------------------------------------- conv networks ----

class ResidualUnit(nn.Module):
  """DAC residual unit on ``[B, T, C]``: ``x + conv_k1(snake(conv_k7_dilated(snake(x))))``."""
  dilation: int = 1
  kernel_size: int = 7
  dtype: Any = jnp.float32
  snake_beta: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    x = x.astype(self.dtype)
    y = Snake(dtype=self.dtype, beta=self.snake_beta, name="snake_0")(x)
    y = Conv1d(channels, self.kernel_size, dilation=self.dilation, dtype=self.dtype,
               name="conv_0")(y)
    y = Snake(dtype=self.dtype, beta=self.snake_beta, name="snake_1")(y)
    y = Conv1d(channels, 1, dtype=self.dtype, name="conv_1")(y)
    return x + y


class ResidualStack(nn.Module):
  """``ResidualUnit`` for each dilation (DAC: 1, 3, 9); the unit of rematerialisation."""
  dilations: Tuple[int, ...] = (1, 3, 9)
  dtype: Any = jnp.float32
  snake_beta: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, d in enumerate(self.dilations):
      x = ResidualUnit(dilation=d, dtype=self.dtype, snake_beta=self.snake_beta,
                       name=f"unit_{i}")(x)
      x = nn.with_logical_constraint(x, _ACT)
    return x


def _residual_stack(remat: bool):
  return nn.remat(ResidualStack) if remat else ResidualStack


class EncoderBlock(nn.Module):
  """Residual units at the input width, then Snake and a ``k = 2s`` stride-``s`` WNConv to
  ``features`` channels: ``[B, T, C] -> [B, T // s, features]``."""
  features: int
  stride: int
  dilations: Tuple[int, ...] = (1, 3, 9)
  dtype: Any = jnp.float32
  remat: bool = False
  snake_beta: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = _residual_stack(self.remat)(self.dilations, self.dtype, self.snake_beta, name="res")(x)
    x = Snake(dtype=self.dtype, beta=self.snake_beta, name="snake")(x)
    x = Conv1d(self.features, 2 * self.stride, stride=self.stride, dtype=self.dtype,
               name="down")(x)
    return nn.with_logical_constraint(x, _ACT)


class DecoderBlock(nn.Module):
  """Snake, a ``k = 2s`` stride-``s`` WNConvTranspose to ``features`` channels, then residual
  units: ``[B, F, C] -> [B, F * s, features]``."""
  features: int
  stride: int
  dilations: Tuple[int, ...] = (1, 3, 9)
  dtype: Any = jnp.float32
  remat: bool = False
  snake_beta: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = Snake(dtype=self.dtype, beta=self.snake_beta, name="snake")(x)
    x = ConvTranspose1d(self.features, self.stride, dtype=self.dtype, name="up")(x)
    x = nn.with_logical_constraint(x, _ACT)
    x = _residual_stack(self.remat)(self.dilations, self.dtype, self.snake_beta, name="res")(x)
    return nn.with_logical_constraint(x, _ACT)


class GMMVAEEncoder(nn.Module):
  """``wav [B, T] -> h [B, T // hop, latent_dim]`` (float32); T should be a multiple of hop
  (``GMMVAE.encode`` pads to one). Channels double at every stride: encoder_dim * 2**i."""
  encoder_dim: int = 64
  strides: Tuple[int, ...] = (2, 4, 8, 8)
  latent_dim: int = 1024
  dilations: Tuple[int, ...] = (1, 3, 9)
  dtype: Any = jnp.float32
  remat: bool = False
  snake_beta: bool = False  # SnakeBeta activations (jaxtts.nn.snake; the released FACodec's)

  @nn.compact
  def __call__(self, wav: jax.Array) -> jax.Array:
    x = nn.with_logical_constraint(wav, ("batch", "time"))[..., None]  # [B, T, 1]
    x = Conv1d(self.encoder_dim, 7, dtype=self.dtype, name="conv_in")(x)
    x = nn.with_logical_constraint(x, _ACT)
    channels = self.encoder_dim
    for i, stride in enumerate(self.strides):
      channels *= 2
      x = EncoderBlock(channels, stride, self.dilations, self.dtype, self.remat,
                       self.snake_beta, name=f"block_{i}")(x)
    x = Snake(dtype=self.dtype, beta=self.snake_beta, name="snake_out")(x)
    h = Conv1d(self.latent_dim, 3, dtype=self.dtype, name="conv_out")(x)
    return nn.with_logical_constraint(h.astype(jnp.float32), _ACT)


class GMMVAEDecoder(nn.Module):
  """``h [B, F, D] -> wav [B, F * hop]`` (float32, in (-1, 1) through tanh). Channels halve at
  every stride: decoder_dim / 2**(i+1)."""
  decoder_dim: int = 1536
  strides: Tuple[int, ...] = (8, 8, 4, 2)
  dilations: Tuple[int, ...] = (1, 3, 9)
  dtype: Any = jnp.float32
  remat: bool = False
  snake_beta: bool = False  # SnakeBeta activations (jaxtts.nn.snake; the released FACodec's)

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    x = nn.with_logical_constraint(h, _ACT)
    x = Conv1d(self.decoder_dim, 7, dtype=self.dtype, name="conv_in")(x)
    x = nn.with_logical_constraint(x, _ACT)
    channels = self.decoder_dim
    for i, stride in enumerate(self.strides):
      if channels % 2:
        raise ValueError(f"decoder_dim={self.decoder_dim} cannot be halved {i + 1} times")
      channels //= 2
      x = DecoderBlock(channels, stride, self.dilations, self.dtype, self.remat,
                       self.snake_beta, name=f"block_{i}")(x)
    x = Snake(dtype=self.dtype, beta=self.snake_beta, name="snake_out")(x)
    x = Conv1d(1, 7, dtype=self.dtype, name="conv_out")(x)
    wav = jnp.tanh(x.astype(jnp.float32))[..., 0]
    return nn.with_logical_constraint(wav, ("batch", "time"))


class GMMVAE(nn.Module):
  """GMM-VAE codec generator (paper §3.1, A.5): encoder, decoder and the GMM prior of eq. 4.

  ``latent_dim=None`` uses DAC's default ``encoder_dim * 2**len(encoder_strides)``;
  ``decoder_strides=None`` mirrors the encoder strides.

  ``decoder``: ``"dac"`` (the paper's transposed-conv decoder, A.5; ``decoder_dim`` and the
  strides) or ``"vocos"`` (``jaxtts.nn.vocos.VocosDecoder``: ConvNeXt blocks at the latent
  frame rate and an inverse STFT of hop ``hop_length``; ``vocos_dim``,
  ``vocos_intermediate_dim``, ``vocos_layers``, ``vocos_n_fft``). The paper is silent on any
  decoder but DAC's; Vocos is our choice for small compute, where a decoder that runs at the
  sample rate learns the phase too slowly (issue 12's sweep). The posterior is deterministic
  (``h = E(x)``; no quantizer and no noise), so ``train`` changes nothing today; it is kept so
  the task API is uniform.

  ``encoder``: ``"dac"`` (A.5's strided convolutions at the sample rate) or ``"vocos"``
  (``jaxtts.nn.vocos.VocosEncoder``: a log-magnitude STFT of n_fft ``vocos_n_fft`` and
  ConvNeXt blocks at the frame rate, ``spectral_encoder_*``; ours, for small compute). With
  it only the product of ``encoder_strides``, the hop, is used.
  """
  encoder_dim: int = 64
  encoder_strides: Tuple[int, ...] = (2, 4, 8, 8)
  decoder_dim: int = 1536
  decoder_strides: Optional[Tuple[int, ...]] = None
  latent_dim: Optional[int] = None
  dilations: Tuple[int, ...] = (1, 3, 9)
  num_mixtures: int = 3
  learn_weights: bool = False
  learn_scales: bool = False
  dtype: Any = jnp.float32
  remat: bool = False
  decoder_type: str = "dac"
  vocos_dim: int = 512
  vocos_intermediate_dim: int = 1536
  vocos_layers: int = 8
  vocos_n_fft: Optional[int] = None
  # The source-filter Vocos head (ours, issue 12): an F0 head on the latent h predicts the
  # frame F0 and voicing; the decoder is driven by the recording's in training, the head's when
  # decoding latents alone (codec decode, the GMM-LM's output).
  excitation: bool = False
  # Where the excitation's F0 comes from when decoding latents alone (model.f0_source):
  # "head", the F0 head on the learned latent; "latent", the last PITCH_CHANNELS channels of
  # the latent, which `encode` fills from the F0 it is given (WORLD's, `jaxtts.audio.f0`).
  f0_source: str = "head"
  sample_rate: int = 16000
  encoder_type: str = "dac"
  spectral_encoder_dim: int = 256
  spectral_encoder_intermediate_dim: int = 768
  spectral_encoder_layers: int = 4

  @property
  def hop_length(self) -> int:
    return int(np.prod(self.encoder_strides))

  @property
  def resolved_latent_dim(self) -> int:
    if self.latent_dim is not None:
      return int(self.latent_dim)
    return self.encoder_dim * 2 ** len(self.encoder_strides)

  @property
  def pitch_in_latent(self) -> bool:
    """Whether the latent's last `PITCH_CHANNELS` channels carry the F0 (``f0_source``)."""
    return self.excitation and self.f0_source == "latent"

  @property
  def learned_latent_dim(self) -> int:
    """The encoder's channels: the latent minus its pitch channels; the prior's dims."""
    return self.resolved_latent_dim - (PITCH_CHANNELS if self.pitch_in_latent else 0)

  @property
  def resolved_decoder_strides(self) -> Tuple[int, ...]:
    if self.decoder_strides is not None:
      return tuple(self.decoder_strides)
    return tuple(reversed(tuple(self.encoder_strides)))

  def num_frames(self, num_samples: int) -> int:
    """Latent frames for ``num_samples`` of audio: ``ceil(T / hop)`` (``T // hop`` when T is a
    multiple of the hop)."""
    return -(-int(num_samples) // self.hop_length)

  def setup(self):
    if int(np.prod(self.resolved_decoder_strides)) != self.hop_length:
      raise ValueError(f"decoder strides {self.resolved_decoder_strides} do not invert encoder "
                       f"strides {tuple(self.encoder_strides)}")
    if self.f0_source not in ("head", "latent"):
      raise ValueError(f"model.f0_source must be 'head' or 'latent', got {self.f0_source!r}")
    if self.learned_latent_dim < 1:
      raise ValueError(f"model.latent_dim={self.resolved_latent_dim} leaves no learned "
                       f"channels beside the {PITCH_CHANNELS} pitch channels "
                       f"(model.f0_source='latent')")
    if self.encoder_type == "dac":
      self.encoder = GMMVAEEncoder(self.encoder_dim, tuple(self.encoder_strides),
                                   self.learned_latent_dim, tuple(self.dilations), self.dtype,
                                   self.remat)
    elif self.encoder_type == "vocos":
      self.encoder = VocosEncoder(self.hop_length, self.learned_latent_dim,
                                  self.spectral_encoder_dim,
                                  self.spectral_encoder_intermediate_dim,
                                  self.spectral_encoder_layers, self.vocos_n_fft, self.dtype)
    else:
      raise ValueError(f"model.encoder must be 'dac' or 'vocos', got {self.encoder_type!r}")
    if self.decoder_type == "dac":
      self.decoder = GMMVAEDecoder(self.decoder_dim, self.resolved_decoder_strides,
                                   tuple(self.dilations), self.dtype, self.remat)
    elif self.decoder_type == "vocos":
      self.decoder = VocosDecoder(self.hop_length, self.vocos_dim, self.vocos_intermediate_dim,
                                  self.vocos_layers, self.vocos_n_fft,
                                  excitation=self.excitation, sample_rate=self.sample_rate,
                                  dtype=self.dtype)
    else:
      raise ValueError(f"model.decoder must be 'dac' or 'vocos', got {self.decoder_type!r}")
    if self.excitation:
      if self.decoder_type != "vocos":
        raise ValueError(f"model.excitation drives the Vocos decoder; model.decoder is "
                         f"{self.decoder_type!r}")
      if not self.pitch_in_latent:
        self.f0_head = nn.Dense(2, dtype=jnp.float32, name="f0_head")
    self.prior = GMMPrior(self.num_mixtures, self.learned_latent_dim, self.learn_weights,
                          self.learn_scales)

  def encode(self, wav: jax.Array, f0: Optional[jax.Array] = None,
             voiced: Optional[jax.Array] = None) -> jax.Array:
    """``wav [B, T] -> h [B, F = ceil(T / hop), D]`` (float32). Like DAC's ``preprocess``,
    the waveform is zero-padded on the right to a multiple of the hop first. With
    ``f0_source="latent"``, ``f0, voiced [B, F']`` (frames of `jaxtts.audio.f0`, cut or
    zero-padded to F) fill the last `PITCH_CHANNELS` channels (`pitch_channels`)."""
    length = wav.shape[-1]
    frames = self.num_frames(length)
    pad = frames * self.hop_length - length
    if pad:
      wav = jnp.pad(wav, ((0, 0), (0, pad)))
    h = self.encoder(wav)
    if not self.pitch_in_latent:
      return h
    if f0 is None or voiced is None:
      raise ValueError("GMMVAE(f0_source='latent').encode needs the frame f0 and voiced")
    fit = lambda x: jnp.pad(x[:, :frames], ((0, 0), (0, max(0, frames - x.shape[1]))))  # noqa: E731
    return jnp.concatenate([h, pitch_channels(fit(f0), fit(voiced))], axis=-1)

  def decode(self, h: jax.Array, f0: Optional[jax.Array] = None,
             voiced: Optional[jax.Array] = None) -> jax.Array:
    """``h [B, F, D] -> wav [B, F * hop]`` (float32); with ``excitation`` at ``f0, voiced
    [B, F]`` (the F0 head's on ``h`` when not given)."""
    if not self.excitation:
      return self.decoder(h)
    if f0 is None:
      f0, voiced = (pitch_from_channels(h[..., -PITCH_CHANNELS:]) if self.pitch_in_latent
                    else f0_from_head(self.f0_head(h)))
    return self.decoder(h, f0=f0, voiced=voiced)

  def prior_nll(self, h: jax.Array, frame_mask: Optional[jax.Array] = None, *,
                per_dim: bool = True) -> jax.Array:
    """Eq. 4's prior term for latents ``h`` [B, F, D] (see ``gmm_prior_nll``), over the
    learned channels (pitch channels are data, not the encoder's)."""
    return self.prior(h[..., :self.learned_latent_dim], frame_mask, per_dim=per_dim)

  def __call__(self, wav: jax.Array, train: bool = False, *,
               frame_mask: Optional[jax.Array] = None, f0: Optional[jax.Array] = None,
               voiced: Optional[jax.Array] = None) -> Dict[str, jax.Array]:
    """Encodes and reconstructs ``wav`` [B, T].

    Returns:
      ``latents`` h [B, F, D] float32 with ``F = num_frames(T)`` (``= T // hop`` for T a
      multiple of the hop), ``reconstruction`` [B, T] float32 (decoder output cropped to T),
      and ``prior_nll``, the per-dimension GMM negative log-likelihood of the latents over the
      frames of ``frame_mask`` [B, F] (all frames when None); with the Vocos decoder also
      its head's ``head_log_magnitude`` and ``head_phase`` [B, F, n_fft // 2 + 1]; with
      ``excitation`` the F0 head's ``f0_raw`` [B, F, 2], the decoder driven by ``f0, voiced
      [B, F]`` when given (training) and by the head's otherwise; with ``f0_source="latent"``
      ``f0, voiced`` are required and go through the latent's pitch channels (no head).
    """
    del train  # deterministic posterior
    h = self.encode(wav, f0, voiced)
    out = {}
    source = {}
    if self.pitch_in_latent:
      source = dict(zip(("f0", "voiced"), pitch_from_channels(h[..., -PITCH_CHANNELS:])))
    elif self.excitation:
      out["f0_raw"] = self.f0_head(h)
      if f0 is None:
        f0, voiced = f0_from_head(out["f0_raw"])
      source = dict(f0=f0, voiced=voiced)
    if self.decoder_type == "vocos":
      decoded, (out["head_log_magnitude"], out["head_phase"]) = self.decoder(
          h, with_spectrum=True, **source)
    else:
      decoded = self.decode(h)
    return dict(latents=h, reconstruction=decoded[:, :wav.shape[-1]],
                prior_nll=self.prior_nll(h, frame_mask), **out)


def from_config(cfg: Any) -> GMMVAE:
  """The model of a ``gmm_vae`` config (``configs/gmm_vae.py``: ``model.*`` and
  ``train.compute_dtype``); used by the task and by the inference codec alike."""
  m = cfg.model
  vocos = m.get("vocos") or {}
  spectral = m.get("vocos_encoder") or {}
  return GMMVAE(encoder_dim=m.encoder_dim, encoder_strides=tuple(m.encoder_strides),
                decoder_dim=m.decoder_dim, latent_dim=m.latent_dim,
                num_mixtures=m.num_mixtures, learn_weights=m.learn_weights,
                learn_scales=m.learn_scales, remat=m.remat,
                dtype=dtype_of(cfg.train.compute_dtype),
                decoder_type=m.get("decoder", "dac"),
                excitation=bool(m.get("excitation", False)),
                f0_source=str(m.get("f0_source", "head")),
                sample_rate=int(cfg.data.sample_rate),
                vocos_dim=vocos.get("dim", 512),
                vocos_intermediate_dim=vocos.get("intermediate_dim", 1536),
                vocos_layers=vocos.get("num_layers", 8),
                vocos_n_fft=vocos.get("n_fft") or None,
                encoder_type=m.get("encoder", "dac"),
                spectral_encoder_dim=spectral.get("dim", 256),
                spectral_encoder_intermediate_dim=spectral.get("intermediate_dim", 768),
                spectral_encoder_layers=spectral.get("num_layers", 4))
