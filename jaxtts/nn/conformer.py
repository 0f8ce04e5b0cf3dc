"""Conformer layers (Gulati et al., 2020) in SpeechBrain's layout, for the GMM-LM encoder
(bidirectional, over phonemes) and decoder (causal, over latent frames; paper §3.2, A.2 Table 7).

Block (macaron, SpeechBrain ``ConformerEncoderLayer``), activations ``[B, T, D]``::

  x = x + 0.5 * FFN1(LN(x))
  x = x + Dropout(MHSA(LN(x)))            # Transformer-XL relative positions (attention.py)
  x = x + ConvModule(x)
  x = LN(x + 0.5 * FFN2(LN(x)))

``FFN`` = Dense(D->F) + Swish + Dropout + Dense(F->D) + Dropout; ``ConvModule`` = LN -> Dense
(D->2D) + GLU -> depthwise conv (kernel K, 'same' padding, or K-1 on the left when causal) ->
LN (SpeechBrain's choice instead of BatchNorm) -> Swish -> Dense(D->D) -> Dropout.
``ConformerStack`` adds the final LayerNorm of SpeechBrain's ``ConformerEncoder``. All Dense
layers have biases (torch-default U(+-1/sqrt(fan_in)) kernels, zero biases); parameters are
float32 with logical axes ``('embed', 'mlp')`` / ``('mlp', 'embed')`` kernels, ``('mlp',)`` or
``('embed',)`` biases and norms, depthwise kernel ``('conv_kernel', 'mlp')``.

Padding: ``mask`` [B, T] bool marks valid frames (leading; padding trails). Padded frames are
zeroed before the depthwise conv and are masked as attention keys, so they never reach valid
frames; outputs at padded frames are unspecified (finite).

Decoding (``decode=True``, causal only): see ``jaxtts.nn.attention`` for the KV cache. The
convolution keeps ``'cache'/'conv_state'`` [B, K-1, D], the last K-1 depthwise-conv inputs of
each row (zeros = the causal left padding). A call with T new frames and ``mask`` [B, T]
(prefill when T > 1, step when T = 1) convolves ``[state, new]`` and keeps the K-1 inputs that
end at each row's last valid new frame. Use ``init_decode_cache`` for a zeroed cache.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxtts.nn.attention import RelPositionMultiHeadAttention
from jaxtts.nn.conv import depthwise_conv1d

_ACT = ("batch", "time", "embed")
_TORCH_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _dense(features: int, axes, dtype, param_dtype, name: str) -> nn.Dense:
  return nn.Dense(features, dtype=dtype, param_dtype=param_dtype, name=name,
                  kernel_init=nn.with_logical_partitioning(_TORCH_INIT, axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[-1:]))


def _layer_norm(dtype, param_dtype, name: str, epsilon: float = 1e-5) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, name=name,
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))


class FeedForward(nn.Module):
  """``[B, T, D] -> [B, T, D]``: Dense(D->ffn_dim) + Swish + Dropout + Dense(->D) + Dropout."""
  ffn_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    d = x.shape[-1]
    h = _dense(self.ffn_dim, ("embed", "mlp"), self.dtype, self.param_dtype, "wi")(x)
    h = nn.Dropout(self.dropout)(nn.swish(h), deterministic=deterministic)
    y = _dense(d, ("mlp", "embed"), self.dtype, self.param_dtype, "wo")(h)
    return nn.Dropout(self.dropout)(y, deterministic=deterministic)


class ConvolutionModule(nn.Module):
  """Conformer convolution module ``[B, T, D] -> [B, T, D]`` (SpeechBrain ``ConvolutionModule``).

  ``causal`` pads the depthwise conv by K-1 on the left (else ``(K-1)//2`` left, the rest right).
  ``decode=True`` (causal only) uses the ``conv_state`` cache described in the module docstring;
  the first (``init``) call only creates it.
  """
  kernel_size: int = 31
  causal: bool = False
  dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  decode: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None,
               deterministic: bool = True) -> jax.Array:
    b, t, d = x.shape
    k = self.kernel_size
    h = _layer_norm(self.dtype, self.param_dtype, "norm_in")(x)
    h = _dense(2 * d, ("embed", "mlp"), self.dtype, self.param_dtype, "pointwise_in")(h)
    h = nn.glu(h, axis=-1)                                   # first half * sigmoid(second half)
    if mask is not None:
      h = jnp.where(mask[..., None].astype(bool), h, 0)
    w = self.param("depthwise_kernel", nn.with_logical_partitioning(  # torch fan_in = K
        nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=0,
                                         out_axis=(), batch_axis=(1,)),
        ("conv_kernel", "mlp")), (k, d), self.param_dtype)
    bias = self.param("depthwise_bias", nn.with_logical_partitioning(
        nn.initializers.zeros, ("mlp",)), (d,), self.param_dtype)

    def depthwise(u, padding):  # shard-safe (see jaxtts.nn.conv.depthwise_conv1d)
      return depthwise_conv1d(u.astype(self.dtype), w.astype(self.dtype), padding)

    if self.decode and not self.causal:
      raise ValueError("decode=True needs causal=True")
    cache_ready = self.has_variable("cache", "conv_state")
    if self.decode:
      state = self.variable("cache", "conv_state", jnp.zeros, (b, k - 1, d), self.dtype)
    if self.decode and cache_ready:
      full = jnp.concatenate([state.value, h.astype(self.dtype)], axis=1)  # [B, K-1+T, D]
      y = depthwise(full, (0, 0))
      n_new = jnp.full((b,), t, jnp.int32) if mask is None else jnp.sum(mask, 1, dtype=jnp.int32)
      state.value = jax.vmap(lambda f, n: lax.dynamic_slice_in_dim(f, n, k - 1, axis=0))(
          full, n_new)
    else:
      left = k - 1 if self.causal else (k - 1) // 2
      y = depthwise(h, (left, k - 1 - left))
    y = y + bias.astype(self.dtype)
    y = nn.swish(_layer_norm(self.dtype, self.param_dtype, "norm_conv")(y))
    y = _dense(d, ("mlp", "embed"), self.dtype, self.param_dtype, "pointwise_out")(y)
    return nn.Dropout(self.dropout)(y, deterministic=deterministic)


class ConformerBlock(nn.Module):
  """One macaron Conformer block ``[B, T, D] -> [B, T, D]`` (layout in the module docstring)."""
  ffn_dim: int
  num_heads: int
  kernel_size: int = 31
  causal: bool = False
  dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  decode: bool = False
  position: str = "relative_xl"  # or "rotary" (attention.py)

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None,
               deterministic: bool = True) -> jax.Array:
    dt, pdt = self.dtype, self.param_dtype
    x = nn.with_logical_constraint(x.astype(dt), _ACT)

    def ffn(name, y):
      y = _layer_norm(dt, pdt, f"{name}_norm")(y)
      return FeedForward(self.ffn_dim, self.dropout, dt, pdt, name=name)(y, deterministic)

    x = x + 0.5 * ffn("ffn1", x)
    h = _layer_norm(dt, pdt, "attn_norm")(x)
    h = RelPositionMultiHeadAttention(self.num_heads, self.causal, self.dropout, dt, pdt,
                                      decode=self.decode, position=self.position,
                                      name="attn")(h, mask, deterministic)
    x = x + nn.Dropout(self.dropout)(h, deterministic=deterministic)
    x = x + ConvolutionModule(self.kernel_size, self.causal, self.dropout, dt, pdt,
                              decode=self.decode, name="conv")(x, mask, deterministic)
    x = x + 0.5 * ffn("ffn2", x)
    x = _layer_norm(dt, pdt, "out_norm")(x)
    return nn.with_logical_constraint(x, _ACT)


class ConformerStack(nn.Module):
  """``num_layers`` Conformer blocks + final LayerNorm: ``[B, T, dim] -> [B, T, dim]``.

  Encoder: ``causal=False``. Decoder: ``causal=True`` (causal attention and depthwise conv, no
  cross-attention). ``remat`` wraps each block in ``nn.remat`` (recompute in the backward pass).
  ``mask`` [B, T] bool (valid frames first) or None. ``decode=True``: cached autoregressive
  inference (module docstring); variables ``{'params', 'cache'}``, apply with
  ``mutable=['cache']``.
  """
  num_layers: int
  dim: int
  ffn_dim: int
  num_heads: int
  kernel_size: int = 31
  causal: bool = False
  dropout: float = 0.0
  decode: bool = False
  remat: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  position: str = "relative_xl"  # or "rotary" (attention.py)

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None,
               deterministic: bool = True) -> jax.Array:
    if x.shape[-1] != self.dim:
      raise ValueError(f"expected [B, T, {self.dim}] inputs, got {x.shape}")
    block_cls = nn.remat(ConformerBlock, static_argnums=(3,)) if self.remat else ConformerBlock
    for i in range(self.num_layers):
      x = block_cls(self.ffn_dim, self.num_heads, self.kernel_size, self.causal, self.dropout,
                    self.dtype, self.param_dtype, self.decode, self.position,
                    name=f"layer_{i}")(
                        x, mask, deterministic)
    return _layer_norm(self.dtype, self.param_dtype, "final_norm", epsilon=1e-6)(x)


def init_decode_cache(stack: ConformerStack, batch_size: int, max_len: int) -> Any:
  """Zeroed ``'cache'`` collection of ``stack.clone(decode=True)`` for ``max_len`` frames.

  Shapes come from ``jax.eval_shape`` of the decode-mode ``init`` (nothing else is computed):
  per layer ``attn/{cached_key, cached_value}`` [B, max_len, H, Dh], ``attn/cache_index`` [B]
  int32 and ``conv/conv_state`` [B, K-1, D]. The decode module shares the parameter tree of
  the training module: ``apply({'params': params, 'cache': cache}, x, mask,
  mutable=['cache'])``.
  """
  module = stack.clone(decode=True, causal=True)
  x = jnp.zeros((batch_size, max_len, stack.dim), stack.dtype)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), x))["cache"]
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
