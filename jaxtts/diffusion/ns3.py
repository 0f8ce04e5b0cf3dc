"""NaturalSpeech 3's generator (§3.3, appendix A.1): phoneme encoder, phone-level diffusion
(prosody codes and durations, one shared network) and frame-level diffusion (the six FACodec
code layers, one shared network). Timbre is not generated: FACodec decodes with the prompt's.

  e_p   = PhonemeEncoder(phonemes)                                     [B, P, D_enc]
  phone levels  (prosody code, duration token) [B, P, 2]  <- MaskedCodeTransformer(cond = e_p)
  frame levels  (prosody, content x 2, detail x 3) [B, T, 6]
                <- MaskedCodeTransformer(cond = LengthRegulate(e_p, durations))

The phone-level network decodes the phone-level prosody code first and the duration second, so
the duration sees the phoneme encodings, the prompt's durations (the prompt prefix) and the
predicted prosody codes, as §3.3.1 conditions it.

Phone-level codes are ``[B, P, phone_prosody_levels + 1]``: the phone-level prosody codes (one
per FACodec prosody quantizer) then the duration token (`jaxtts.diffusion.phones`). Table 11's
ablations are fields: ``phone_prosody_levels = 0`` (no phone-level prosody: the duration is
conditioned on the phonemes and the prompt only) and ``duration_loss = "l2"`` (durations
regressed: a linear head on the phone-level network's last hidden states predicts ``log(1 +
d)``, trained by L2 with the duration level fully masked outside the prompt, one pass at
inference).

The defaults are A.1's sizes. Parameters (`tests/test_diffusion.py` counts them against hand
formulas): phoneme encoder 121.2M (6 x 512, 8 heads, conv-FFN 2048 of kernel 9), phone-level
diffusion 119.1M and frame-level diffusion 240.8M (6 and 12 x 1024, 8 heads, conv-FFN 2048 of
kernel 3, AdaCLN from a 256-dim time embedding), phoneme table 0.05M (100 symbols): 481.1M,
within 4 % of the paper's "about 500M".
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtts.alignment.durations import length_regulate
from jaxtts.diffusion.model import MaskedCodeTransformer
from jaxtts.nn.transformer import TransformerStack


class NS3(nn.Module):
  """The three networks (module docstring). Sizes: the ``*_dim``/``*_layers`` fields."""
  num_phones: int
  codebook_size: int = 1024
  num_code_levels: int = 6
  max_duration: int = 63
  encoder_dim: int = 512
  encoder_layers: int = 6
  encoder_heads: int = 8
  encoder_ffn_dim: int = 2048
  encoder_kernel_size: int = 9
  phone_dim: int = 1024
  phone_layers: int = 6
  frame_dim: int = 1024
  frame_layers: int = 12
  heads: int = 8
  ffn_dim: int = 2048
  kernel_size: int = 3
  dropout: float = 0.1
  time_dim: int = 256
  phone_prosody_levels: int = 1
  duration_loss: str = "tokens"
  position: str = "relative_xl"
  dtype: Any = jnp.float32

  @property
  def duration_level(self) -> int:
    """The phone-level code index of the duration token (after the prosody levels)."""
    return int(self.phone_prosody_levels)

  @property
  def phone_vocab_sizes(self) -> tuple[int, ...]:
    return (self.codebook_size,) * int(self.phone_prosody_levels) + (self.max_duration + 1,)

  def setup(self):
    if self.duration_loss not in ("tokens", "l2"):
      raise ValueError(f"model.duration_loss must be 'tokens' or 'l2', got "
                       f"{self.duration_loss!r}")
    self.phone_embedding = nn.Embed(self.num_phones, self.encoder_dim, name="phone_embedding",
                                    embedding_init=nn.with_logical_partitioning(
                                        nn.initializers.normal(0.02), ("vocab", "embed")))
    self.encoder = TransformerStack(self.encoder_layers, self.encoder_heads,
                                    self.encoder_ffn_dim, self.encoder_kernel_size,
                                    self.dropout, self.dtype, position=self.position,
                                    name="phoneme_encoder")
    self.phone_net = MaskedCodeTransformer(
        self.phone_vocab_sizes, self.phone_dim, self.phone_layers,
        self.heads, self.ffn_dim, self.kernel_size, self.dropout, self.time_dim,
        position=self.position, dtype=self.dtype, name="phone_diffusion")
    self.frame_net = MaskedCodeTransformer(
        (self.codebook_size,) * self.num_code_levels, self.frame_dim, self.frame_layers,
        self.heads, self.ffn_dim, self.kernel_size, self.dropout, self.time_dim,
        position=self.position, dtype=self.dtype, name="frame_diffusion")
    if self.duration_loss == "l2":
      self.duration_regressor = nn.Dense(
          1, dtype=jnp.float32, name="duration_regressor",
          kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                   ("embed", None)),
          bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)))

  def encode_phonemes(self, phonemes: jax.Array, phone_mask: jax.Array,
                      deterministic: bool = True) -> jax.Array:
    """``phonemes [B, P]`` int -> ``[B, P, encoder_dim]`` (zeros at padding)."""
    x = self.phone_embedding(phonemes) * phone_mask[..., None]
    return self.encoder(x.astype(self.dtype), phone_mask, None, deterministic) * \
        phone_mask[..., None]

  def phone_logits(self, encodings: jax.Array, codes: jax.Array, visible: jax.Array,
                   level: jax.Array, t: jax.Array, phone_mask: jax.Array, *,
                   prompt: Optional[jax.Array] = None, drop_prompt: Optional[jax.Array] = None,
                   deterministic: bool = True) -> jax.Array:
    """Phone-level logits ``[B, P, max(phone_vocab_sizes)]`` of ``level`` (the prosody codes,
    then `duration_level`) for ``codes [B, P, phone_prosody_levels + 1]``."""
    return self.phone_net(codes, visible, level, t, encodings, phone_mask, prompt=prompt,
                          drop_prompt=drop_prompt, deterministic=deterministic)

  def duration_regression(self, encodings: jax.Array, codes: jax.Array, visible: jax.Array,
                          phone_mask: jax.Array, *, prompt: Optional[jax.Array] = None,
                          deterministic: bool = True) -> jax.Array:
    """``duration_loss = "l2"``: predicted ``log(1 + d)`` ``[B, P]`` from the phone-level
    network run on the duration level at ``t = 1``."""
    b = codes.shape[0]
    level = jnp.full((b,), self.duration_level, jnp.int32)
    _, h = self.phone_net(codes, visible, level, jnp.ones((b,)), encodings, phone_mask,
                          prompt=prompt, deterministic=deterministic, return_hidden=True)
    return self.duration_regressor(h.astype(jnp.float32))[..., 0]

  def frame_logits(self, encodings: jax.Array, durations: jax.Array, codes: jax.Array,
                   visible: jax.Array, level: jax.Array, t: jax.Array, frame_mask: jax.Array,
                   *, prompt: Optional[jax.Array] = None,
                   drop_prompt: Optional[jax.Array] = None,
                   deterministic: bool = True) -> jax.Array:
    """Frame-level logits ``[B, T, codebook_size]`` of ``level`` for ``codes [B, T, 6]``,
    conditioned on the phoneme encodings expanded by ``durations [B, P]``."""
    condition = length_regulate(encodings, durations, codes.shape[1])
    return self.frame_net(codes, visible, level, t, condition, frame_mask, prompt=prompt,
                          drop_prompt=drop_prompt, deterministic=deterministic)

  def __call__(self, phonemes, phone_mask, phone_codes, durations, frame_codes, frame_mask):
    """Initialisation path: one pass through all three networks (level 0, t = 0.5)."""
    b = phonemes.shape[0]
    enc = self.encode_phonemes(phonemes, phone_mask)
    level, t = jnp.zeros((b,), jnp.int32), jnp.full((b,), 0.5)
    visible = jnp.ones(phone_codes.shape, bool)
    p = self.phone_logits(enc, phone_codes, visible, level, t, phone_mask)
    if self.duration_loss == "l2":
      p = (p, self.duration_regression(enc, phone_codes, visible, phone_mask))
    f = self.frame_logits(enc, durations, frame_codes, jnp.ones(frame_codes.shape, bool), level,
                          t, frame_mask)
    return p, f
