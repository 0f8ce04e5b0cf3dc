"""Durations between phones and frames: the length regulator and phone-level pooling.

* **Length regulator** (FastSpeech, Ren et al., 2019): phone ``p`` of a row fills the frames
  ``[cum_p, cum_p + d_p)`` with ``cum_p = Σ_{p' < p} d_{p'}``; a frame past the last phone
  gets index ``-1``.
* **Phone-level pooling** (NaturalSpeech 3 §3.3.1, the phone-level prosody targets): frame
  features averaged over each phone's frames, ``h̄_p = Σ_{i in p} h_i / max(d_p, 1)``.

Static shapes: ``P`` phones and ``T`` frames are bucket sizes; padded phones have duration 0.
Used by NaturalSpeech 3's diffusion (`jaxtts.diffusion`) and FACodec's phone-level prosody
codes (`jaxtts.codec.facodec`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

def frame_to_phone(durations: jax.Array, num_frames: int) -> jax.Array:
  """``durations [B, P]`` -> ``[B, T]`` int: the phone each frame belongs to (``-1`` past the
  last phone's frames)."""
  ends = jnp.cumsum(durations.astype(jnp.int32), axis=1)                          # [B, P]
  i = jnp.arange(num_frames)[None, :, None]
  index = jnp.sum(i >= ends[:, None, :], axis=-1)                                 # [B, T]
  return jnp.where(index < durations.shape[1], index, -1)


def length_regulate(x: jax.Array, durations: jax.Array, num_frames: int) -> jax.Array:
  """``x [B, P, D]``, ``durations [B, P]`` -> ``[B, T, D]`` (zeros past the last phone)."""
  index = frame_to_phone(durations, num_frames)
  out = jnp.take_along_axis(x, jnp.maximum(index, 0)[..., None], axis=1)
  return jnp.where((index >= 0)[..., None], out, 0.0).astype(x.dtype)


def phone_pool(h: jax.Array, durations: jax.Array) -> jax.Array:
  """``h [B, T, D]``, ``durations [B, P]`` -> ``[B, P, D]``: each phone's mean frame (zeros for
  a phone of no frames)."""
  p = durations.shape[1]
  index = frame_to_phone(durations, h.shape[1])
  onehot = jax.nn.one_hot(index, p, dtype=jnp.float32)                             # [B, T, P]
  sums = jnp.einsum("btp,btd->bpd", onehot, h.astype(jnp.float32))
  return (sums / jnp.maximum(durations, 1)[..., None].astype(jnp.float32)).astype(h.dtype)
