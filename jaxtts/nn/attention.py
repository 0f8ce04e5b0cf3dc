"""Transformer-XL relative-position multi-head self-attention (Dai et al., 2019), as in
SpeechBrain's ``RelPosMHAXL`` used by the GMM-LM Conformer encoder and decoder (paper §3.2, A.2).

For queries ``q_i``, keys ``k_j`` (both ``[H, Dh]`` per position, ``Dh = D / H``)::

  score(i, j) = ((q_i + u) . k_j + (q_i + v) . p_{i-j}) / sqrt(Dh),   p_r = W_pos sinusoid(r)

with learned per-head biases ``u = pos_bias_u``, ``v = pos_bias_v`` [H, Dh] and a bias-free
projection ``W_pos`` [D, H, Dh] of the sinusoidal embedding of the relative distance ``r``.
The position term is computed for every distance once (bidirectional ``r in [-(T-1), T-1]``,
causal ``r in [0, T-1]`` with ``j > i`` masked) and gathered per ``(i, j)`` (no rel-shift trick).

Parameters (float32 by default) and logical axes: ``query``/``key``/``value`` kernels
``('embed', 'heads', 'kv')`` [D, H, Dh] with biases ``('heads', 'kv')``; ``out`` kernel
``('heads', 'kv', 'embed')`` [H, Dh, D] with bias ``('embed',)``; ``pos_kernel``
``('embed', 'heads', 'kv')``; ``pos_bias_u``/``pos_bias_v`` ``('heads', 'kv')``.
4D^2 + 4D + D^2 + 2D parameters, as SpeechBrain.

KV cache (causal only, flax-lm1b style; module field ``decode=True``):

* ``module.init(key, zeros([B, max_len, D]))`` with ``decode=True`` creates the ``'cache'``
  collection -- ``cached_key``/``cached_value`` [B, max_len, H, Dh] (zeros, ``dtype``) and
  ``cache_index`` [B] int32 (zeros) -- and otherwise runs a plain causal pass (the cache is not
  written on that call).
* Every later ``apply(..., x [B, T, D], mask [B, T] or None, mutable=['cache'])`` writes the T new
  keys/values at each row's own ``cache_index`` (rows may sit at different positions), lets new
  token ``t`` of row ``b`` (absolute position ``cache_index[b] + t``) attend to every cached
  position ``j <= cache_index[b] + t`` with relative distance ``cache_index[b] + t - j``, and
  advances ``cache_index[b]`` by the number of valid new tokens (``sum(mask[b])``, or T).
  ``T = 1`` is a decoding step; ``T > 1`` is a prefill (teacher-forced prompt). Valid tokens must
  come first in each row (trailing padding); entries written for padded tokens lie beyond the new
  index and are overwritten by the next call before any query can see them. Keep
  ``cache_index + T <= max_len`` (``dynamic_update_slice`` clamps out-of-range writes).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_ACT = ("batch", "time", "embed")
_HEADS_ACT = ("batch", "time", "heads", "kv")


def sinusoidal_embedding(positions: jax.Array, dim: int) -> jax.Array:
  """Sinusoidal embedding ``[..] -> [.., dim]`` (float32), SpeechBrain ``RelPosEncXL`` layout.

  ``emb[.., 2m] = sin(pos * w_m)``, ``emb[.., 2m + 1] = cos(pos * w_m)`` with
  ``w_m = 10000^(-2m / dim)`` (Vaswani et al., 2017). ``dim`` must be even; positions may be
  negative (relative distances).
  """
  if dim % 2:
    raise ValueError(f"sinusoidal_embedding needs an even dim, got {dim}")
  inv_freq = jnp.exp(jnp.arange(0, dim, 2, dtype=jnp.float32) * (-math.log(10000.0) / dim))
  angles = jnp.asarray(positions, jnp.float32)[..., None] * inv_freq  # [.., dim / 2]
  emb = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)       # [.., dim / 2, 2]
  return emb.reshape(*angles.shape[:-1], dim)


def position_scores(qv: jax.Array, pos_kernel: jax.Array, distances: jax.Array) -> jax.Array:
  """``(q_i + v) . (W_pos sinusoid(r))`` for every query and every listed distance.

  Args:
    qv: ``q + pos_bias_v`` [B, T, H, Dh].
    pos_kernel: ``W_pos`` [D, H, Dh].
    distances: relative distances [R] (int).
  Returns:
    [B, H, T, R] float32. The cheaper contraction order is chosen from the static shapes:
    project the R embeddings (``R D^2``, best for training / prefill) or project the queries
    through ``W_pos`` and dot them with the raw sinusoids (``B T D^2 + B H T R D``, best for
    single-step decoding against a long cache).
  """
  b, t, h, dh = qv.shape
  d, r = pos_kernel.shape[0], distances.shape[0]
  table = sinusoidal_embedding(distances, d).astype(qv.dtype)  # [R, D]
  w = pos_kernel.astype(qv.dtype)
  if r * d * d + b * h * t * r * dh <= b * t * d * d + b * h * t * r * d:
    p = jnp.einsum("re,ehd->rhd", table, w)                    # [R, H, Dh]
    return jnp.einsum("bthd,rhd->bhtr", qv, p, preferred_element_type=jnp.float32)
  qw = jnp.einsum("bthd,ehd->bthe", qv, w)                     # [B, T, H, D]
  return jnp.einsum("bthe,re->bhtr", qw, table, preferred_element_type=jnp.float32)


def apply_rotary(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
  """Rotary position embedding (Su et al., 2021): ``x [B, T, H, Dh]`` rotated by the angles of
  absolute ``positions`` ([T] or [B, T]) in (first half, second half) channel pairs, so that
  ``rot(q, i) . rot(k, j)`` depends on ``i - j`` only. Float32 math, ``x.dtype`` out."""
  dh = x.shape[-1]
  if dh % 2:
    raise ValueError(f"rotary position encoding needs an even head dim, got {dh}")
  freqs = base ** (-jnp.arange(0, dh // 2, dtype=jnp.float32) / (dh // 2))   # [Dh/2]
  pos = jnp.asarray(positions, jnp.float32)
  pos = jnp.broadcast_to(pos, x.shape[:2]) if pos.ndim == 1 else pos       # [B, T]
  angle = pos[:, :, None, None] * freqs                                     # [B, T, 1, Dh/2]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).astype(x.dtype)


POSITION_ENCODINGS = ("relative_xl", "rotary")


class _Projection(nn.Module):
  """``[B, T, D] -> [B, T, H, Dh]``: ``x @ kernel [D, H, Dh] + bias [H, Dh]``."""
  features: tuple
  kernel_init: Any
  bias_init: Any
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1],) + tuple(self.features),
                        self.param_dtype)
    bias = self.param("bias", self.bias_init, tuple(self.features), self.param_dtype)
    y = jnp.einsum("btd,dhk->bthk", x.astype(self.dtype), kernel.astype(self.dtype))
    return y + bias.astype(self.dtype)


class _OutProjection(nn.Module):
  """``[B, T, H, Dh] -> [B, T, D]``: ``kernel [H, Dh, D]`` (logical heads, kv, embed)."""
  features: int
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.with_logical_partitioning(
        nn.initializers.xavier_uniform(in_axis=(0, 1), out_axis=2), ("heads", "kv", "embed")),
        x.shape[-2:] + (self.features,), self.param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                      (self.features,), self.param_dtype)
    y = jnp.einsum("bthk,hkd->btd", x.astype(self.dtype), kernel.astype(self.dtype))
    return y + bias.astype(self.dtype)


class RelPositionMultiHeadAttention(nn.Module):
  """Relative-position MHSA ``[B, T, D] -> [B, T, D]``.

  ``position="relative_xl"``: SpeechBrain's ``RelPosMHAXL`` (module docstring; 5D^2 + 6D
  parameters). ``position="rotary"``: rotary embeddings of absolute positions on q and k (also
  a function of ``i - j`` only; 4D^2 + 4D parameters, no position term). The KV cache works
  the same for both (rotary caches rotated keys).

  ``mask`` [B, T] bool marks valid frames; invalid keys get no attention weight (fully masked
  rows give uniform weights, never NaN). ``causal`` also masks keys ``j > i``. Softmax runs in
  float32; ``dtype`` is the compute dtype. Dropout (``dropout``) acts on the attention weights
  (needs the ``'dropout'`` rng when ``deterministic=False``). See the module docstring for
  ``decode=True`` (KV cache; causal only).
  """
  num_heads: int
  causal: bool = False
  dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  decode: bool = False
  position: str = "relative_xl"

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None,
               deterministic: bool = True) -> jax.Array:
    if self.position not in POSITION_ENCODINGS:
      raise ValueError(f"position encoding {self.position!r} is not one of {POSITION_ENCODINGS}")
    rotary = self.position == "rotary"
    b, t, d = x.shape
    h = self.num_heads
    if d % h:
      raise ValueError(f"dim {d} is not divisible by num_heads {h}")
    dh = d // h
    x = nn.with_logical_constraint(x.astype(self.dtype), _ACT)

    # Explicit params + einsum rather than nn.DenseGeneral: DenseGeneral initialises a flat
    # [D, H*Dh] kernel and unboxes it under the active mesh, where a 3-name logical constraint
    # on a rank-2 value fails. Same parameter tree ({name: {kernel, bias}}) and init.
    def proj(name):
      kernel = nn.with_logical_partitioning(
          nn.initializers.xavier_uniform(in_axis=0, out_axis=(1, 2)), ("embed", "heads", "kv"))
      bias = nn.with_logical_partitioning(nn.initializers.zeros, ("heads", "kv"))
      return _Projection((h, dh), kernel, bias, self.dtype, self.param_dtype, name=name)(x)

    q, k, v = (nn.with_logical_constraint(proj(n), _HEADS_ACT) for n in ("query", "key", "value"))
    cache_ready = self.has_variable("cache", "cached_key")
    if self.decode and not self.causal:
      raise ValueError("decode=True needs causal=True")
    if self.decode:
      cached_key = self.variable("cache", "cached_key", jnp.zeros, (b, t, h, dh), self.dtype)
      cached_value = self.variable("cache", "cached_value", jnp.zeros, (b, t, h, dh), self.dtype)
      cache_index = self.variable("cache", "cache_index", jnp.zeros, (b,), jnp.int32)
    if rotary:
      start = cache_index.value[:, None] if self.decode and cache_ready else jnp.zeros((b, 1))
      positions = start + jnp.arange(t)                                   # [B, T]
      q, k = apply_rotary(q, positions), apply_rotary(k, positions)
      qu, qv, pos_kernel = q, None, None
    else:
      pos_kernel = self.param("pos_kernel", nn.with_logical_partitioning(
          nn.initializers.xavier_uniform(in_axis=0, out_axis=(1, 2)),
          ("embed", "heads", "kv")), (d, h, dh), self.param_dtype)
      bias_init = nn.with_logical_partitioning(nn.initializers.xavier_uniform(), ("heads", "kv"))
      pos_bias_u = self.param("pos_bias_u", bias_init, (h, dh), self.param_dtype)
      pos_bias_v = self.param("pos_bias_v", bias_init, (h, dh), self.param_dtype)
      qu = q + pos_bias_u.astype(self.dtype)
      qv = q + pos_bias_v.astype(self.dtype)

    if self.decode and cache_ready:
      max_len = cached_key.value.shape[1]
      index = cache_index.value                                           # [B]
      write = jax.vmap(lambda c, u, i: lax.dynamic_update_slice(c, u, (i, 0, 0)))
      k = write(cached_key.value, k.astype(self.dtype), index)           # [B, L, H, Dh]
      v = write(cached_value.value, v.astype(self.dtype), index)
      cached_key.value, cached_value.value = k, v
      n_new = t if mask is None else jnp.sum(mask, axis=1, dtype=jnp.int32)
      cache_index.value = index + n_new
      q_pos = index[:, None] + jnp.arange(t)                              # [B, T]
      rel = q_pos[:, :, None] - jnp.arange(max_len)                       # [B, T, L]
      allowed = (rel >= 0)[:, None]                                       # [B, 1, T, L]
      if not rotary:
        pos = position_scores(qv, pos_kernel, jnp.arange(max_len))        # [B, H, T, L]
        pos = jnp.take_along_axis(pos, jnp.clip(rel, 0, max_len - 1)[:, None], axis=-1)
    else:
      r_min = 0 if self.causal else -(t - 1)
      rel = jnp.arange(t)[:, None] - jnp.arange(t)                        # [T, T] = i - j
      if not rotary:
        pos = position_scores(qv, pos_kernel, jnp.arange(r_min, t))       # [B, H, T, R]
        idx = jnp.broadcast_to(jnp.clip(rel - r_min, 0, t - 1 - r_min), (b, 1, t, t))
        pos = jnp.take_along_axis(pos, idx, axis=-1)                      # [B, H, T, T]
      allowed = jnp.ones((1, 1, t, t), bool)
      if self.causal:
        allowed = allowed & (rel >= 0)
      if mask is not None:
        allowed = allowed & mask[:, None, None, :].astype(bool)

    content = jnp.einsum("bthd,bshd->bhts", qu, k, preferred_element_type=jnp.float32)
    logits = (content if rotary else content + pos) / math.sqrt(dh)
    logits = jnp.where(allowed, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1)
    weights = nn.Dropout(self.dropout)(weights, deterministic=deterministic).astype(self.dtype)
    out = jnp.einsum("bhts,bshd->bthd", weights, v)
    out = _OutProjection(d, self.dtype, self.param_dtype, name="out")(out)
    return nn.with_logical_constraint(out, _ACT)
