"""Iterative parallel decoding of masked discrete diffusion, with classifier-free guidance.

NaturalSpeech 3 appendix A.2 (``../shared/papers/003_1b235cc35c31a20d.txt``; MaskGIT, Chang et
al. 2022, §3.2; MaskGCT's ``reverse_diffusion`` as the public analogue). One level of codes is
decoded in ``num_steps`` iterations; at step ``s`` (0-based, ``S = num_steps``):

  g      = guided logits of every position                      (`guided_logits`)
  x̂      ~ softmax(top_k(g) / τ_s),  τ_s = temperature (1 - s / S)   (argmax when τ_s = 0)
  conf   = log p(x̂) + gumbel_scale (1 - (s + 1) / S) · Gumbel       (MaskGIT's noisy confidence)
  re-mask the ⌊N σ(1 - (s + 1) / S)⌋ lowest-confidence undecoded positions (`masking.remask`)

so the temperature anneals from ``temperature`` (NS3: 1.5) towards 0 and the last step decodes
every remaining position. The steps of one level run in a `jax.lax.fori_loop` (one compiled
body whatever ``num_steps``); levels are a Python loop (each may differ in steps and guidance). Guidance (§3.3.2)::

  g_cfg = g_c + α (g_c - g_u)
  g     = φ · std(g_c) / std(g_cfg) · g_cfg + (1 - φ) · g_cfg

with the standard deviations per row over its valid positions and the vocabulary. NS3 gives α
= 1 and no φ (a full rescale, φ = 1; MaskGCT blends with φ = 0.75); duration runs without
guidance (α = 0 skips the unconditional pass). Every model call is counted: one per step, two
with guidance, so the paper's 4 + 4 + 6 x 4 iterations with guidance on all but duration are
60 function evaluations.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxtts.diffusion import masking
from jaxtts.diffusion.masking import hide_prompt

# logits_fn(tokens [B, T] int, masked [B, T] bool, t [B], conditional: bool) -> [B, T, V]:
# the model's logits for the level being decoded, at diffusion time t (1 - step / num_steps,
# the time whose mask ratio σ(t) the current mask was drawn at).
LogitsFn = Callable[[jax.Array, jax.Array, jax.Array, bool], jax.Array]


def guided_logits(cond: jax.Array, uncond: jax.Array, alpha: float, rescale: float,
                  valid: jax.Array) -> jax.Array:
  """``[B, T, V]``: ``g_c + α (g_c - g_u)`` blended with its rescale to the spread of ``g_c``
  by ``rescale`` (φ; module docstring). ``valid [B, T]``: the positions of each row's
  standard deviations (over them and the vocabulary)."""
  cond, uncond = cond.astype(jnp.float32), uncond.astype(jnp.float32)
  g = cond + alpha * (cond - uncond)
  if not rescale:
    return g
  w = valid.astype(jnp.float32)[..., None]
  n = jnp.maximum(jnp.sum(w, axis=(1, 2)) * g.shape[-1], 1.0)

  def std(x):
    mean = jnp.sum(x * w, axis=(1, 2)) / n
    var = jnp.sum(jnp.square(x - mean[:, None, None]) * w, axis=(1, 2)) / n
    return jnp.sqrt(var)[:, None, None]

  rescaled = g * std(cond) / jnp.maximum(std(g), 1e-12)
  return rescale * rescaled + (1.0 - rescale) * g


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
  """Logits outside each position's ``k`` largest set to ``-inf`` (``k <= 0``: no filter)."""
  if k <= 0 or k >= logits.shape[-1]:
    return logits
  kth = jax.lax.top_k(logits, k)[0][..., -1:]
  return jnp.where(logits < kth, -jnp.inf, logits)


class DecodeResult(NamedTuple):
  tokens: jax.Array        # [B, T] int: the decoded level (given tokens kept)
  nfe: jax.Array           # int []: model calls made
  decoded_at: jax.Array    # [B, T] int: the step each target position was decoded at (-1: not a target)


def decode_level(logits_fn: LogitsFn, tokens: jax.Array, target: jax.Array, valid: jax.Array,
                 rng: jax.Array, *, num_steps: int, mask_id: int, top_k: int = 20,
                 temperature: float = 1.5, gumbel_scale: float = 1.0,
                 cfg_alpha: float = 1.0, cfg_rescale: float = 1.0) -> DecodeResult:
  """Decodes the ``target [B, T]`` positions of ``tokens [B, T]`` (the others, e.g. the
  prompt, are given) in ``num_steps`` iterations (module docstring). ``valid [B, T]``: the
  frames of each row (for the guidance statistics). ``cfg_alpha = 0``: no guidance, one model
  call per step."""
  lengths = jnp.sum(target, axis=1)
  b = tokens.shape[0]
  calls_per_step = 2 if cfg_alpha else 1

  def step_fn(step, carry):
    tokens, decoded, decoded_at, nfe, rng = carry
    step = jnp.asarray(step, jnp.int32)      # a Python int under jax.disable_jit()
    rng, sample_rng, noise_rng = jax.random.split(rng, 3)
    masked = target & ~decoded
    frac = step.astype(jnp.float32) / num_steps
    t = jnp.full((b,), 1.0 - frac, jnp.float32)
    logits = logits_fn(tokens, masked, t, True)
    if cfg_alpha:
      logits = guided_logits(logits, logits_fn(tokens, masked, t, False), cfg_alpha,
                             cfg_rescale, valid)
    logits = top_k_filter(logits.astype(jnp.float32), top_k)
    tau = temperature * (1.0 - frac)
    sampled = jnp.where(tau > 0,
                        jax.random.categorical(sample_rng, logits / jnp.maximum(tau, 1e-6),
                                               axis=-1),
                        jnp.argmax(logits, axis=-1))
    log_p = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), sampled[..., None],
                                axis=-1)[..., 0]
    noise = gumbel_scale * (1.0 - (step + 1).astype(jnp.float32) / num_steps)
    confidence = log_p + noise * jax.random.gumbel(noise_rng, log_p.shape)
    count = masking.num_masked_after(step, num_steps, lengths)
    again = masking.remask(confidence, decoded, target, count)
    newly = masked & ~again
    tokens = jnp.where(newly, sampled.astype(tokens.dtype), tokens)
    decoded_at = jnp.where(newly, step, decoded_at)
    return tokens, decoded | newly, decoded_at, nfe + calls_per_step, rng

  init = (jnp.where(target, mask_id, tokens), jnp.zeros_like(target),
          jnp.where(target, num_steps, -1).astype(jnp.int32), jnp.zeros((), jnp.int32), rng)
  # One compiled step body (lax.fori_loop, static trip count); under jax.disable_jit() it runs
  # as a Python loop (the tests log every model call that way).
  tokens, _, decoded_at, nfe, _ = jax.lax.fori_loop(0, num_steps, step_fn, init)
  return DecodeResult(tokens=tokens, nfe=nfe, decoded_at=decoded_at)


# model_fn(codes [B, T, Q], visible [B, T, Q], level [B], t [B], drop_prompt [B]) -> [B, T, V]
ModelFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def _per_level(value, q_levels: int, name: str) -> tuple:
  if isinstance(value, (tuple, list)):
    if len(value) != q_levels:
      raise ValueError(f"decode_levels: {name} has {len(value)} entries for {q_levels} levels")
    return tuple(value)
  return (value,) * q_levels


def decode_levels(model_fn: ModelFn, codes: jax.Array, prompt: jax.Array, valid: jax.Array,
                  rng: jax.Array, *, num_steps: int | tuple[int, ...], mask_id: int,
                  top_k: int = 20, temperature: float = 1.5, gumbel_scale: float = 1.0,
                  cfg_alpha: float | tuple[float, ...] = 1.0, cfg_rescale: float = 1.0,
                  levels: tuple[int, ...] | None = None, prompt_levels=None,
                  scan_levels: bool = True) -> DecodeResult:
  """Decodes the levels of ``codes [B, T, Q]`` after the ``prompt [B, T]`` frames, lowest
  first (NS3: prosody, content, detail), as training masks them: while level ``q`` is decoded,
  levels below it are visible everywhere, level ``q`` where decoded, levels above only in the
  prompt. ``num_steps`` and ``cfg_alpha`` per level (or one value for all; NS3 decodes the
  phone-level duration without guidance). ``levels``: the levels to decode (default all; the
  others stay as given, seen as the rule above says). ``prompt_levels [Q]`` bool: levels whose
  prompt is visible (`masking.hide_prompt`; None: all). The unconditional pass drops the
  prompt (``drop_prompt``). Returns the codes ``[B, T, Q]``, the summed function evaluations
  and ``decoded_at [B, T, Q]`` (-1 where not decoded).

  With every level decoded alike (the frame level: one step count and guidance for all) and
  ``scan_levels``, the levels run in a `jax.lax.fori_loop` over a traced level index: one
  compiled body for all six instead of six (the same computation as the Python loop over
  levels, which `tests/test_diffusion.py` checks)."""
  q_levels = codes.shape[-1]
  steps = _per_level(num_steps, q_levels, "num_steps")
  alphas = _per_level(cfg_alpha, q_levels, "cfg_alpha")
  target = valid & ~prompt
  if scan_levels and levels is None and len(set(steps)) == 1 and len(set(alphas)) == 1:
    return _scan_levels(model_fn, codes, prompt, valid, rng, steps[0], mask_id, top_k,
                        temperature, gumbel_scale, alphas[0], cfg_rescale, prompt_levels)
  nfe = jnp.zeros((), jnp.int32)
  decoded_at = [jnp.full(target.shape, -1, jnp.int32)] * q_levels
  for q in (range(q_levels) if levels is None else levels):
    rng, level_rng = jax.random.split(rng)
    below = jnp.arange(q_levels)[None, None, :] < q

    def logits_fn(tokens, masked, t, conditional, q=q, below=below, codes=codes):
      current = codes.at[..., q].set(tokens)
      visible = jnp.where(below, valid[..., None], prompt[..., None])
      visible = hide_prompt(visible.at[..., q].set(valid & ~masked), prompt, prompt_levels)
      b = tokens.shape[0]
      return model_fn(current, visible, jnp.full((b,), q, jnp.int32), t,
                      jnp.full((b,), not conditional))

    out = decode_level(logits_fn, codes[..., q], target, valid, level_rng,
                       num_steps=steps[q], mask_id=mask_id, top_k=top_k,
                       temperature=temperature, gumbel_scale=gumbel_scale,
                       cfg_alpha=alphas[q], cfg_rescale=cfg_rescale)
    codes = codes.at[..., q].set(out.tokens)
    nfe = nfe + out.nfe
    decoded_at[q] = out.decoded_at
  return DecodeResult(tokens=codes, nfe=nfe, decoded_at=jnp.stack(decoded_at, -1))


def _scan_levels(model_fn, codes, prompt, valid, rng, num_steps, mask_id, top_k, temperature,
                 gumbel_scale, cfg_alpha, cfg_rescale, prompt_levels) -> DecodeResult:
  """`decode_levels` with a `jax.lax.fori_loop` over the level ``q`` (traced): the level's
  column is read and written through one-hot selects, its key is ``split(rng)`` applied ``q +
  1`` times as in the Python loop."""
  q_levels = codes.shape[-1]
  target = valid & ~prompt
  index = jnp.arange(q_levels)

  def level_fn(q, carry):
    codes, decoded_at, nfe, rng = carry
    rng, level_rng = jax.random.split(rng)
    below = index[None, None, :] < q
    here = index == q

    def logits_fn(tokens, masked, t, conditional):
      current = jnp.where(here, tokens[..., None], codes)
      visible = jnp.where(below, valid[..., None], prompt[..., None])
      visible = hide_prompt(jnp.where(here, (valid & ~masked)[..., None], visible), prompt,
                            prompt_levels)
      b = tokens.shape[0]
      return model_fn(current, visible, jnp.full((b,), q, jnp.int32), t,
                      jnp.full((b,), not conditional))

    column = jnp.sum(jnp.where(here, codes, 0), axis=-1)
    out = decode_level(logits_fn, column, target, valid, level_rng, num_steps=num_steps,
                       mask_id=mask_id, top_k=top_k, temperature=temperature,
                       gumbel_scale=gumbel_scale, cfg_alpha=cfg_alpha, cfg_rescale=cfg_rescale)
    codes = jnp.where(here, out.tokens[..., None], codes)
    decoded_at = jnp.where(here, out.decoded_at[..., None], decoded_at)
    return codes, decoded_at, nfe + out.nfe, rng

  init = (codes, jnp.full(codes.shape, -1, jnp.int32), jnp.zeros((), jnp.int32), rng)
  codes, decoded_at, nfe, _ = jax.lax.fori_loop(0, q_levels, level_fn, init)
  return DecodeResult(tokens=codes, nfe=nfe, decoded_at=decoded_at)
