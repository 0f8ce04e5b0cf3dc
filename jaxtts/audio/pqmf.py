"""Pseudo-QMF (PQMF) sub-band analysis and synthesis, jittable.

A cosine-modulated filter bank of ``N`` bands from one Kaiser-windowed low-pass prototype
(Nguyen 1994; the design of Lin & Vaidyanathan, "A Kaiser window approach for the design of
prototype filters of cosine modulated filterbanks", IEEE SPL 1998, used by Multi-band MelGAN
and MB-iSTFT-VITS). CLONE's multi-band discriminator (`000_31cfc13db0a5a5eb.txt`, Table 4:
2 bands at 24 kHz, 4 at 48 kHz) judges these sub-bands (`jaxtts.nn.subband`).

* prototype ``p[n] = w_kaiser(n; β) · sin(ω_c (n - L/2)) / (π (n - L/2))``, ``n = 0..L``
  (``L = taps``, ``ω_c = π · cutoff``): ``scipy.signal.firwin(L + 1, cutoff, window=('kaiser',
  β), scale=False)``;
* analysis ``h_k[n] = 2 p[n] cos((2k + 1) π / (2N) · (n - L/2) + (-1)^k π/4)``;
* synthesis ``g_k[n] = 2 p[n] cos((2k + 1) π / (2N) · (n - L/2) - (-1)^k π/4)``;
* ``bands[m, k] = (x * h_k)[m N]`` ('same' convolution, so no delay), and
  ``x̂ = N · Σ_k (up_N(bands[:, k]) * g_k)``.

``cutoff=None`` takes the cutoff that minimises Lin & Vaidyanathan's objective
``max_{0 ≤ ω ≤ π/N} | |P(ω)|² + |P(π/N - ω)|² - 1 |`` (`optimal_cutoff`): for N = 4,
62 taps, β = 9 it gives 0.142, the value Multi-band MelGAN's released code uses; for N = 2 it gives
0.267. Near-perfect reconstruction: x̂ matches x to about 60 dB SNR away from the edges.
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.signal

_DN = ("NWC", "WIO", "NWC")


def prototype(taps: int, cutoff: float, beta: float) -> np.ndarray:
  """The Kaiser-windowed ideal low-pass ``p [taps + 1]`` (float64; module docstring)."""
  if taps % 2 or taps <= 0:
    raise ValueError(f"PQMF taps must be a positive even number, got {taps}")
  if not 0.0 < cutoff < 1.0:
    raise ValueError(f"PQMF cutoff must be in (0, 1) (a fraction of Nyquist), got {cutoff}")
  return scipy.signal.firwin(taps + 1, cutoff, window=("kaiser", beta), scale=False)


def _objective(cutoff: float, n_bands: int, taps: int, beta: float) -> float:
  p = prototype(taps, cutoff, beta)
  w = np.linspace(0.0, np.pi / n_bands, 1024)
  power = np.abs(scipy.signal.freqz(p, worN=w)[1]) ** 2
  mirror = np.abs(scipy.signal.freqz(p, worN=np.pi / n_bands - w)[1]) ** 2
  return float(np.max(np.abs(power + mirror - 1.0)))


@functools.lru_cache(maxsize=None)
def optimal_cutoff(n_bands: int, taps: int = 62, beta: float = 9.0) -> float:
  """Lin & Vaidyanathan's cutoff (a fraction of Nyquist) for ``n_bands``, ``taps``, ``β``."""
  if n_bands < 2:
    raise ValueError(f"PQMF needs at least 2 bands, got {n_bands}")
  centre = 0.5 / n_bands
  res = scipy.optimize.minimize_scalar(_objective, bounds=(0.6 * centre, 1.4 * centre),
                                       args=(n_bands, taps, beta), method="bounded",
                                       options=dict(xatol=1e-6))
  return float(res.x)


@functools.lru_cache(maxsize=None)
def pqmf_filters(n_bands: int, taps: int = 62, cutoff: Optional[float] = None,
                 beta: float = 9.0) -> Tuple[np.ndarray, np.ndarray]:
  """``(analysis h [N, taps + 1], synthesis g [N, taps + 1])``, float64 (module docstring)."""
  if n_bands < 2:
    raise ValueError(f"PQMF needs at least 2 bands, got {n_bands}")
  cutoff = optimal_cutoff(n_bands, taps, beta) if cutoff is None else float(cutoff)
  p = prototype(taps, cutoff, beta)
  n = np.arange(taps + 1) - taps / 2
  k = np.arange(n_bands)[:, None]
  phase = (2 * k + 1) * np.pi / (2 * n_bands) * n
  sign = (-1.0) ** k * np.pi / 4
  return 2 * p * np.cos(phase + sign), 2 * p * np.cos(phase - sign)


def pqmf_analysis(wav: jax.Array, n_bands: int, taps: int = 62,
                  cutoff: Optional[float] = None, beta: float = 9.0) -> jax.Array:
  """``wav [B, T]`` -> sub-bands ``[B, ceil(T / N), N]`` (float32) at rate ``sr / N``."""
  h, _ = pqmf_filters(n_bands, taps, cutoff, beta)
  # Convolution = correlation with the time-reversed filter; kernel [taps + 1, 1, N].
  kernel = jnp.asarray(h[:, ::-1].T[:, None, :], jnp.float32)
  x = jnp.asarray(wav, jnp.float32)[..., None]
  return jax.lax.conv_general_dilated(x, kernel, window_strides=(n_bands,),
                                      padding=[(taps // 2, taps // 2)], dimension_numbers=_DN)


def pqmf_synthesis(bands: jax.Array, taps: int = 62, cutoff: Optional[float] = None,
                   beta: float = 9.0) -> jax.Array:
  """Sub-bands ``[B, M, N]`` -> ``wav [B, M · N]`` (float32), the inverse of `pqmf_analysis`
  up to the bank's near-perfect-reconstruction error."""
  n_bands = bands.shape[-1]
  _, g = pqmf_filters(n_bands, taps, cutoff, beta)
  kernel = jnp.asarray(n_bands * g[:, ::-1].T[:, :, None], jnp.float32)   # [taps + 1, N, 1]
  # lhs_dilation inserts N - 1 zeros between samples (the upsampler); the extra N - 1 on the
  # right stand for the zeros after the last sample, so the output has M · N samples.
  y = jax.lax.conv_general_dilated(jnp.asarray(bands, jnp.float32), kernel, window_strides=(1,),
                                   padding=[(taps // 2, taps // 2 + n_bands - 1)],
                                   lhs_dilation=(n_bands,), dimension_numbers=_DN)
  return y[..., 0]
