"""GMM-LM task (Lin & He, ICLR 2025, §3.2-3.3, Algorithm 1): trains `jaxtts.gmm_lm.GMMLM`
on latent shards from `jaxtts-codec encode-dataset` (bucket batches of ``latents [B, F, D]``,
``latent_len``, ``phonemes [B, J]``, ``phoneme_len``).

Loss per batch (real frames only)::

    L = NLL(h_i | mixture_i) / D  +  stop_weight * BCE_pos_weight(stop_i, [i == len - 1])

with the mixture NLL of eq. 6 (Algorithm 1 step 11, averaged over real frames and divided by
the latent dimension so the scale does not depend on D) and the stop classifier's weighted
binary cross-entropy. The Gumbel-softmax temperature ``s`` (eq. 11) is held at
``alignment.temperature_start`` and cosine-annealed to ``temperature_end`` from
``anneal_start_fraction`` of the run. Logged: NLL, stop loss, alignment statistics (fraction
of phonemes visited, mean frames per phoneme, rows ending on their last phoneme, onset of the
last phoneme, agreement with the corpus' phoneme durations when the shards carry them), eval's
``text_nll_gain`` (how much worse the NLL is with another utterance's text: does the decoder
use the text at all), ``s``
and the energy bias ``r``; samples: alignment and latent images, and audio through the codec named
by the latent manifest when it is present.

With ``model.frames_per_step = r > 1`` each decoder step is ``r`` stacked codec frames
(`jaxtts.gmm_lm.stacking`, inside the step, so the pipeline and the shards are unchanged):
frames, alignment statistics and the NLL above are per step of ``r * D`` dims.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxtts.alignment import monotonic
from jaxtts.codec.registry import load_codec
from jaxtts.data.source import read_manifest
from jaxtts.eval import codec_metrics
from jaxtts.gmm_lm import stacking
from jaxtts.gmm_lm.model import GMMLM, from_config
from jaxtts.nn import mixture as mixture_lib
from jaxtts.tasks import flops as flops_lib
from jaxtts.tasks.corpus_data import CorpusData
from jaxtts.train import state as state_lib

log = logging.getLogger(__name__)


def build_model(cfg: ml_collections.ConfigDict, **overrides) -> GMMLM:
  """The model of the config (one definition: `jaxtts.gmm_lm.model.from_config`)."""
  return from_config(cfg, **overrides)


def gumbel_temperature(cfg: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
  """Eq. 11's ``s`` at ``step``: constant, then a cosine from start to end value."""
  a = cfg.alignment
  total = max(int(cfg.train.steps), 1)
  begin = float(a.anneal_start_fraction) * total
  frac = jnp.clip((step - begin) / max(total - begin, 1.0), 0.0, 1.0)
  return a.temperature_end + (a.temperature_start - a.temperature_end) * 0.5 * (
      1.0 + jnp.cos(math.pi * frac))


def stop_loss(logits: jax.Array, lengths: jax.Array, mask: jax.Array, pos_weight: float
              ) -> jax.Array:
  """Weighted BCE of ``stop_i = [i == len - 1]`` over real frames (``logits [B, I]``)."""
  target = (jnp.arange(logits.shape[1])[None, :] == (lengths[:, None] - 1)).astype(jnp.float32)
  per = -(pos_weight * target * jax.nn.log_sigmoid(logits)
          + (1.0 - target) * jax.nn.log_sigmoid(-logits))
  return jnp.sum(per * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def mismatched_text(batch: Mapping[str, Any]) -> dict[str, Any]:
  """``batch`` with row ``b``'s phonemes (and lengths, durations) taken from row ``b - 1``
  (a roll over the batch): every row's frames with another utterance's text."""
  out = dict(batch)
  for key in ("phonemes", "phoneme_len", "durations"):
    if key in batch:
      out[key] = jnp.roll(batch[key], 1, axis=0)
  return out


class GMMLMTask(CorpusData):

  def __init__(self, cfg: ml_collections.ConfigDict):
    self.cfg = cfg
    self.model = build_model(cfg)
    self.groups = ("model",)
    if cfg.data.mode != "bucket" or cfg.data.features != "latents":
      raise ValueError("config.data: the gmm_lm task trains on latent shards: set "
                       "data.mode='bucket' and data.features='latents'")
    self.frames_per_step = stacking.frames_per_step(cfg)
    self.warmup_steps = int(cfg.alignment.get("reference_warmup_steps", 0))
    step_samples = int(cfg.model.latent_hop) * self.frames_per_step
    bad = [int(s) for s in cfg.data.bucket_samples if int(s) % step_samples]
    if bad:
      raise ValueError(f"config.data.bucket_samples {bad} are not multiples of "
                       f"config.model.latent_hop * config.model.frames_per_step = "
                       f"{step_samples}")
    self.frames_per_bucket = [int(s) // int(cfg.model.latent_hop)
                              for s in cfg.data.bucket_samples]
    # Corpus duration frames -> latent frames, for the alignment's agreement with the corpus'
    # own (espeak) phoneme durations in the logged statistics; None without the data.
    self.duration_scale = None
    if cfg.data.dir and os.path.isdir(cfg.data.dir):  # absent: inference without the data
      self._check_manifest(cfg.data.dir)
    self._codec = None

  def _check_manifest(self, data_dir: str) -> None:
    manifest = read_manifest(data_dir)
    symbols = len(manifest["phoneme_table"]["symbols"])
    if symbols > int(self.cfg.model.vocab_size):
      raise ValueError(f"config.model.vocab_size={self.cfg.model.vocab_size} is smaller than "
                       f"the {symbols}-symbol phoneme table of {data_dir}/manifest.json")
    info = manifest.get("latents")
    if not info:
      raise ValueError(f"config.data.dir: {data_dir}/manifest.json has no 'latents' entry; "
                       f"run `jaxtts-codec encode-dataset` and point data.dir at its output")
    for key, field in (("dim", "latent_dim"), ("hop_length", "latent_hop")):
      if int(info[key]) != int(self.cfg.model[field]):
        raise ValueError(f"config.model.{field}={self.cfg.model[field]} but the latent shards "
                         f"in {data_dir} have {key}={info[key]}")
    if self.warmup_steps and "durations" not in manifest.get("features", {}):
      raise ValueError(f"config.alignment.reference_warmup_steps={self.warmup_steps} needs "
                       f"phoneme durations, and {data_dir}/manifest.json has none; set it to 0")
    if manifest.get("hop_length"):
      self.duration_scale = float(manifest["hop_length"]) / float(
          int(self.cfg.model.latent_hop) * self.frames_per_step)

  # ------------------------------------------------------------------ shapes and init
  def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    f, d, p = self.frames_per_bucket[-1], int(self.cfg.model.latent_dim), int(
        self.cfg.data.max_phonemes)
    return self.without_absent_fields({
        "latents": np.zeros((batch_size, f, d), np.float32),
        "latent_len": np.full((batch_size,), f, np.int32),
        "phonemes": np.ones((batch_size, p), np.int32),
        "phoneme_len": np.full((batch_size,), p, np.int32),
        "durations": np.zeros((batch_size, p), np.int32),
        "speaker_id": np.zeros((batch_size,), np.int32)})

  def flops_per_step(self, batch_shapes: Mapping[str, tuple[int, ...]]) -> float:
    """Model FLOPs of one train step on a global batch (`jaxtts.tasks.flops`): 3x the
    teacher-forced forward on the padded ``latents [B, I, D]`` and ``phonemes [B, J]``."""
    b, i, _ = flops_lib.shape_of(batch_shapes, "latents")
    j = flops_lib.shape_of(batch_shapes, "phonemes")[1]
    return flops_lib.train_step_from_forward(flops_lib.gmm_lm_forward(self.cfg, b, i, j))

  def steps(self, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """The decoder's steps: ``latents [B, I // r, r D]`` and ``latent_len // r``."""
    return stacking.stack_frames(batch["latents"], batch["latent_len"], self.frames_per_step)

  @staticmethod
  def _masks(latents, latent_len, phonemes, phoneme_len):
    latent_mask = jnp.arange(latents.shape[1])[None, :] < latent_len[:, None]
    phoneme_mask = jnp.arange(phonemes.shape[1])[None, :] < phoneme_len[:, None]
    return latent_mask, phoneme_mask

  def init_params(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> dict[str, Any]:
    latents, latent_len = self.steps(batch)
    latent_mask, phoneme_mask = self._masks(latents, latent_len, batch["phonemes"],
                                            batch["phoneme_len"])
    p_rng, a_rng = jax.random.split(rng)
    variables = self.model.init({"params": p_rng, "alignment": a_rng}, latents,
                                latent_mask, batch["phonemes"], phoneme_mask)
    return {"model": variables["params"]}

  # ------------------------------------------------------------------ loss
  def losses(self, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array,
             temperature: Any, deterministic: bool, warm: Any = False
             ) -> tuple[jax.Array, tuple[dict, dict]]:
    """The loss and (metrics, model outputs). ``warm`` (traced bool): a step of the
    alignment warm start (``alignment.reference_warmup_steps``), where the corpus durations
    replace the sampled alignment and supervise the stay decisions."""
    latents, latent_len = self.steps(batch)
    latent_mask, phoneme_mask = self._masks(latents, latent_len, batch["phonemes"],
                                            batch["phoneme_len"])
    a_rng, d_rng = jax.random.split(rng)
    reference = (batch["durations"] * self.duration_scale
                 if self.duration_scale and "durations" in batch else None)
    warm_start = self.warmup_steps != 0 and reference is not None
    ref_index = (monotonic.reference_phonemes(reference, phoneme_mask, latents.shape[1])
                 if warm_start else None)
    ref_alpha = (jax.nn.one_hot(ref_index, phoneme_mask.shape[1]) * phoneme_mask[:, None]
                 if warm_start else None)
    out = self.model.apply({"params": params}, latents, latent_mask,
                           batch["phonemes"], phoneme_mask, temperature, deterministic,
                           reference_alpha=ref_alpha, use_reference=warm,
                           rngs={"alignment": a_rng, "dropout": d_rng})
    mask = latent_mask.astype(jnp.float32)
    nll = mixture_lib.mixture_nll(out["mixture"], latents, mask, per_dim=True)
    stop = stop_loss(out["stop_logits"], latent_len, mask, self.cfg.loss.stop_pos_weight)
    loss = nll + self.cfg.loss.stop_weight * stop
    extra = {}
    if warm_start:
      stay = monotonic.reference_stay_loss(out["energies"], ref_index, latent_mask,
                                           phoneme_mask)
      loss = loss + jnp.where(warm, self.cfg.alignment.reference_stay_weight, 0.0) * stay
      extra = {"alignment/reference_stay_loss": stay,
               "alignment/warm_start": jnp.asarray(warm, jnp.float32)}
    # The model's own alignment, also on warm-start steps (where the decoder sees the corpus').
    stats = monotonic.alignment_stats(out["sampled_alpha"], latent_mask, phoneme_mask,
                                      reference)
    resp = mixture_lib.responsibilities(out["mixture"], latents)          # [B, I, N]
    usage = jnp.sum(resp * mask[..., None], axis=(0, 1)) / jnp.maximum(jnp.sum(mask), 1.0)
    metrics = {"loss": loss, "nll_per_dim": nll, "stop_loss": stop,
               "energy_bias": params["energy"]["energy_bias"],
               "mixture_entropy": -jnp.sum(usage * jnp.log(usage + 1e-12)),
               **{f"alignment/{k}": v for k, v in stats.items()}, **extra}
    return loss, (metrics, out)

  def train_step(self, state: state_lib.TrainState, batch: Mapping[str, jax.Array],
                 rng: jax.Array, optimizers) -> tuple[state_lib.TrainState, dict]:
    s = gumbel_temperature(self.cfg, state.step)
    grads, (metrics, _) = jax.grad(self.losses, has_aux=True)(
        state.params["model"], batch, rng, s, False, self.warm(state.step))
    params, opt_state = dict(state.params), dict(state.opt_state)
    params["model"], opt_state["model"] = state_lib.apply_group(
        params["model"], opt_state["model"], grads, optimizers["model"])
    metrics.update(grad_norm=optax.tree.norm(grads), gumbel_temperature=s)
    return state.replace(params=params, opt_state=opt_state), metrics

  def warm(self, step: jax.Array) -> jax.Array:
    """Is ``step`` an alignment warm-start step (``alignment.reference_warmup_steps`` N:
    the first N steps; N < 0: every step)."""
    return jnp.logical_or(self.warmup_steps < 0, step < self.warmup_steps)

  def eval_step(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array]) -> dict:
    """Teacher-forced metrics with the training sampler on a fixed key (deterministic), and
    ``text_nll_gain``: the NLL per dim with each row's text replaced by the previous row's
    (`mismatched_text`) minus the NLL with its own. Near 0, the decoder does not use the
    text (it continues the previous frames whatever the phonemes say), however well the
    alignment statistics look; free-running it then ignores the target text."""
    s = jnp.float32(self.cfg.alignment.temperature_end)
    metrics = self.losses(params["model"], batch, jax.random.key(0), s, True)[1][0]
    if batch["phonemes"].shape[0] > 1:
      other = self.losses(params["model"], mismatched_text(batch), jax.random.key(0), s,
                          True)[1][0]
      metrics["text_nll_gain"] = other["nll_per_dim"] - metrics["nll_per_dim"]
    return metrics

  # ------------------------------------------------------------------ samples
  def sample_step(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array]) -> dict:
    """Teacher-forced outputs for the sample writer: the alignment, the mixture mean and a
    sample of eq. 6 at the synthesis temperatures (fixed key). The mean of a multimodal
    mixture lies between its components and is no sample of it, so the teacher-forcing
    reconstruction (Tables 3-4) decodes the sample."""
    _, (_, out) = self.losses(params["model"], batch, jax.random.key(0),
                              jnp.float32(self.cfg.alignment.temperature_end), True)
    syn = self.cfg.synthesis
    sample = mixture_lib.sample_mixture(jax.random.key(1), out["mixture"],
                                        syn.weight_temperature, syn.scale_temperature)
    r = self.frames_per_step
    return {"alpha": out["alpha"], "sample": stacking.unstack_frames(sample, r),
            "mean": stacking.unstack_frames(mixture_lib.mixture_mean(out["mixture"]), r)}

  def codec(self):
    """The codec that made the latent shards (manifest ``latents.codec_workdir``), or None."""
    if self._codec is None:
      info = read_manifest(self.cfg.data.dir).get("latents", {})
      path = info.get("codec_workdir")
      if path and os.path.isdir(path):
        self._codec = load_codec(path)
      else:
        self._codec = False
        log.info("no codec at %r: GMM-LM samples are written without audio", path)
    return self._codec or None

  def write_samples(self, writer, step: int, batch: Mapping[str, np.ndarray],
                    outputs: Mapping[str, np.ndarray]) -> None:
    codec = self.codec()
    distances = []
    for i in range(min(int(self.cfg.train.num_samples), batch["latents"].shape[0])):
      r = self.frames_per_step
      f, p = int(batch["latent_len"][i]) // r * r, int(batch["phoneme_len"][i])
      if f == 0:
        continue
      writer.image(step, f"sample_{i}/alignment", outputs["alpha"][i, :f // r, :p].T,
                   xlabel=f"step ({r} frames)" if r > 1 else "frame", ylabel="phoneme")
      writer.image(step, f"sample_{i}/latents_target", batch["latents"][i, :f].T,
                   xlabel="frame", ylabel="latent dim")
      writer.image(step, f"sample_{i}/latents_teacher_forced_mean", outputs["mean"][i, :f].T,
                   xlabel="frame", ylabel="latent dim")
      writer.image(step, f"sample_{i}/latents_teacher_forced_sample",
                   outputs["sample"][i, :f].T, xlabel="frame", ylabel="latent dim")
      if codec is not None:
        rate = codec.sample_rate
        target = codec.decode({"latents": batch["latents"][i, :f]})
        sampled = codec.decode({"latents": outputs["sample"][i, :f]})
        writer.audio(step, f"sample_{i}/codec_target", target, rate)
        writer.audio(step, f"sample_{i}/teacher_forced_sample", sampled, rate)
        writer.audio(step, f"sample_{i}/teacher_forced_mean",
                     codec.decode({"latents": outputs["mean"][i, :f]}), rate)
        distances.append(codec_metrics.mel_distance(sampled, target, rate))
    if distances:
      # Tables 3-4's teacher-forcing reconstruction: the codec's decoding of the predicted
      # (sampled) latents against its decoding of the recorded ones, so only the LM's error
      # is measured (DAC's mel distance, lower is better).
      writer.scalars(step, {"valid/teacher_forced_mel_distance": float(np.mean(distances))})
