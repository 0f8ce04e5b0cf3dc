"""CLONE's multi-band discriminator: PQMF sub-bands, each judged by its own 1-D discriminator.

CLONE (`000_31cfc13db0a5a5eb.txt`, Table 4) lists a "Multi-Band Discriminator" with band number
2 at 24 kHz and 4 at 48 kHz, and nothing more; both give 6 kHz per band. Ours, named where it
is a choice:

* the waveform ``[B, T]`` is split by PQMF (`jaxtts.audio.pqmf`) into ``n_bands`` sub-bands
  ``[B, T / N, N]`` at rate ``sr / N``;
* each band ``k`` has its own stack of weight-normalised 1-D convolutions (`jaxtts.nn.conv`)
  in the pattern of MelGAN's / HiFi-GAN's scale discriminator, which VITS's multi-scale
  discriminator uses at full band: kernel 15 at stride 1, then kernel 41 at the configured
  ``strides``, then kernel 5 at stride 1, each followed by LeakyReLU(0.1), and a kernel-3
  post convolution to one channel (the logits);
* HiFi-GAN's grouped convolutions are dense here: XLA's SPMD partitioner (jax 0.10.2) returns
  wrong kernel gradients for a grouped convolution whose batch is sharded
  (`jaxtts.nn.conv.depthwise_conv1d`), and the default channels (16..256) are small enough that
  dense layers cost little.

Output: one list per band of feature maps ``[B, T_i, C_i]`` (post-activation, as DAC's
``fmap``), each ending with the logits ``[B, T_L, 1]``: the shape every GAN loss of
`jaxtts.codec.losses` takes.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtts.audio.pqmf import pqmf_analysis
from jaxtts.nn.conv import Conv1d

SUBBAND_CHANNELS = (16, 64, 128, 256, 256)
SUBBAND_STRIDES = (4, 4, 4)


class ScaleDiscriminator(nn.Module):
  """One band's stack (module docstring): ``x [B, T, 1] -> feature maps [B, T_i, C_i]``, the last
  the logits ``[B, T_L, 1]``. ``channels`` has ``len(strides) + 2`` entries: the kernel-15 layer,
  one per strided kernel-41 layer, and the kernel-5 layer."""
  channels: Sequence[int] = SUBBAND_CHANNELS
  strides: Sequence[int] = SUBBAND_STRIDES
  negative_slope: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> List[jax.Array]:
    if len(self.channels) != len(self.strides) + 2:
      raise ValueError(f"ScaleDiscriminator: channels {tuple(self.channels)} needs "
                       f"len(strides) + 2 = {len(self.strides) + 2} entries")
    layers = ([(15, 1)] + [(41, int(s)) for s in self.strides] + [(5, 1)])
    fmap = []
    x = x.astype(self.dtype)
    for i, ((k, s), c) in enumerate(zip(layers, self.channels)):
      x = Conv1d(int(c), k, stride=s, padding=(k // 2, k // 2), dtype=self.dtype,
                 name=f"conv_{i}")(x)
      x = nn.leaky_relu(x, self.negative_slope)
      fmap.append(x)
    fmap.append(Conv1d(1, 3, padding=(1, 1), dtype=self.dtype, name="conv_post")(x))
    return fmap


class SubBandDiscriminator(nn.Module):
  """``wav [B, T]`` -> ``n_bands`` lists of feature maps (module docstring). ``pqmf_cutoff``
  None takes the bank's optimal cutoff (`jaxtts.audio.pqmf.optimal_cutoff`)."""
  n_bands: int = 2
  channels: Sequence[int] = SUBBAND_CHANNELS
  strides: Sequence[int] = SUBBAND_STRIDES
  pqmf_taps: int = 62
  pqmf_cutoff: Optional[float] = None
  pqmf_beta: float = 9.0
  negative_slope: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, wav: jax.Array) -> List[List[jax.Array]]:
    bands = pqmf_analysis(wav, self.n_bands, self.pqmf_taps, self.pqmf_cutoff, self.pqmf_beta)
    bands = nn.with_logical_constraint(bands, ("batch", "time", None))       # [B, T / N, N]
    return [ScaleDiscriminator(tuple(self.channels), tuple(self.strides), self.negative_slope,
                               self.dtype, name=f"band_{k}")(bands[..., k:k + 1])
            for k in range(self.n_bands)]
