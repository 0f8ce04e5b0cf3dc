"""NaturalSpeech 3's generation, stage by stage, as pure jittable functions (§3.3, appendix A.2).

Shared by the training task's samples (`jaxtts.tasks.ns3`) and the generator
(`jaxtts.infer.ns3`)::

  phone_level:  phonemes [B, P] (prompt phones first) + the prompt's phone codes
                -> encodings [B, P, D], phone codes [B, P, Qp + 1]: the phone-level prosody
                   codes (``phone_prosody_steps`` iterations, guided) then the duration tokens
                   (``duration_steps``, unguided; or one regression pass, ``duration_loss =
                   "l2"``)
  frame_level:  encodings, durations [B, P], the prompt's frame codes [B, T, Q]
                -> frame codes [B, T, Q]: the levels in order (prosody, content x 2, detail x
                   3), ``frame_steps`` iterations each, guided

Shapes are static: a bucket of phones ``P`` and of frames ``T`` per compiled program; lengths
and prompt lengths are per-row arrays. Function evaluations are counted (``nfe``): with the
paper's settings 4 x 2 + 4 + 6 x 4 x 2 = 60.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from jaxtts.diffusion import sampler
from jaxtts.diffusion.ns3 import NS3

SETTINGS = ("phone_prosody_steps", "duration_steps", "frame_steps", "cfg_alpha",
            "duration_cfg_alpha", "cfg_rescale", "top_k", "temperature", "gumbel_scale")


@dataclasses.dataclass(frozen=True)
class Settings:
  """The sampler's settings (``config.synthesis``; appendix A.2's values by default)."""
  phone_prosody_steps: int = 4
  duration_steps: int = 4
  frame_steps: int = 4
  cfg_alpha: float = 1.0
  duration_cfg_alpha: float = 0.0
  cfg_rescale: float = 1.0
  top_k: int = 20
  temperature: float = 1.5
  gumbel_scale: float = 1.0

  @classmethod
  def from_config(cls, synthesis: Mapping[str, Any], **overrides) -> "Settings":
    values = {k: synthesis[k] for k in SETTINGS if k in synthesis}
    values.update({k: v for k, v in overrides.items() if v is not None})
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    return cls(**{k: (int if types[k] in (int, "int") else float)(v)
                  for k, v in values.items()})

  def nfe(self, phone_prosody_levels: int = 1, num_code_levels: int = 6,
          duration_regression: bool = False) -> dict[str, int]:
    """Function evaluations per stage of one utterance: a model call per step, two with
    guidance; one regression pass for ``duration_regression``. The paper's: 8 + 4 + 48 = 60."""
    guided = lambda a: 2 if a else 1  # noqa: E731
    return {"phone_prosody": phone_prosody_levels * self.phone_prosody_steps
                             * guided(self.cfg_alpha),
            "duration": 1 if duration_regression else self.duration_steps
                        * guided(self.duration_cfg_alpha),
            "frame": num_code_levels * self.frame_steps * guided(self.cfg_alpha)}


def phone_level(model: NS3, params: Any, phonemes: jax.Array, phone_len: jax.Array,
                prompt_phones: jax.Array, prompt_codes: jax.Array, rng: jax.Array,
                settings: Settings, duration_prompt: bool = True
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``phonemes [B, P]``, ``phone_len [B]``, ``prompt_phones [B]`` (the first phones are the
  prompt's), ``prompt_codes [B, P, Qp + 1]`` (the prompt's phone-level prosody codes and
  duration tokens; anything elsewhere) -> ``(encodings [B, P, D], codes [B, P, Qp + 1], nfe)``
  with every target phone's codes decoded (prompt rows kept)."""
  i = jnp.arange(phonemes.shape[1])[None, :]
  valid, prompt = i < phone_len[:, None], i < prompt_phones[:, None]
  variables = {"params": params}
  enc = model.apply(variables, phonemes, valid, method=NS3.encode_phonemes)
  qp, dl = int(model.phone_prosody_levels), model.duration_level
  prompt_levels = (True,) * qp + (bool(duration_prompt),)
  mask_id = max(model.phone_vocab_sizes)

  def model_fn(codes, visible, level, t, drop):
    return model.apply(variables, enc, codes, visible, level, t, valid, prompt=prompt,
                       drop_prompt=drop, method=NS3.phone_logits)

  regress = model.duration_loss == "l2"
  levels = tuple(range(qp)) if regress else tuple(range(qp + 1))
  steps = (settings.phone_prosody_steps,) * qp + (settings.duration_steps,)
  alphas = (settings.cfg_alpha,) * qp + (settings.duration_cfg_alpha,)
  codes, nfe = prompt_codes, jnp.zeros((), jnp.int32)
  if levels:
    out = sampler.decode_levels(model_fn, prompt_codes, prompt, valid, rng, num_steps=steps,
                                mask_id=mask_id, top_k=settings.top_k,
                                temperature=settings.temperature,
                                gumbel_scale=settings.gumbel_scale, cfg_alpha=alphas,
                                cfg_rescale=settings.cfg_rescale, levels=levels,
                                prompt_levels=prompt_levels)
    codes, nfe = out.tokens, out.nfe
  if regress:  # one pass: prosody visible everywhere, durations in the prompt only
    visible = jnp.concatenate([jnp.repeat(valid[..., None], qp, -1),
                               (prompt & duration_prompt)[..., None]], -1)
    log_d = model.apply(variables, enc, codes, visible, valid, prompt=prompt,
                        method=NS3.duration_regression)
    d = jnp.clip(jnp.round(jnp.expm1(log_d)), 0, model.max_duration).astype(codes.dtype)
    codes = codes.at[..., dl].set(jnp.where(valid & ~prompt, d, codes[..., dl]))
    nfe = nfe + 1
  return enc, codes, nfe


def frame_level(model: NS3, params: Any, encodings: jax.Array, durations: jax.Array,
                frame_len: jax.Array, prompt_frames: jax.Array, prompt_codes: jax.Array,
                rng: jax.Array, settings: Settings) -> tuple[jax.Array, jax.Array]:
  """``encodings [B, P, D]``, ``durations [B, P]`` (prompt and target phones, frames),
  ``frame_len [B]``, ``prompt_frames [B]``, ``prompt_codes [B, T, Q]`` (the prompt's codes
  first) -> ``(codes [B, T, Q], nfe)``, every target frame's codes decoded."""
  i = jnp.arange(prompt_codes.shape[1])[None, :]
  valid, prompt = i < frame_len[:, None], i < prompt_frames[:, None]
  variables = {"params": params}

  def model_fn(codes, visible, level, t, drop):
    return model.apply(variables, encodings, durations, codes, visible, level, t, valid,
                       prompt=prompt, drop_prompt=drop, method=NS3.frame_logits)

  out = sampler.decode_levels(model_fn, prompt_codes, prompt, valid, rng,
                              num_steps=settings.frame_steps, mask_id=int(model.codebook_size),
                              top_k=settings.top_k, temperature=settings.temperature,
                              gumbel_scale=settings.gumbel_scale, cfg_alpha=settings.cfg_alpha,
                              cfg_rescale=settings.cfg_rescale)
  return out.tokens, out.nfe
