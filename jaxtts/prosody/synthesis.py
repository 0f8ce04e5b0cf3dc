"""CLONE inference (jittable; ``num_frames`` static): text -> prosody latent -> durations ->
waveform, with the prosody controls of CLONE's demo (`000_31cfc13db0a5a5eb.txt`, §4.5.2):

* ``prosody="predictor"``: ``z ~ N(μ_pp, σ_pp)`` with the noise scaled by ``noise_scale``
  (0 gives the predictor's mean), the end-to-end mode;
* ``prosody="flow"``: ``z = f_θ⁻¹(ε; h)`` with ``ε`` filled with ``epsilon`` (the paper's
  "sample from −1 / 1") or drawn from ``N(0, noise_scale² I)`` when ``epsilon`` is None;
* ``prosody="reference"``: ``z`` given (``reference_z [B, P, D]``, e.g. the posterior mean of
  another reading of the same text: prosody transfer).

Durations: ``d = max(round(exp(log w) · length_scale), 1)`` on valid phonemes; frames past
``num_frames`` are cut (``frame_len`` says how many are real).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxtts.prosody.clone import CLONE, gaussian_sample

PROSODY_MODES = ("predictor", "flow", "reference")


def _bound(model: CLONE, variables, fn, *args):
  return model.apply(variables, *args, method=fn)


def synthesize(model: CLONE, variables, phonemes: jax.Array, phone_mask: jax.Array,
               rng: jax.Array, num_frames: int, *, speaker_id: Optional[jax.Array] = None,
               speaker_embedding: Optional[jax.Array] = None, noise_scale: float = 1.0,
               length_scale: float = 1.0, prosody: str = "predictor",
               epsilon=None, reference_z: Optional[jax.Array] = None) -> dict:
  """``phonemes [B, P]`` -> ``{"wav" [B, F hop], "frame_len" [B], "durations" [B, P], "z"}``."""
  if prosody not in PROSODY_MODES:
    raise ValueError(f"prosody={prosody!r}; valid: {', '.join(PROSODY_MODES)}")

  def run(m: CLONE):
    g = m.speaker(speaker_id, speaker_embedding)
    h = m.encode_text(phonemes, phone_mask)
    pm = phone_mask[..., None].astype(jnp.float32)
    if prosody == "predictor":
      mu, log_sigma = m.predict_prosody(h, phone_mask, g)
      z = gaussian_sample(rng, mu, log_sigma, noise_scale)
    elif prosody == "flow":
      shape = h.shape[:2] + (m.prosody_dim,)
      eps = (jnp.full(shape, 1.0) * jnp.asarray(epsilon, jnp.float32) if epsilon is not None
             else noise_scale * jax.random.normal(rng, shape))
      z, _ = m.prior(eps * pm, h, phone_mask, inverse=True)
    else:
      if reference_z is None:
        raise ValueError("prosody='reference' needs reference_z [B, P, prosody_dim]")
      z = reference_z.astype(jnp.float32)
    z = z * pm
    log_w = m.predict_log_durations(h, z, phone_mask, g)
    durations = jnp.where(phone_mask, jnp.maximum(
        jnp.round(jnp.exp(log_w) * length_scale), 1.0), 0.0).astype(jnp.int32)
    frame_len = jnp.minimum(jnp.sum(durations, axis=1), num_frames).astype(jnp.int32)
    frame_mask = jnp.arange(num_frames)[None] < frame_len[:, None]
    ling = m.linguistic(h, durations, num_frames)
    wav = m.decode(m.acoustic(z, ling, durations, frame_mask, g))
    sample_mask = jnp.arange(wav.shape[-1])[None] < (frame_len * m.hop_length)[:, None]
    return {"wav": wav * sample_mask, "frame_len": frame_len, "durations": durations, "z": z}

  return model.apply(variables, method=run)


def posterior_z(model: CLONE, variables, phonemes, phone_mask, durations, spec, frame_mask, *,
                speaker_id=None, speaker_embedding=None) -> jax.Array:
  """The posterior mean ``μ_φ [B, P, D]`` of a recording (for reconstruction and transfer)."""
  def run(m: CLONE):
    g = m.speaker(speaker_id, speaker_embedding)
    h = m.encode_text(phonemes, phone_mask)
    mu, _ = m.posterior(spec, frame_mask, m.linguistic(h, durations, spec.shape[1]), durations,
                        phone_mask, g)
    return mu * phone_mask[..., None]
  return model.apply(variables, method=run)


def reconstruct(model: CLONE, variables, phonemes, phone_mask, durations, spec, frame_mask, *,
                speaker_id=None, speaker_embedding=None) -> jax.Array:
  """The recording through ``μ_φ`` and the acoustic encoder, at the recorded durations
  (the inference path with the true prosody): ``[B, F hop]``."""
  z = posterior_z(model, variables, phonemes, phone_mask, durations, spec, frame_mask,
                  speaker_id=speaker_id, speaker_embedding=speaker_embedding)

  def run(m: CLONE):
    g = m.speaker(speaker_id, speaker_embedding)
    h = m.encode_text(phonemes, phone_mask)
    ling = m.linguistic(h, durations, spec.shape[1])
    wav = m.decode(m.acoustic(z, ling, durations, frame_mask, g))
    return wav * jnp.repeat(frame_mask, m.hop_length, axis=1)
  return model.apply(variables, method=run)
