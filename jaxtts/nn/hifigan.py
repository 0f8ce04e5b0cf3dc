"""HiFi-GAN's generator (Kong et al., 2020, V1 with ResBlock1) as a wave decoder from frame
features, in VITS's form (``models.py:Generator``, ``configs/*.json``).

``x [B, F, C_in] -> wav [B, F · prod(upsample_rates)]``::

    x = conv_pre(x)                                              k7, ``channels``
    for each upsampling stage i (rate u_i, kernel k_i):
      x = ConvTranspose(LeakyReLU_0.1(x))                        channels / 2^(i+1), stride u_i,
                                                                 padding (k_i - u_i) / 2
      x = mean_j ResBlock1_j(x)                                  the multi-receptive-field fusion
    wav = tanh(conv_post(LeakyReLU_0.01(x)))                     k7, 1 channel, no bias

    ResBlock1(k, dilations): for each d: x = x + conv_k(LReLU_0.1(conv_{k,d}(LReLU_0.1(x))))

VITS's configuration (the default here): upsample rates (8, 8, 2, 2) with kernels
(16, 16, 4, 4), 512 initial channels, ResBlock1 kernels (3, 7, 11), dilations (1, 3, 5) for
each. All convolutions are weight-normalised (`jaxtts.nn.conv`, as the original HiFi-GAN;
VITS leaves ``conv_pre`` and ``conv_post`` plain); the upsampling and residual convolutions
start from HiFi-GAN's ``init_weights``, N(0, 0.01²). The final LeakyReLU has torch's default
slope 0.01, as both releases do. CLONE (`000_31cfc13db0a5a5eb.txt`, Table 4) names a wave
decoder without details; this is its ``decoder="hifigan"`` option.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtts.nn.conv import Conv1d, ConvTranspose1d

_ACT = ("batch", "time", "channels")
HIFIGAN_INIT_STD = 0.01


class ResBlock1(nn.Module):
  """``[B, T, C] -> [B, T, C]``: for each dilation ``d``, ``x + conv_k(σ(conv_{k,d}(σ(x))))``
  with σ = LeakyReLU(0.1), 'same' padding."""
  kernel_size: int = 3
  dilations: Sequence[int] = (1, 3, 5)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    for i, d in enumerate(self.dilations):
      y = Conv1d(c, self.kernel_size, dilation=int(d), init_std=HIFIGAN_INIT_STD,
                 dtype=self.dtype, name=f"conv1_{i}")(nn.leaky_relu(x, 0.1))
      y = Conv1d(c, self.kernel_size, init_std=HIFIGAN_INIT_STD, dtype=self.dtype,
                 name=f"conv2_{i}")(nn.leaky_relu(y, 0.1))
      x = nn.with_logical_constraint(x + y, _ACT)
    return x


class HiFiGANDecoder(nn.Module):
  """Frame features ``[B, F, C_in]`` -> waveform ``[B, F · hop]`` in (-1, 1) (module
  docstring); ``hop = prod(upsample_rates)``."""
  upsample_rates: Sequence[int] = (8, 8, 2, 2)
  upsample_kernel_sizes: Sequence[int] = (16, 16, 4, 4)
  channels: int = 512
  resblock_kernel_sizes: Sequence[int] = (3, 7, 11)
  resblock_dilations: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
  dtype: Any = jnp.float32

  @property
  def hop_length(self) -> int:
    return math.prod(int(u) for u in self.upsample_rates)

  def check(self) -> None:
    """Clear errors for shapes HiFi-GAN cannot build."""
    if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
      raise ValueError(f"HiFiGANDecoder: upsample_rates {tuple(self.upsample_rates)} and "
                       f"upsample_kernel_sizes {tuple(self.upsample_kernel_sizes)} differ in "
                       f"length")
    for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
      if k < u or (k - u) % 2:
        raise ValueError(f"HiFiGANDecoder: upsample kernel {k} at rate {u} must be >= the rate "
                         f"with an even difference, so the stage gives exactly T · rate samples")
    if self.channels % (2 ** len(self.upsample_rates)):
      raise ValueError(f"HiFiGANDecoder: channels={self.channels} cannot be halved "
                       f"{len(self.upsample_rates)} times")
    if len(self.resblock_kernel_sizes) != len(self.resblock_dilations):
      raise ValueError("HiFiGANDecoder: resblock_kernel_sizes and resblock_dilations differ in "
                       "length")

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    self.check()
    x = Conv1d(self.channels, 7, dtype=self.dtype, name="conv_pre")(
        nn.with_logical_constraint(x, _ACT))
    c = self.channels
    for i, (u, k) in enumerate(zip(self.upsample_rates, self.upsample_kernel_sizes)):
      c //= 2
      x = ConvTranspose1d(c, int(u), kernel_size=int(k), padding=(int(k) - int(u)) // 2,
                          output_padding=0, init_std=HIFIGAN_INIT_STD, dtype=self.dtype,
                          name=f"up_{i}")(nn.leaky_relu(x, 0.1))
      x = nn.with_logical_constraint(x, _ACT)
      x = sum(ResBlock1(int(rk), tuple(int(d) for d in rd), self.dtype,
                        name=f"resblock_{i}_{j}")(x)
              for j, (rk, rd) in enumerate(zip(self.resblock_kernel_sizes,
                                               self.resblock_dilations))
              ) / len(self.resblock_kernel_sizes)
    x = Conv1d(1, 7, use_bias=False, dtype=self.dtype, name="conv_post")(nn.leaky_relu(x, 0.01))
    wav = jnp.tanh(x.astype(jnp.float32))[..., 0]
    return nn.with_logical_constraint(wav, ("batch", "time"))
