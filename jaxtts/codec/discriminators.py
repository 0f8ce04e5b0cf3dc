"""DAC's GAN discriminators for the GMM-VAE codec.

The GMM-VAE paper (``../shared/papers/002_3b51400f309666e7.txt``, §3.1 after eq. 4) trains the
codec "with Mel-spectrogram reconstruction loss and add[ed] discriminators, as done in ... DAC
(Kumar et al., 2024)". This file ports ``dac/model/discriminator.py`` of descript-audio-codec
(``Discriminator(rates=[], periods=[2, 3, 5, 7, 11], fft_sizes=[2048, 1024, 512], bands=BANDS)``)
to channels-last linen:

* ``PeriodDiscriminator`` (MPD, HiFi-GAN): ``wav`` [B, T] is reflect-padded on the right by
  ``p - T % p`` samples (DAC's ``pad_to_period``; a whole period when ``T % p == 0``) and viewed
  as ``[B, T_p / p, p, 1]`` (time down the rows, phase within the period across). Then
  ``len(channels)`` WNConv2d layers, kernel (5, 1), padding (2, 0), stride (3, 1) except the last
  (stride 1), each followed by LeakyReLU(0.1); channels 1 -> 32 -> 128 -> 512 -> 1024 -> 1024;
  then a (3, 1) WNConv2d to 1 channel (the logits, no activation).
* ``BandSTFTDiscriminator`` (MRD, DAC's multi-band complex STFT discriminator): for a window
  length ``w`` (n_fft = w, hop ``h = w // 4``, periodic Hann) the complex STFT with audiotools'
  ``match_stride=True`` framing (``ceil(T / h)`` frames; see ``mrd_spectrogram``) is taken as
  two real channels ``[B, frames, w // 2 + 1, 2]`` (real, imag). It is split along frequency
  into bands given as fractions of Nyquist, ``(int(lo * n_bins), int(hi * n_bins))`` with
  ``n_bins = w // 2 + 1`` (so the split is the same at 16, 24, 48 kHz: it only depends on the
  bins). Each band has its own stack: WNConv2d (3, 9) stride (1, 1), three WNConv2d (3, 9)
  stride (1, 2) (stride over frequency), WNConv2d (3, 3), all with ``channels`` (32) outputs and
  LeakyReLU(0.1). The band outputs are concatenated along frequency and a (3, 3) WNConv2d maps
  them to 1 channel (the logits).
* ``Discriminators``: DAC's ``preprocess`` (remove the DC offset, peak-normalise to 0.8), then
  all MPDs, all MRDs, and with ``subbands = N > 0`` CLONE's multi-band discriminator
  (`jaxtts.nn.subband.SubBandDiscriminator`: PQMF sub-bands, one 1-D discriminator each).
  Output: a list over sub-discriminators of lists of feature maps
  ``[B, H, W, C]`` (each conv's post-activation output, as DAC's ``fmap``); the last entry of
  each inner list is the logits map ``[B, H, W, 1]``.

Parameters are float32 (``jaxtts.nn.conv2d.Conv2d``: logical kernel axes ``('conv_kernel',
'conv_kernel_w', 'conv2d_in', 'conv2d_out')``); ``dtype`` is the compute dtype (bf16 allowed; the
STFT and the preprocessing are always float32).
"""

from __future__ import annotations

import math
from typing import Any, List, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxtts.audio.spectral import stft
from jaxtts.nn.conv2d import Conv2d
from jaxtts.nn.subband import SUBBAND_CHANNELS, SUBBAND_STRIDES, SubBandDiscriminator

# DAC's frequency bands, fractions of the Nyquist bin count (dac/model/discriminator.py BANDS).
DAC_BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))
DAC_PERIODS = (2, 3, 5, 7, 11)
DAC_WINDOW_LENGTHS = (2048, 1024, 512)
DAC_MPD_CHANNELS = (32, 128, 512, 1024, 1024)
DAC_MRD_CHANNELS = 32

FeatureMaps = List[jax.Array]


def band_bins(window_length: int, bands: Sequence[Tuple[float, float]]) -> Tuple[Tuple[int, int],
                                                                                 ...]:
  """Bin ranges ``[(lo, hi), ...]`` of ``bands`` (fractions of Nyquist) for an ``n_fft`` of
  ``window_length``: ``(int(lo * n_bins), int(hi * n_bins))``, ``n_bins = w // 2 + 1`` (DAC)."""
  n_bins = window_length // 2 + 1
  out = tuple((int(lo * n_bins), int(hi * n_bins)) for lo, hi in bands)
  for (lo, hi), band in zip(out, bands):
    if not 0 <= lo < hi <= n_bins:
      raise ValueError(f"band {band} is empty or out of range for window_length "
                       f"{window_length} ({n_bins} bins): bins [{lo}, {hi})")
  return out


def mrd_spectrogram(wav: jax.Array, window_length: int) -> jax.Array:
  """Complex STFT as two real channels with audiotools' ``match_stride=True`` framing.

  ``AudioSignal.stft(window_length=w, hop_length=w // 4, match_stride=True)``: reflect-pad
  ``(w - h) // 2`` samples on the left and ``(w - h) // 2 + ceil(T / h) * h - T`` on the right,
  ``torch.stft(center=True)`` (a further ``w // 2`` reflect pad each side), drop the first two
  and the last two frames. Frame ``j`` is then centred on sample ``(j + 1/2) h``.

  Args:
    wav: ``[B, T]`` waveform.
    window_length: n_fft = window length ``w`` (a multiple of 8); hop ``h = w // 4``.

  Returns:
    float32 ``[B, ceil(T / h), w // 2 + 1, 2]`` (real, imaginary).
  """
  w = int(window_length)
  if w % 8:
    raise ValueError(f"window_length must be a multiple of 8, got {w}")
  h = w // 4
  length = wav.shape[-1]
  right = math.ceil(length / h) * h - length
  pad = (w - h) // 2
  x = jnp.pad(jnp.asarray(wav, jnp.float32), ((0, 0), (pad, pad + right)), mode="reflect")
  spec = stft(x, n_fft=w, hop_length=h, center=True)[:, 2:-2]  # [B, ceil(T/h), w//2+1]
  return jnp.stack([spec.real, spec.imag], axis=-1)


def preprocess(wav: jax.Array) -> jax.Array:
  """DAC ``Discriminator.preprocess``: ``y = x - mean_t(x)``; ``0.8 * y / (max_t |y| + 1e-9)``."""
  wav = jnp.asarray(wav, jnp.float32)
  y = wav - jnp.mean(wav, axis=-1, keepdims=True)
  return 0.8 * y / (jnp.max(jnp.abs(y), axis=-1, keepdims=True) + 1e-9)


class PeriodDiscriminator(nn.Module):
  """Multi-period sub-discriminator (DAC ``MPD``): ``wav`` [B, T] -> feature maps
  ``[B, H_i, period, C_i]``, last ``[B, H, period, 1]`` logits (see the module docstring)."""
  period: int
  channels: Sequence[int] = DAC_MPD_CHANNELS
  kernel_size: int = 5
  stride: int = 3
  negative_slope: float = 0.1
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, wav: jax.Array) -> FeatureMaps:
    p = int(self.period)
    x = jnp.pad(wav, ((0, 0), (0, p - wav.shape[-1] % p)), mode="reflect")
    x = x.reshape(x.shape[0], x.shape[1] // p, p, 1).astype(self.dtype)  # [B, T/p, p, 1]
    k, n = int(self.kernel_size), len(self.channels)
    fmap = []
    for i, c in enumerate(self.channels):
      s = self.stride if i < n - 1 else 1
      x = Conv2d(int(c), (k, 1), (s, 1), padding=(k // 2, 0), dtype=self.dtype,
                 param_dtype=self.param_dtype, name=f"conv_{i}")(x)
      x = nn.leaky_relu(x, self.negative_slope)
      fmap.append(x)
    x = Conv2d(1, (3, 1), padding=(1, 0), dtype=self.dtype, param_dtype=self.param_dtype,
               name="conv_post")(x)
    fmap.append(x)
    return fmap


class BandSTFTDiscriminator(nn.Module):
  """Multi-band complex-STFT sub-discriminator (DAC ``MRD``): ``wav`` [B, T] ->
  ``5 * len(bands)`` band feature maps ``[B, frames, F_band_i, channels]`` (band-major) and
  the logits ``[B, frames, sum_b F_b, 1]``, ``frames = ceil(T / (w // 4))``."""
  window_length: int
  bands: Sequence[Tuple[float, float]] = DAC_BANDS
  channels: int = DAC_MRD_CHANNELS
  negative_slope: float = 0.1
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, wav: jax.Array) -> FeatureMaps:
    spec = mrd_spectrogram(wav, self.window_length).astype(self.dtype)  # [B, N, F, 2]
    # (kernel (time, freq), stride (time, freq), padding) of DAC's per-band stack.
    layers = [((3, 9), (1, 1), (1, 4))] + [((3, 9), (1, 2), (1, 4))] * 3 + [((3, 3), (1, 1),
                                                                              (1, 1))]
    fmap, outs = [], []
    for b, (lo, hi) in enumerate(band_bins(self.window_length, self.bands)):
      x = spec[:, :, lo:hi]
      for i, (k, s, pad) in enumerate(layers):
        x = Conv2d(self.channels, k, s, padding=pad, dtype=self.dtype,
                   param_dtype=self.param_dtype, name=f"band_{b}_conv_{i}")(x)
        x = nn.leaky_relu(x, self.negative_slope)
        fmap.append(x)
      outs.append(x)
    x = jnp.concatenate(outs, axis=2)
    x = Conv2d(1, (3, 3), padding=(1, 1), dtype=self.dtype, param_dtype=self.param_dtype,
               name="conv_post")(x)
    fmap.append(x)
    return fmap


class Discriminators(nn.Module):
  """DAC's discriminator ensemble: ``wav`` [B, T] -> list (MPD per period, then MRD per window
  length) of lists of feature maps ``[B, H, W, C]``; each inner list ends with the logits
  ``[B, H, W, 1]``. ``normalize`` applies DAC's DC removal and peak normalisation first."""
  periods: Sequence[int] = DAC_PERIODS
  window_lengths: Sequence[int] = DAC_WINDOW_LENGTHS
  bands: Sequence[Tuple[float, float]] = DAC_BANDS
  mpd_channels: Sequence[int] = DAC_MPD_CHANNELS
  mrd_channels: int = DAC_MRD_CHANNELS
  subbands: int = 0                      # CLONE's multi-band discriminator: 0 = off
  subband_channels: Sequence[int] = SUBBAND_CHANNELS
  subband_strides: Sequence[int] = SUBBAND_STRIDES
  negative_slope: float = 0.1
  normalize: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, wav: jax.Array) -> List[FeatureMaps]:
    if wav.ndim != 2:
      raise ValueError(f"Discriminators expect [B, T], got shape {wav.shape}")
    x = nn.with_logical_constraint(jnp.asarray(wav, jnp.float32), ("batch", "time"))
    if self.normalize:
      x = preprocess(x)
    outs = []
    for p in self.periods:
      outs.append(PeriodDiscriminator(int(p), tuple(self.mpd_channels),
                                      negative_slope=self.negative_slope, dtype=self.dtype,
                                      param_dtype=self.param_dtype, name=f"mpd_{p}")(x))
    for w in self.window_lengths:
      outs.append(BandSTFTDiscriminator(int(w), tuple(tuple(b) for b in self.bands),
                                        int(self.mrd_channels), self.negative_slope,
                                        dtype=self.dtype, param_dtype=self.param_dtype,
                                        name=f"mrd_{w}")(x))
    if self.subbands:
      outs.extend(SubBandDiscriminator(int(self.subbands), tuple(self.subband_channels),
                                       tuple(self.subband_strides),
                                       negative_slope=self.negative_slope, dtype=self.dtype,
                                       name="subband")(x))
    return outs


def discriminator_config() -> ml_collections.ConfigDict:
  """DAC's discriminator defaults (descript-audio-codec ``conf/base.yml``), plus DAC's GAN loss
  kind and weights (``lambdas``: ``adv/gen_loss`` 1, ``adv/feat_loss`` 2; mel 15 lives with the
  codec's reconstruction loss)."""
  cfg = ml_collections.ConfigDict()
  cfg.periods = DAC_PERIODS
  cfg.window_lengths = DAC_WINDOW_LENGTHS
  cfg.bands = DAC_BANDS
  cfg.mpd_channels = DAC_MPD_CHANNELS
  cfg.mrd_channels = DAC_MRD_CHANNELS
  # CLONE's multi-band discriminator (Table 4: 2 bands at 24 kHz, 4 at 48 kHz): PQMF sub-bands
  # judged by their own 1-D discriminators (jaxtts.nn.subband); 0 = off (DAC has none).
  cfg.subbands = 0
  cfg.subband_channels = SUBBAND_CHANNELS
  cfg.subband_strides = SUBBAND_STRIDES
  cfg.negative_slope = 0.1
  cfg.normalize = True
  cfg.dtype = "float32"            # compute dtype; "bfloat16" allowed (params stay float32)
  cfg.loss = "lsgan"               # "lsgan" | "hinge" (jaxtts.codec.losses)
  cfg.adversarial_weight = 1.0
  cfg.feature_matching_weight = 2.0
  return cfg


def build_discriminators(cfg: ml_collections.ConfigDict) -> Discriminators:
  """``Discriminators`` from a ``discriminator_config()``-shaped ConfigDict."""
  return Discriminators(
      periods=tuple(int(p) for p in cfg.periods),
      window_lengths=tuple(int(w) for w in cfg.window_lengths),
      bands=tuple((float(lo), float(hi)) for lo, hi in cfg.bands),
      mpd_channels=tuple(int(c) for c in cfg.mpd_channels),
      mrd_channels=int(cfg.mrd_channels),
      subbands=int(cfg.get("subbands", 0)),
      subband_channels=tuple(int(c) for c in cfg.get("subband_channels", SUBBAND_CHANNELS)),
      subband_strides=tuple(int(s) for s in cfg.get("subband_strides", SUBBAND_STRIDES)),
      negative_slope=float(cfg.negative_slope),
      normalize=bool(cfg.normalize),
      dtype=jnp.dtype(cfg.dtype))
