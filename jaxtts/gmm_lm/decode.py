"""Zero-shot autoregressive decoding of GMM-LM (paper §3.2-3.3, §5.1) in one jitted program.

``generate`` teacher-forces the prompt latents into the decoder's KV cache and the alignment
state (`GMMLM.prefill`), then samples in a ``lax.while_loop`` with fixed-size buffers:

  each step: sample a component from ``softmax(logits / weight_temperature)`` and a frame
  ``nu + scale_temperature * tau * eps`` (eq. 6); write it; the row stops when the stop logit
  says this frame is the last (``sigmoid > stop_threshold``; by default only once the
  alignment is on the last phoneme, so a stop logit cannot cut words, e.g. right after a
  prompt that ends an utterance); otherwise the frame is fed back
  (`GMMLM.step`): the alignment advances by the hard rule, and the row also stops once the
  alignment has passed its last phoneme. ``max_frames`` bounds every row (the buffer size),
  so decoding never runs past its buffer.

Every generated frame is sampled from, recorded at and advanced from one alignment state, the
one its mixture was computed with. For the first frame that is prefill's ``alpha``: with
``prompt_phoneme_len`` the last prompt frame sits on the transcript's last phoneme and the
first new frame stays there or advances into the target text by Algorithm 1 step 7, as every
later frame does. So the frames, ``phoneme_index`` and the KV cache are those of a
teacher-forced pass over ``[prompt, frames]`` with that alignment (tests/test_gmm_lm.py).

Outputs per row: the generated frames (``frames [B, max_frames, D]``, ``lengths [B]``) and
the phoneme each generated frame was aligned to (``phoneme_index [B, max_frames]``, -1 past
the end), from which `durations` counts frames per phoneme.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtts.gmm_lm.model import GMMLM
from jaxtts.nn import mixture as mixture_lib


def _zero_cache(dec: GMMLM, batch: int, max_len: int, latent_dim: int, num_phonemes: int):
  """Zeroed ``'cache'`` collection of the decode-mode model for ``max_len`` decoder steps
  (shapes from ``jax.eval_shape`` of a decode-mode init; nothing is computed)."""
  def init():
    return dec.init({"params": jax.random.key(0), "alignment": jax.random.key(0)},
                    jnp.zeros((batch, max_len - 1, latent_dim)), jnp.zeros((batch,), jnp.int32),
                    jnp.zeros((batch, num_phonemes), jnp.int32),
                    jnp.ones((batch, num_phonemes), bool), method=GMMLM.prefill)
  shapes = jax.eval_shape(init)["cache"]
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _squeeze_time(params: mixture_lib.MixtureParams) -> mixture_lib.MixtureParams:
  return jax.tree.map(lambda a: a[:, 0], params)


@functools.partial(jax.jit, static_argnames=("model", "max_frames", "stay_mode"))
def generate(model: GMMLM, params: Any, prompt_latents: jax.Array, prompt_len: jax.Array,
             phonemes: jax.Array, phoneme_len: jax.Array, key: jax.Array, *,
             max_frames: int, weight_temperature: Any = 1.0, scale_temperature: Any = 1.0,
             stop_threshold: Any = 0.5, stay_mode: str = "st_gumbel",
             prompt_phoneme_len: Any = None, stop_on_last_phoneme_only: Any = True
             ) -> dict[str, jax.Array]:
  """Samples continuations of ``prompt_latents`` for the phonemes of prompt + target text.

  Args:
    model: a `GMMLM` (its ``decode`` field is ignored; a decode-mode clone is used).
    params: the model's ``params`` collection.
    prompt_latents: ``[B, P, D]`` float32, zero past ``prompt_len [B]`` int32 (0 allowed).
    phonemes: ``[B, J]`` int32 (prompt text then target text), real up to ``phoneme_len``.
    key: PRNG key for mixture and alignment sampling.
    max_frames: frames to generate at most per row (static; the buffer size).
    weight_temperature / scale_temperature: eq. 6 sampling temperatures (0 = argmax
      component / the component mean).
    stop_threshold: stop when ``sigmoid(stop_logit)`` exceeds it.
    stay_mode: alignment decisions, ``"st_gumbel"`` (sampled) or ``"threshold"``.
    prompt_phoneme_len: ``[B]`` int32 phonemes of the prompt's transcript; given, the prompt
      aligns within them, its last frame on the last of them, and the first generated frame
      stays there or advances (`GMMLM.prefill`).
    stop_on_last_phoneme_only: the stop logit counts only while the alignment is on the
      row's last phoneme (the hard alignment says exactly where it is); False: anywhere.

  Returns:
    ``frames`` [B, max_frames, D], ``lengths`` [B] int32, ``phoneme_index`` [B, max_frames]
    int32 (-1 past the end), ``prompt_alpha`` [B, P+1, J] (the alignment of steps
    ``0..prompt_len``: the prompt frames', then the first generated frame's) and
    ``stopped_by`` [B] int32 (0 stop logit, 1 passed the last phoneme, 2 max_frames).
  """
  dec = model.clone(decode=True, dropout=0.0)
  b, p, d = prompt_latents.shape
  phoneme_mask = jnp.arange(phonemes.shape[1])[None, :] < phoneme_len[:, None]
  cache = _zero_cache(dec, b, p + 1 + max_frames, d, phonemes.shape[1])
  k_prefill, k_loop = jax.random.split(key)
  out, upd = dec.apply({"params": params, "cache": cache}, prompt_latents, prompt_len,
                       phonemes, phoneme_mask, stay_mode, prompt_phoneme_len,
                       method=GMMLM.prefill,
                       rngs={"alignment": k_prefill}, mutable=["cache"])
  y, y_dec = out["y"], out["y_dec"]

  def cond(carry):
    i, done = carry["i"], carry["done"]
    return (i < max_frames) & ~jnp.all(done)

  def body(carry):
    i, done = carry["i"], carry["done"]
    k_mix, k_stay = jax.random.split(jax.random.fold_in(k_loop, i))
    frame = mixture_lib.sample_mixture(k_mix, _squeeze_time(carry["mixture"]),
                                       weight_temperature, scale_temperature)   # [B, D]
    active = ~done
    frames = carry["frames"].at[:, i].set(jnp.where(active[:, None], frame, 0.0))
    phoneme_index = carry["phoneme_index"].at[:, i].set(
        jnp.where(active, jnp.argmax(carry["alpha"], axis=-1), -1))
    lengths = carry["lengths"] + active.astype(jnp.int32)
    on_last = jnp.argmax(carry["alpha"], axis=-1) >= phoneme_len - 1
    stop_now = active & (on_last | ~jnp.asarray(stop_on_last_phoneme_only)) & (
        jax.nn.sigmoid(carry["stop_logits"][:, 0]) > stop_threshold)
    step_out, upd = dec.apply({"params": params, "cache": carry["cache"]}, frame[:, None],
                              carry["alpha"], y, y_dec, phoneme_mask, active & ~stop_now,
                              stay_mode, method=GMMLM.step, rngs={"alignment": k_stay},
                              mutable=["cache"])
    passed = active & ~stop_now & step_out["passed_end"]
    full = active & ~stop_now & ~passed & (i + 1 >= max_frames)
    stopped_by = jnp.where(stop_now, 0, jnp.where(passed, 1, jnp.where(
        full, 2, carry["stopped_by"])))
    keep = lambda new, old: jnp.where(
        active.reshape((b,) + (1,) * (new.ndim - 1)), new, old)
    return {"i": i + 1, "done": done | stop_now | passed | full,
            "cache": upd["cache"], "alpha": keep(step_out["alpha"], carry["alpha"]),
            "mixture": jax.tree.map(keep, step_out["mixture"], carry["mixture"]),
            "stop_logits": keep(step_out["stop_logits"], carry["stop_logits"]),
            "frames": frames, "phoneme_index": phoneme_index, "lengths": lengths,
            "stopped_by": stopped_by}

  carry = {"i": jnp.int32(0), "done": jnp.zeros((b,), bool), "cache": upd["cache"],
           "alpha": out["alpha"], "mixture": out["mixture"], "stop_logits": out["stop_logits"],
           "frames": jnp.zeros((b, max_frames, d), jnp.float32),
           "phoneme_index": jnp.full((b, max_frames), -1, jnp.int32),
           "lengths": jnp.zeros((b,), jnp.int32), "stopped_by": jnp.full((b,), 2, jnp.int32)}
  carry = jax.lax.while_loop(cond, body, carry)
  return {"frames": carry["frames"], "lengths": carry["lengths"],
          "phoneme_index": carry["phoneme_index"], "prompt_alpha": out["prompt_alpha"],
          "stopped_by": carry["stopped_by"]}


def durations(phoneme_index: np.ndarray, num_phonemes: int) -> np.ndarray:
  """Frames per phoneme ``[B, J]`` from ``phoneme_index [B, F]`` (-1 entries ignored)."""
  phoneme_index = np.asarray(phoneme_index)
  out = np.zeros((phoneme_index.shape[0], num_phonemes), np.int64)
  for row, idx in enumerate(phoneme_index):
    idx = idx[idx >= 0]
    np.add.at(out[row], idx, 1)
  return out
