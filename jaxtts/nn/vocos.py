"""A Vocos waveform head: ConvNeXt blocks at frame rate, STFT magnitude and phase, inverse STFT.

Siuzdenko, "Vocos: Closing the gap between time-domain and Fourier-based neural vocoders for
high-quality audio synthesis" (2023), §3 and the released ``vocos/models.py`` /
``vocos/heads.py``. The network never leaves the frame rate: a transposed-conv decoder
(DAC's, ``jaxtts.codec.gmm_vae``) runs its last layers at the sample rate and must learn the
phase sample by sample, while this head predicts one complex spectrum per frame and lets a
fixed inverse STFT (``jaxtts.audio.spectral.istft``) do the upsampling. That is what makes it
learn fast on little compute; FACodec's and CLONE's wave decoders reuse it.

Shapes (channels-last)::

  x [B, F, C_in] -> Conv1d(k7, dim) -> LN -> num_layers x ConvNeXtBlock -> LN     [B, F, dim]
       -> Dense(n_fft + 2) -> (log|S|, phase) -> S = exp(log|S|) e^{i phase}      [B, F, K]
       -> istft(S, padding="same")                                                 [B, F hop]
  ConvNeXtBlock: x + gamma * Dense(dim)(GELU(Dense(intermediate)(LN(depthwise_k7(x)))))

with ``K = n_fft // 2 + 1``.

``excitation=True`` (ours, after the neural source-filter model; issue 12) makes it a
source-filter decoder: the frame F0 and voicing join the input features, a second head predicts
a per-frame complex filter ``H = exp(log|H|) e^{i arg H}``, and the spectrum becomes
``S = S_noise + H ⊙ STFT(e)``, with ``e`` the harmonic excitation of
`jaxtts.audio.excitation` at the given F0 (analysed with the frames the inverse STFT writes,
`same_frames_stft`). The pulse train is coherent across frames, so the harmonics are too, and
the network only shapes their envelope; ``S_noise`` is the plain head, for the aperiodic part.
``H`` starts near ``0.05`` with zero phase (``HARMONIC_LOG_GAIN``).

As in Vocos, ``|S| = min(exp(log|S|), 100)`` and the phase is
used through ``cos`` and ``sin`` (so it wraps freely); ``gamma`` (layer scale) starts at
``1 / num_layers``; kernels start from a truncated normal of std 0.02 and biases at zero.
Parameters are float32 with logical axes ``('conv_kernel', None, 'embed')`` (the input and
the depthwise convolutions), ``('embed', 'mlp')``/``('mlp',
'embed')`` (the pointwise Dense layers), ``('embed', 'spectrum')`` (the output projection) and
``('embed',)`` for norms, biases and gammas.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtts.audio.excitation import F0_LOG_CENTRE, harmonic_excitation
from jaxtts.audio.spectral import istft, stft
from jaxtts.nn.conv import depthwise_conv1d

_ACT = ("batch", "time", "embed")
_INIT = nn.initializers.truncated_normal(0.02)
MAX_MAGNITUDE = 1e2  # Vocos' clip of exp(log|S|): a bound on the first steps' spectra
HARMONIC_LOG_GAIN = -3.0  # the harmonic filter's initial log|H|: the source starts quiet


def _dense(features: int, axes, dtype, name: str) -> nn.Dense:
  return nn.Dense(features, dtype=dtype, name=name,
                  kernel_init=nn.with_logical_partitioning(_INIT, axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[-1:]))


def _layer_norm(dtype, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=1e-6, dtype=dtype, name=name,
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))


class DepthwiseConv(nn.Module):
  """``[B, F, C] -> [B, F, C]``: a 'same' depthwise convolution with bias, parameters
  ``kernel [K, 1, C]`` and ``bias [C]`` (the layout of ``nn.Conv(feature_group_count=C)``),
  computed by `jaxtts.nn.conv.depthwise_conv1d` (shard-safe)."""
  kernel_size: int = 7
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    kernel = self.param("kernel", nn.with_logical_partitioning(
        _INIT, ("conv_kernel", None, "embed")), (self.kernel_size, 1, c), jnp.float32)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                      (c,), jnp.float32)
    left = (self.kernel_size - 1) // 2
    y = depthwise_conv1d(x.astype(self.dtype), kernel[:, 0, :],
                         (left, self.kernel_size - 1 - left))
    return y + bias.astype(y.dtype)


class ConvNeXtBlock(nn.Module):
  """``[B, F, dim] -> [B, F, dim]``: depthwise conv (k7, 'same'), LN, Dense to
  ``intermediate_dim``, GELU, Dense back, times the layer scale ``gamma``, plus the input."""
  intermediate_dim: int
  kernel_size: int = 7
  layer_scale: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dim = x.shape[-1]
    y = DepthwiseConv(self.kernel_size, self.dtype, name="depthwise")(x)
    y = _layer_norm(self.dtype, "norm")(y)
    y = _dense(self.intermediate_dim, ("embed", "mlp"), self.dtype, "pointwise_in")(y)
    y = nn.gelu(y, approximate=False)
    y = _dense(dim, ("mlp", "embed"), self.dtype, "pointwise_out")(y)
    gamma = self.param("gamma", nn.with_logical_partitioning(
        nn.initializers.constant(self.layer_scale), ("embed",)), (dim,), jnp.float32)
    return nn.with_logical_constraint(x + gamma.astype(y.dtype) * y, _ACT)


class VocosBackbone(nn.Module):
  """``[B, F, C_in] -> [B, F, dim]``: input conv (k7), LN, ConvNeXt blocks, final LN."""
  dim: int = 512
  intermediate_dim: int = 1536
  num_layers: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.dim, (7,), padding="SAME", dtype=self.dtype, name="embed",
                kernel_init=nn.with_logical_partitioning(_INIT, ("conv_kernel", None, "embed")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))(
                    x.astype(self.dtype))
    x = _layer_norm(self.dtype, "norm_in")(x)
    for i in range(self.num_layers):
      x = ConvNeXtBlock(self.intermediate_dim, layer_scale=1.0 / self.num_layers,
                        dtype=self.dtype, name=f"block_{i}")(x)
    return _layer_norm(self.dtype, "norm_out")(x)


def spectrum_from_head(out: jax.Array) -> jax.Array:
  """Vocos' ``ISTFTHead``: ``[..., n_fft + 2]`` real outputs -> complex ``[..., K]`` spectrum
  ``min(exp(log|S|), 100) (cos phase + i sin phase)`` (computed in float32)."""
  out = out.astype(jnp.float32)
  log_magnitude, phase = jnp.split(out, 2, axis=-1)
  magnitude = jnp.minimum(jnp.exp(log_magnitude), MAX_MAGNITUDE)
  return jax.lax.complex(magnitude * jnp.cos(phase), magnitude * jnp.sin(phase))


class VocosDecoder(nn.Module):
  """Frame-rate features ``[B, F, C_in]`` -> waveform ``[B, F * hop_length]`` (float32).

  ``n_fft=None`` uses ``4 * hop_length`` (Vocos: n_fft 1024 at hop 256), so the inverse STFT
  overlap-adds four frames per sample without a scatter.
  """
  hop_length: int
  dim: int = 512
  intermediate_dim: int = 1536
  num_layers: int = 8
  n_fft: Optional[int] = None
  excitation: bool = False        # the source-filter form (module docstring)
  sample_rate: int = 16000        # with excitation: the harmonics stop at sample_rate / 2
  dtype: Any = jnp.float32

  @property
  def resolved_n_fft(self) -> int:
    return int(self.n_fft) if self.n_fft is not None else 4 * int(self.hop_length)

  @nn.compact
  def __call__(self, x: jax.Array, with_spectrum: bool = False,
               f0: Optional[jax.Array] = None, voiced: Optional[jax.Array] = None):
    """``x [B, F, C_in] -> wav [B, F hop]``; with ``with_spectrum`` also the head's
    ``(log|S|, phase)``, each float32 ``[B, F, K]`` (log|S| before the clip), for losses on
    the spectrum itself (``jaxtts.audio.phase``). With ``excitation``, ``f0 [B, F]`` (Hz) and
    ``voiced [B, F]`` are required, and the spectrum returned is the sum ``S``."""
    n_fft = self.resolved_n_fft
    if n_fft % 2 or n_fft < self.hop_length:
      raise ValueError(f"VocosDecoder: n_fft={n_fft} must be even and >= hop_length="
                       f"{self.hop_length}")
    x = nn.with_logical_constraint(x, ("batch", "time", "channels"))
    if self.excitation:
      if f0 is None or voiced is None:
        raise ValueError("VocosDecoder(excitation=True) needs the frame f0 [B, F] and voiced "
                         "[B, F]")
      v = (jnp.asarray(voiced, bool) & (f0 > 0)).astype(jnp.float32)
      log_f0 = v * (jnp.log(jnp.maximum(jax.lax.stop_gradient(f0), 1.0)) - F0_LOG_CENTRE)
      x = jnp.concatenate([x.astype(jnp.float32), log_f0[..., None], v[..., None]], axis=-1)
    x = VocosBackbone(self.dim, self.intermediate_dim, self.num_layers, self.dtype,
                      name="backbone")(x)
    x = x.astype(jnp.float32)
    out = _dense(n_fft + 2, ("embed", "spectrum"), jnp.float32, "head")(x)
    spectrum = spectrum_from_head(out)
    if self.excitation:
      source = same_frames_stft(harmonic_excitation(f0, voiced, self.hop_length,
                                                    self.sample_rate), n_fft, self.hop_length)
      k = n_fft // 2 + 1
      filt = nn.Dense(n_fft + 2, dtype=jnp.float32, name="harmonic_head",
                      kernel_init=nn.with_logical_partitioning(_INIT, ("embed", "spectrum")),
                      bias_init=nn.with_logical_partitioning(
                          lambda key, shape, dtype: jnp.concatenate(
                              [jnp.full((k,), HARMONIC_LOG_GAIN), jnp.zeros((k,))]).astype(
                                  dtype), ("spectrum",)))(x)
      spectrum = spectrum + spectrum_from_head(filt) * source
    wav = istft(spectrum, n_fft, self.hop_length, padding="same")
    wav = nn.with_logical_constraint(wav, ("batch", "time"))
    if with_spectrum:
      if self.excitation:
        return wav, (jnp.log(jnp.abs(spectrum) + 1e-7), jnp.angle(spectrum))
      return wav, tuple(jnp.split(out, 2, axis=-1))
    return wav


def same_frames_stft(wav: jax.Array, n_fft: int, hop_length: int) -> jax.Array:
  """``wav [B, T] -> complex [B, T // hop, K]``: the analysis STFT whose frames are those of
  ``istft(padding="same")``: frame ``i`` starts at ``i * hop - (n_fft - hop) // 2`` (centred on
  the i-th hop of samples), with the signal reflect-padded by ``(n_fft - hop) // 2`` on the
  left and the rest on the right. T must be a multiple of the hop."""
  if wav.shape[-1] % hop_length:
    raise ValueError(f"same_frames_stft: {wav.shape[-1]} samples is not a multiple of the hop "
                     f"{hop_length}")
  left = (n_fft - hop_length) // 2
  wav = jnp.pad(jnp.asarray(wav, jnp.float32), ((0, 0), (left, n_fft - hop_length - left)),
                mode="reflect")
  return stft(wav, n_fft, hop_length, center=False)


class VocosEncoder(nn.Module):
  """Waveform ``[B, T]`` -> frame-rate features ``[B, T // hop, out_dim]`` (float32): the Vocos
  decoder mirrored, an encoder that never runs at the sample rate.

  ``log(|STFT| + 1e-5)`` of `same_frames_stft` (n_fft ``4 * hop`` by default), the
  `VocosBackbone`, then ``Dense(out_dim)``. Frame ``i`` sees samples around the i-th hop, the
  ones `VocosDecoder` writes from the i-th latent. Ours (not in any of the papers): the DAC
  encoder's first layers run at 16 kHz with ``encoder_dim`` channels and must learn a
  filterbank from scratch, which a fixed STFT gives at once (issue 12's sweep; the paper
  presets keep the DAC encoder).
  """
  hop_length: int
  out_dim: int
  dim: int = 256
  intermediate_dim: int = 768
  num_layers: int = 4
  n_fft: Optional[int] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, wav: jax.Array) -> jax.Array:
    n_fft = int(self.n_fft) if self.n_fft is not None else 4 * int(self.hop_length)
    if n_fft % 2 or n_fft < self.hop_length:
      raise ValueError(f"VocosEncoder: n_fft={n_fft} must be even and >= hop_length="
                       f"{self.hop_length}")
    wav = nn.with_logical_constraint(wav, ("batch", "time"))
    features = jnp.log(jnp.abs(same_frames_stft(wav, n_fft, self.hop_length)) + 1e-5)
    x = VocosBackbone(self.dim, self.intermediate_dim, self.num_layers, self.dtype,
                      name="backbone")(nn.with_logical_constraint(
                          features, ("batch", "time", "spectrum")))
    h = _dense(self.out_dim, ("embed", "latent"), jnp.float32, "project")(x.astype(jnp.float32))
    return nn.with_logical_constraint(h, ("batch", "time", "channels"))
