"""Weight-normalised 1-D convolutions on channels-last activations ``[B, T, C]`` (DAC's
``WNConv1d`` / ``WNConvTranspose1d``, used by the GMM-VAE codec, paper A.5).

Weight normalisation (Salimans & Kingma, 2016) as ``torch.nn.utils.weight_norm(dim=0)``:

* ``Conv1d``: ``v`` [K, Cin, Cout], ``g`` [Cout]; ``w[:, :, o] = g[o] v[:, :, o] / ||v[:, :, o]||``
  (norm over K and Cin, i.e. per output channel).
* ``ConvTranspose1d``: torch stores the transposed weight as [Cin, Cout, K] and ``dim=0`` makes the
  gain per *input* channel: ``v`` [K, Cin, Cout], ``g`` [Cin];
  ``w[:, i, :] = g[i] v[:, i, :] / ||v[:, i, :]||`` (norm over K and Cout).

At initialisation ``g = ||v||`` so ``w = v``; ``v`` follows torch's default
``kaiming_uniform(a=sqrt(5))``, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with torch's fan_in
(K * Cin for a convolution, K * Cout for a transposed one), or N(0, ``init_std``²) when set
(HiFi-GAN's ``init_weights``, std 0.01); biases start at zero (DAC's ``init_weights``).
Parameters are float32 with logical axis names (kernels
``('conv_kernel', 'conv_in', 'conv_out')``, gains and biases ``('conv_out',)``, or
``('conv_in',)`` for the transposed convolution's gain); ``dtype`` sets the compute dtype.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

_DN = ("NWC", "WIO", "NWC")  # [B, T, C] activations, [K, Cin, Cout] kernels


def _uniform_fan_in(fan_in: int):
  """torch's default conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def _kernel_init(fan_in: int, init_std: Optional[float]):
  """torch's default (``init_std=None``) or HiFi-GAN's ``init_weights``, N(0, init_std²)."""
  if init_std is None:
    return _uniform_fan_in(fan_in)
  return nn.initializers.normal(float(init_std))


def weight_norm(v: jax.Array, g: jax.Array, axes: Tuple[int, ...]) -> jax.Array:
  """``g * v / ||v||`` with the norm taken over ``axes`` (float32)."""
  v = v.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=axes, keepdims=True))
  shape = [1] * v.ndim
  keep = [a for a in range(v.ndim) if a not in axes]
  assert len(keep) == 1, axes
  shape[keep[0]] = -1
  return v * (g.astype(jnp.float32).reshape(shape) / norm)


def depthwise_conv1d(x: jax.Array, kernel: jax.Array, padding: Tuple[int, int]) -> jax.Array:
  """Depthwise 1-D convolution (cross-correlation, as ``lax.conv_general_dilated`` with
  ``feature_group_count = C``): ``x [B, T, C]``, ``kernel [K, C]``, zero ``padding`` (left,
  right) -> ``[B, T + left + right - K + 1, C]``, ``y[t, c] = sum_k x_pad[t + k, c] w[k, c]``.

  Written as K shifted multiply-adds instead of a grouped convolution: XLA's SPMD partitioner
  (jax 0.10.2) returns a wrong kernel gradient for a grouped convolution whose batch is
  sharded (2x with the batch over 4 devices, 4x over 2: `tests/test_nn_layers.py`), which
  broke the sharded-vs-one-device check of every ConvNeXt and Conformer block. The sum is
  elementwise work, as a depthwise convolution is memory-bound anyway."""
  k = kernel.shape[0]
  xp = jnp.pad(x, ((0, 0), tuple(padding), (0, 0)))
  out_len = xp.shape[1] - k + 1
  kernel = kernel.astype(x.dtype)
  y = xp[:, 0:out_len] * kernel[0]
  for i in range(1, k):
    y = y + xp[:, i:i + out_len] * kernel[i]
  return y


def conv_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> Tuple[int, int]:
  """Default padding: total ``(K - 1) * d + 1 - stride`` split with the extra sample on the left.

  Stride 1 gives 'same' output length T (symmetric for odd K). For DAC's strided
  ``K = 2 * stride`` convolutions it pads ``ceil(stride / 2)`` on the left (as DAC does) and
  ``floor(stride / 2)`` on the right, so the output has exactly ``T // stride`` frames for any
  T (DAC pads ``ceil`` on both sides, which equals this when T is a multiple of the stride).
  """
  total = (kernel_size - 1) * dilation + 1 - stride
  if total < 0:
    raise ValueError(f"kernel_size={kernel_size}, dilation={dilation} is too small for "
                     f"stride={stride}")
  return total - total // 2, total // 2


class Conv1d(nn.Module):
  """Weight-normalised ``[B, T, Cin] -> [B, T', features]`` convolution (DAC ``WNConv1d``).

  ``padding=None`` uses ``conv_padding`` (same length for stride 1; ``T // stride`` otherwise).
  """
  features: int
  kernel_size: int
  stride: int = 1
  dilation: int = 1
  padding: Optional[Tuple[int, int]] = None
  use_bias: bool = True
  init_std: Optional[float] = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, cin, cout = self.kernel_size, x.shape[-1], self.features
    v = self.param("v", nn.with_logical_partitioning(
        _kernel_init(k * cin, self.init_std), ("conv_kernel", "conv_in", "conv_out")),
        (k, cin, cout), self.param_dtype)
    g = self.param("g", nn.with_logical_partitioning(
        lambda key, shape, dtype: jnp.sqrt(jnp.sum(jnp.square(v), axis=(0, 1))).astype(dtype),
        ("conv_out",)), (cout,), self.param_dtype)
    w = weight_norm(v, g, axes=(0, 1)).astype(self.dtype)
    pad = self.padding if self.padding is not None else conv_padding(k, self.stride,
                                                                     self.dilation)
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), w, window_strides=(self.stride,), padding=[tuple(pad)],
        rhs_dilation=(self.dilation,), dimension_numbers=_DN)
    if self.use_bias:
      b = self.param("b", nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
                     (cout,), self.param_dtype)
      y = y + b.astype(self.dtype)
    return y


class ConvTranspose1d(nn.Module):
  """Weight-normalised transposed convolution ``[B, T, Cin] -> [B, T * stride, features]``
  (DAC ``WNConvTranspose1d``).

  torch semantics: ``y[t * stride + k - padding] += x[t] @ w[k]``, output length
  ``(T - 1) * stride - 2 * padding + K + output_padding``. Defaults are DAC's
  (``K = 2 * stride``, ``padding = ceil(stride / 2)``, ``output_padding = stride % 2``), which
  give exactly ``T * stride`` samples.
  """
  features: int
  stride: int
  kernel_size: Optional[int] = None
  padding: Optional[int] = None
  output_padding: Optional[int] = None
  use_bias: bool = True
  init_std: Optional[float] = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    s = self.stride
    k = 2 * s if self.kernel_size is None else self.kernel_size
    p = math.ceil(s / 2) if self.padding is None else self.padding
    op = s % 2 if self.output_padding is None else self.output_padding
    cin, cout = x.shape[-1], self.features
    v = self.param("v", nn.with_logical_partitioning(
        _kernel_init(k * cout, self.init_std), ("conv_kernel", "conv_in", "conv_out")),
        (k, cin, cout), self.param_dtype)
    g = self.param("g", nn.with_logical_partitioning(
        lambda key, shape, dtype: jnp.sqrt(jnp.sum(jnp.square(v), axis=(0, 2))).astype(dtype),
        ("conv_in",)), (cin,), self.param_dtype)
    w = weight_norm(v, g, axes=(0, 2)).astype(self.dtype)
    # Transposed conv = stride-dilated input, correlated with the time-flipped kernel.
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), jnp.flip(w, axis=0), window_strides=(1,),
        padding=[(k - 1 - p, k - 1 - p + op)], lhs_dilation=(s,), dimension_numbers=_DN)
    if self.use_bias:
      b = self.param("b", nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
                     (cout,), self.param_dtype)
      y = y + b.astype(self.dtype)
    return y
