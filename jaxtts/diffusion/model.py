"""The masked-diffusion Transformer of NaturalSpeech 3 §3.3 (one network, many code levels).

NS3 shares one frame-level network across its six FACodec code layers (prosody 1, content 2,
detail 3; appendix A.1: 12 layers, 8 heads, 1024 dims, conv-FFN 2048 with kernel 3), and one
phone-level network across phone-level prosody and duration (6 layers). How the network tells
levels apart is not published; ours is MaskGCT's (``maskgct_s2a.py``): a level embedding
added to the condition and one output head per level. For codes ``c [B, T, Q]``, the visible
mask ``v [B, T, Q]`` (`jaxtts.diffusion.masking`), the level ``q [B]`` being predicted, the
diffusion time ``t [B]`` and a frame-aligned condition ``x_cond [B, T, C]`` (the length-
regulated phoneme encodings)::

  x = Σ_l (v_l ? E_l[c_l] : M_l) + W_cond x_cond            [B, T, D]   (MaskGCT: summed layers)
  e = MLP(sinusoid(time_scale · t)) + L[q]                   [B, D_t]    (time and level)
  h = TransformerStack(x, mask, cond = e)                                (AdaCLN: every norm
                                                                          γ(e) ⊙ LN(·) + β(e))
  logits = h W_q + b_q                                       [B, T, V_q]

AdaCLN is `jaxtts.nn.norm.ConditionalLayerNorm` with the time-and-level embedding as its
condition (NS3: "conditional layer normalization to support diffusion time"; the exact form
is not public). Levels may have different vocabularies (``vocab_sizes``; the phone-level
network predicts prosody codes and duration tokens): logits beyond a level's vocabulary are
``-inf``. The mask token of every level is ``mask_id = max(vocab_sizes)``.

``time_dim`` (``D_t``) sizes the time-and-level embedding that every AdaCLN projects to its
``[γ; β]`` (``2 D`` outputs per norm). The paper gives no size; 256 (DiT's frequency-embedding
size) keeps the paper preset near its ~500M parameters: at ``D_t = D = 1024`` the 38 AdaCLN
projections alone would hold 80M and the total 557M.

The prompt is in the sequence (a visible prefix at every level). The unconditional pass of
classifier-free guidance removes it: ``drop_prompt [B]`` rows do not attend to their prompt
frames and see no code there (NS3 trains with the prompt dropped for 15 % of rows).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtts.nn.attention import sinusoidal_embedding
from jaxtts.nn.transformer import TransformerStack

_ACT = ("batch", "time", "embed")


class TimeEmbedding(nn.Module):
  """``t [B]`` in [0, 1] -> ``[B, dim]``: ``Dense(SiLU(Dense(sinusoid(time_scale t))))``
  (MaskGCT's ``cond_mlp`` shape: dim -> 4 dim -> dim). ``time_scale`` 1000 spreads [0, 1]
  over the sinusoid's frequencies as DDPM's integer steps do (MaskGCT feeds t unscaled)."""
  dim: int
  time_scale: float = 1000.0

  @nn.compact
  def __call__(self, t: jax.Array) -> jax.Array:
    e = sinusoidal_embedding(self.time_scale * t.astype(jnp.float32), self.dim)
    dense = lambda n, axes, name: nn.Dense(  # noqa: E731
        n, dtype=jnp.float32, name=name,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[-1:]))
    return dense(self.dim, ("mlp", "embed"), "out")(
        nn.silu(dense(4 * self.dim, ("embed", "mlp"), "hidden")(e)))


class MaskedCodeTransformer(nn.Module):
  """``(codes, visible, level, t, condition, mask, drop_prompt, prompt) -> logits [B, T, V]``
  with ``V = max(vocab_sizes)`` (module docstring). ``codes [B, T, Q]`` int (any value where
  not visible), ``visible [B, T, Q]``, ``level [B]`` int, ``t [B]``, ``condition [B, T, C]``,
  ``mask [B, T]`` valid frames; optional ``prompt [B, T]`` (the prompt frames) and
  ``drop_prompt [B]`` (rows whose prompt is removed)."""
  vocab_sizes: Sequence[int]
  dim: int = 1024
  num_layers: int = 12
  num_heads: int = 8
  ffn_dim: int = 2048
  kernel_size: int = 3
  dropout: float = 0.1
  time_dim: int = 256
  time_scale: float = 1000.0
  position: str = "relative_xl"
  dtype: Any = jnp.float32

  @property
  def mask_id(self) -> int:
    return max(self.vocab_sizes)

  @nn.compact
  def __call__(self, codes: jax.Array, visible: jax.Array, level: jax.Array, t: jax.Array,
               condition: jax.Array, mask: jax.Array, *, prompt: Optional[jax.Array] = None,
               drop_prompt: Optional[jax.Array] = None,
               deterministic: bool = True, return_hidden: bool = False):
    """Logits ``[B, T, V]``; with ``return_hidden`` also the last hidden states ``[B, T, D]``
    (NS3's L2-duration ablation regresses durations from them)."""
    q_levels, vocab = len(self.vocab_sizes), self.mask_id
    if codes.shape[-1] != q_levels:
      raise ValueError(f"MaskedCodeTransformer: codes have {codes.shape[-1]} levels, "
                       f"vocab_sizes {tuple(self.vocab_sizes)} has {q_levels}")
    if prompt is not None and drop_prompt is not None:
      dropped = prompt & drop_prompt[:, None]
      mask = mask & ~dropped
      visible = visible & ~dropped[..., None]
    tokens = jnp.where(visible, codes, vocab)                               # mask id = V
    tables = self.param("code_embedding", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, "vocab", "embed")), (q_levels, vocab + 1, self.dim))
    x = sum(nn.with_logical_constraint(jnp.take(tables[i], tokens[..., i], axis=0), _ACT)
            for i in range(q_levels))
    x = x + nn.Dense(self.dim, dtype=self.dtype, name="condition",
                     kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                              ("mlp", "embed")),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                            ("embed",)))(condition)
    x = nn.with_logical_constraint(x * mask[..., None].astype(x.dtype), _ACT)
    one_hot_level = jax.nn.one_hot(level, q_levels, dtype=jnp.float32)        # [B, Q]
    levels = self.param("level_embedding", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, "embed")), (q_levels, self.time_dim))
    e = (TimeEmbedding(self.time_dim, self.time_scale, name="time")(t)
         + one_hot_level @ levels)
    h = TransformerStack(self.num_layers, self.num_heads, self.ffn_dim, self.kernel_size,
                         self.dropout, self.dtype, position=self.position,
                         name="transformer")(
        x.astype(self.dtype), mask, e, deterministic)
    kernels = self.param("head_kernel", nn.with_logical_partitioning(
        nn.initializers.lecun_normal(batch_axis=(0,)), (None, "embed", "vocab")),
        (q_levels, self.dim, vocab))
    biases = self.param("head_bias", nn.with_logical_partitioning(
        nn.initializers.zeros, (None, "vocab")), (q_levels, vocab))
    kernel = jnp.einsum("bq,qdv->bdv", one_hot_level, kernels)               # each row's head
    logits = (jnp.einsum("btd,bdv->btv", h.astype(jnp.float32), kernel)
              + (one_hot_level @ biases)[:, None, :])
    sizes = jnp.asarray(self.vocab_sizes)[level]
    logits = jnp.where(jnp.arange(vocab)[None, None, :] < sizes[:, None, None], logits,
                       -jnp.inf)
    return (logits, h) if return_hidden else logits
