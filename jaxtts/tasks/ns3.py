"""NaturalSpeech 3 task (§3.3, appendix A): trains `jaxtts.diffusion.ns3.NS3` (phoneme encoder,
phone-level and frame-level masked diffusion) on FACodec code shards (``codes [B, T, Q]``,
``code_len``, ``phonemes [B, P]``, ``phoneme_len``, ``durations [B, P]`` at the codec's hop,
``phone_prosody_codes [B, P, Qp]`` and ``timbre [B, H]``; `configs/ns3.py`).

One step, per row (`jaxtts.diffusion.objective.masked_diffusion_loss` for each network):

  k ~ ⌊U(prompt_fraction) · P_b⌋ phones (at least 1, at most P_b - 1) are the prompt, and the
  first Σ_{p<k} d_p frames with them (one prefix, the same audio at both levels);
  phone level:  codes (prosody codes, duration token) [B, P, Qp + 1], prompt k phones
  frame level:  codes [B, T, Q], prompt Σ_{p<k} d_p frames, condition = the phoneme encodings
                length-regulated by the recorded durations
  L = phone_weight · L_phone + frame_weight · L_frame

with ``duration_loss = "l2"``: the phone-level diffusion covers the prosody codes only and
``duration_l2_weight · mean_target (log(1 + d) - pred)^2`` is added (Table 11's ablation).

Logged: both losses and masked-token accuracies, each level's loss (``frame/level_<q>``:
prosody, content x 2, detail x 3 for FACodec's layout; ``phone/level_<q>``: prosody code(s),
then duration), the prompt's mean length, durations clipped to the top token. Samples: the
held-out batch generated from its own prompt prefix through `jaxtts.diffusion.generate`
(phone level, then the frame level with the recorded durations so it lines up with the
recording), decoded by the FACodec named in the shards' manifest with the row's timbre: the
target and generated codes as images, predicted against recorded durations, and audio.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxtts.codec.registry import load_codec
from jaxtts.data import features as features_lib
from jaxtts.data.source import read_manifest
from jaxtts.diffusion import generate
from jaxtts.diffusion.ns3 import NS3
from jaxtts.diffusion.objective import masked_diffusion_loss
from jaxtts.diffusion.phones import duration_tokens
from jaxtts.tasks import flops as flops_lib
from jaxtts.tasks.corpus_data import CorpusData
from jaxtts.train import state as state_lib

log = logging.getLogger(__name__)

MODEL_FIELDS = ("num_phones", "codebook_size", "num_code_levels", "phone_prosody_levels",
                "max_duration", "encoder_dim", "encoder_layers", "encoder_heads",
                "encoder_ffn_dim", "encoder_kernel_size", "phone_dim", "phone_layers",
                "frame_dim", "frame_layers", "heads", "ffn_dim", "kernel_size", "dropout",
                "time_dim", "duration_loss", "position")


def from_config(cfg: ml_collections.ConfigDict) -> NS3:
  """The model of an ``ns3`` config (``configs/ns3.py``)."""
  dtype = jnp.bfloat16 if cfg.train.compute_dtype == "bfloat16" else jnp.float32
  return NS3(**{k: cfg.model[k] for k in MODEL_FIELDS}, dtype=dtype)


def prompt_split(rng: jax.Array, phoneme_len: jax.Array, durations: jax.Array,
                 fraction: tuple[float, float]) -> tuple[jax.Array, jax.Array]:
  """``(prompt phones k [B], prompt frames [B])``: ``k = clip(⌊u P_b⌋, 1, P_b - 1)`` with ``u ~
  U(fraction)`` (0 for rows of fewer than 2 phones) and the frames of those ``k`` phones."""
  lo, hi = float(fraction[0]), float(fraction[1])
  u = jax.random.uniform(rng, phoneme_len.shape, minval=lo, maxval=hi)
  n = phoneme_len.astype(jnp.int32)
  k = jnp.clip(jnp.floor(u * n).astype(jnp.int32), 1, jnp.maximum(n - 1, 1))
  k = jnp.where(n >= 2, k, 0)
  frames = jnp.sum(jnp.where(jnp.arange(durations.shape[1])[None] < k[:, None], durations, 0),
                   axis=1)
  return k, frames.astype(jnp.int32)


class NS3Task(CorpusData):

  def __init__(self, cfg: ml_collections.ConfigDict):
    self.cfg = cfg
    self.model = from_config(cfg)
    self.groups = ("model",)
    if cfg.data.mode != "bucket" or cfg.data.features != "codes":
      raise ValueError("config.data: the ns3 task trains on FACodec code shards: set "
                       "data.mode='bucket' and data.features='codes'")
    lo, hi = (float(x) for x in cfg.diffusion.prompt_fraction)
    if not 0.0 <= lo <= hi < 1.0:
      raise ValueError(f"config.diffusion.prompt_fraction must satisfy 0 <= lo <= hi < 1, got "
                       f"{tuple(cfg.diffusion.prompt_fraction)}")
    self.hop, self.timbre_dim = None, 1
    self._codec = None
    if cfg.data.dir and os.path.isdir(cfg.data.dir):  # absent: inference without the data
      self.hop = check_manifest(cfg, cfg.data.dir)
      self.timbre_dim = int(read_manifest(cfg.data.dir)["codes"].get("timbre_dim", 1))

  # ------------------------------------------------------------------ shapes and init
  def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    m = self.cfg.model
    hop = self.hop or 200
    f, p = int(self.cfg.data.bucket_samples[-1]) // hop, int(self.cfg.data.max_phonemes)
    qp = max(int(m.phone_prosody_levels), 1)
    return {"codes": np.zeros((batch_size, f, int(m.num_code_levels)), np.int32),
            "code_len": np.full((batch_size,), f, np.int32),
            "phonemes": np.ones((batch_size, p), np.int32),
            "phoneme_len": np.full((batch_size,), p, np.int32),
            "durations": np.ones((batch_size, p), np.int32),
            "phone_prosody_codes": np.zeros((batch_size, p, qp), np.int32),
            "timbre": np.zeros((batch_size, self.timbre_dim), np.float32),
            "speaker_id": np.zeros((batch_size,), np.int32)}

  def init_params(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> dict[str, Any]:
    phone_mask, frame_mask = self._masks(batch)
    variables = self.model.init({"params": rng}, batch["phonemes"], phone_mask,
                                self._phone_codes(batch, phone_mask)[0], batch["durations"],
                                batch["codes"], frame_mask)
    return {"model": variables["params"]}

  def flops_per_step(self, batch_shapes: Mapping[str, tuple[int, ...]]) -> float:
    """3x the forward of the three networks on the padded batch (`jaxtts.tasks.flops`)."""
    b, t, _ = flops_lib.shape_of(batch_shapes, "codes")
    p = flops_lib.shape_of(batch_shapes, "phonemes")[1]
    return flops_lib.train_step_from_forward(flops_lib.ns3_forward(self.cfg, b, p, t))

  # ------------------------------------------------------------------ loss
  @staticmethod
  def _masks(batch):
    p, t = batch["phonemes"].shape[1], batch["codes"].shape[1]
    return (jnp.arange(p)[None] < batch["phoneme_len"][:, None],
            jnp.arange(t)[None] < batch["code_len"][:, None])

  def _phone_codes(self, batch, phone_mask):
    """``[B, P, Qp + 1]``: the phone-level prosody codes, then the duration tokens; and the
    number of durations clipped to the top token."""
    qp = int(self.cfg.model.phone_prosody_levels)
    durations = jnp.where(phone_mask, batch["durations"], 0)
    tokens, clipped = duration_tokens(durations, int(self.cfg.model.max_duration))
    parts = [batch["phone_prosody_codes"][..., :qp].astype(jnp.int32)] if qp else []
    return jnp.concatenate(parts + [tokens[..., None]], axis=-1), clipped

  def losses(self, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array,
             deterministic: bool) -> tuple[jax.Array, dict]:
    cfg, model = self.cfg, self.model
    variables = {"params": params}
    phone_mask, frame_mask = self._masks(batch)
    split_rng, phone_rng, frame_rng, drop_rng = jax.random.split(rng, 4)
    durations = jnp.where(phone_mask, batch["durations"], 0)
    prompt_phones, prompt_frames = prompt_split(split_rng, batch["phoneme_len"], durations,
                                                cfg.diffusion.prompt_fraction)
    enc_rng, drop_rng = jax.random.split(drop_rng)
    enc = model.apply(variables, batch["phonemes"], phone_mask, deterministic,
                      method=NS3.encode_phonemes, rngs={"dropout": enc_rng})
    phone_codes, clipped = self._phone_codes(batch, phone_mask)
    qp = int(cfg.model.phone_prosody_levels)
    regress = cfg.model.duration_loss == "l2"
    dp = bool(cfg.diffusion.duration_prompt)
    common = dict(cfg_drop=float(cfg.diffusion.cfg_drop),
                  stratified=bool(cfg.diffusion.stratified_levels))
    prompt_p = jnp.arange(phone_codes.shape[1])[None] < prompt_phones[:, None]

    def phone_apply(codes, visible, level, t, condition, mask, prompt, drop, r):
      if regress:  # the duration column rides along (seen in the prompt only)
        codes = jnp.concatenate([codes, phone_codes[..., -1:]], -1)
        visible = jnp.concatenate([visible, (prompt & dp)[..., None]], -1)
      return model.apply(variables, condition, codes, visible, level, t, mask, prompt=prompt,
                         drop_prompt=drop, deterministic=deterministic,
                         method=NS3.phone_logits, rngs={"dropout": r})

    metrics = {}
    loss = jnp.zeros(())
    diffused = phone_codes[..., :qp] if regress else phone_codes
    if diffused.shape[-1]:
      l_phone, m_phone = masked_diffusion_loss(
          phone_apply, diffused, batch["phoneme_len"], prompt_phones, enc, phone_rng,
          prompt_levels=None if regress else (True,) * qp + (dp,), **common)
      loss = loss + cfg.loss.phone_weight * l_phone
      metrics.update(self._level_metrics("phone", m_phone, diffused.shape[-1]))
    if regress:
      visible = jnp.concatenate([jnp.repeat(phone_mask[..., None], qp, -1),
                                 (prompt_p & dp)[..., None]], -1)
      r_rng, drop_rng = jax.random.split(drop_rng)
      pred = model.apply(variables, enc, phone_codes, visible, phone_mask, prompt=prompt_p,
                         deterministic=deterministic, method=NS3.duration_regression,
                         rngs={"dropout": r_rng})
      target = (phone_mask & ~prompt_p).astype(jnp.float32)
      err = jnp.square(pred - jnp.log1p(durations.astype(jnp.float32)))
      l_dur = jnp.sum(err * target) / jnp.maximum(jnp.sum(target), 1.0)
      loss = loss + cfg.loss.duration_l2_weight * l_dur
      metrics["phone/duration_l2"] = l_dur

    def frame_apply(codes, visible, level, t, condition, mask, prompt, drop, r):
      return model.apply(variables, condition, durations, codes, visible, level, t, mask,
                         prompt=prompt, drop_prompt=drop, deterministic=deterministic,
                         method=NS3.frame_logits, rngs={"dropout": r})

    l_frame, m_frame = masked_diffusion_loss(frame_apply, batch["codes"].astype(jnp.int32),
                                             batch["code_len"], prompt_frames, enc, frame_rng,
                                             **common)
    loss = loss + cfg.loss.frame_weight * l_frame
    metrics.update(self._level_metrics("frame", m_frame, batch["codes"].shape[-1]))
    rows = jnp.maximum(jnp.sum(batch["phoneme_len"] > 0), 1)
    metrics.update(loss=loss, duration_clipped=clipped.astype(jnp.float32),
                   prompt_frames=jnp.sum(prompt_frames) / rows,
                   prompt_phones=jnp.sum(prompt_phones) / rows)
    return loss, metrics

  def _level_metrics(self, prefix: str, m: dict, num_levels: int) -> dict:
    out = {f"{prefix}/loss": m["loss"], f"{prefix}/accuracy": m["accuracy"],
           f"{prefix}/masked_fraction": m["masked_fraction"]}
    # Each level's loss, when every batch draws every level (stratified, B >= Q).
    if bool(self.cfg.diffusion.stratified_levels) and \
        int(self.cfg.train.batch_size) >= num_levels:
      for q in range(num_levels):
        out[f"{prefix}/level_{q}"] = m["level_loss"][q]
    return out

  def train_step(self, state: state_lib.TrainState, batch: Mapping[str, jax.Array],
                 rng: jax.Array, optimizers) -> tuple[state_lib.TrainState, dict]:
    grads, metrics = jax.grad(self.losses, has_aux=True)(state.params["model"], batch, rng,
                                                          False)
    params, opt_state = dict(state.params), dict(state.opt_state)
    params["model"], opt_state["model"] = state_lib.apply_group(
        params["model"], opt_state["model"], grads, optimizers["model"])
    metrics["grad_norm"] = optax.tree.norm(grads)
    return state.replace(params=params, opt_state=opt_state), metrics

  def eval_step(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array]) -> dict:
    """The training losses on a fixed key (the same masks, prompts and levels every eval)."""
    return self.losses(params["model"], batch, jax.random.key(0), True)[1]

  # ------------------------------------------------------------------ samples
  def sample_step(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array]) -> dict:
    """Each row generated from its own prompt prefix (the eval split, fixed keys): phone-level
    codes and durations, then the frame codes with the recorded durations (so the result lines
    up with the recording frame for frame)."""
    settings = generate.Settings.from_config(self.cfg.synthesis)
    phone_mask, _ = self._masks(batch)
    durations = jnp.where(phone_mask, batch["durations"], 0)
    k, frames = prompt_split(jax.random.key(0), batch["phoneme_len"], durations,
                             self.cfg.diffusion.prompt_fraction)
    phone_codes, _ = self._phone_codes(batch, phone_mask)
    enc, phone_out, _ = generate.phone_level(
        self.model, params["model"], batch["phonemes"], batch["phoneme_len"], k, phone_codes,
        jax.random.key(1), settings, bool(self.cfg.diffusion.duration_prompt))
    codes, _ = generate.frame_level(self.model, params["model"], enc, durations,
                                    batch["code_len"], frames, batch["codes"].astype(jnp.int32),
                                    jax.random.key(2), settings)
    return {"codes": codes, "durations": phone_out[..., -1], "prompt_phones": k,
            "prompt_frames": frames}

  def codec(self):
    """The FACodec of the code shards (manifest ``codes.codec_workdir``), or None."""
    if self._codec is None:
      path = read_manifest(self.cfg.data.dir).get("codes", {}).get("codec_workdir")
      self._codec = load_codec(path) if path and os.path.isdir(path) else False
      if not self._codec:
        log.info("no codec at %r: NS3 samples are written without audio", path)
    return self._codec or None

  def write_samples(self, writer, step: int, batch: Mapping[str, np.ndarray],
                    outputs: Mapping[str, np.ndarray]) -> None:
    codec = self.codec()
    for i in range(min(int(self.cfg.train.num_samples), batch["codes"].shape[0])):
      f, p = int(batch["code_len"][i]), int(batch["phoneme_len"][i])
      if f == 0:
        continue
      kf = int(outputs["prompt_frames"][i])
      writer.image(step, f"sample_{i}/codes_target", batch["codes"][i, :f],
                   xlabel="frame", ylabel="code level")
      writer.image(step, f"sample_{i}/codes_generated", outputs["codes"][i, :f],
                   xlabel=f"frame (prompt: the first {kf})", ylabel="code level")
      recorded = np.minimum(batch["durations"][i, :p], int(self.cfg.model.max_duration))
      writer.image(step, f"sample_{i}/durations_recorded_vs_generated",
                   np.stack([recorded, outputs["durations"][i, :p]], -1).astype(np.float32),
                   xlabel=f"phone (prompt: the first {int(outputs['prompt_phones'][i])})",
                   ylabel="recorded / generated")
      if codec is not None and "timbre" in batch:
        rate = codec.sample_rate
        timbre = np.asarray(batch["timbre"][i], np.float32)
        writer.audio(step, f"sample_{i}/codec_target",
                     codec.decode({"codes": batch["codes"][i, :f], "timbre": timbre}), rate)
        writer.audio(step, f"sample_{i}/generated",
                     codec.decode({"codes": outputs["codes"][i, :f], "timbre": timbre}), rate)


def check_manifest(cfg: ml_collections.ConfigDict, data_dir: str) -> int:
  """Checks the code shards of ``data_dir`` against the config; returns the codes' hop.

  Raises ValueError naming the manifest field and the config field that disagree."""
  manifest = read_manifest(data_dir)
  path = f"{data_dir}/manifest.json"
  symbols = len(manifest["phoneme_table"]["symbols"])
  m = cfg.model
  if symbols > int(m.num_phones):
    raise ValueError(f"config.model.num_phones={m.num_phones} is smaller than the "
                     f"{symbols}-symbol phoneme table of {path}")
  features_lib.require(manifest, ("phonemes", "durations"), path,
                       flag="the ns3 task (duration diffusion and the length regulator)")
  codes = manifest.get("codes")
  if not codes:
    raise ValueError(f"config.data.dir: {path} has no 'codes' entry; run `jaxtts-codec "
                     f"encode-dataset --workdir FACODEC` and point data.dir at its output")
  if int(codes["num_quantizers"]) != int(m.num_code_levels):
    raise ValueError(f"config.model.num_code_levels={m.num_code_levels} but {path} codes.num_"
                     f"quantizers={codes['num_quantizers']} (the FACodec's codebook layout)")
  sizes = sorted(set(int(s) for s in codes["codebook_sizes"]))
  if sizes != [int(m.codebook_size)]:
    raise ValueError(f"config.model.codebook_size={m.codebook_size} but {path} "
                     f"codes.codebook_sizes={codes['codebook_sizes']}")
  hop = int(codes["hop_length"])
  if int(manifest["hop_length"]) != hop:
    raise ValueError(f"{path}: phone durations are at hop {manifest['hop_length']} but the codes "
                     f"at hop {hop}; NS3 needs durations in code frames (FACodec hop 200 on a "
                     f"16 kHz corpus with hop_length 200)")
  spec = (manifest.get("features") or {}).get("phone_prosody_codes")
  qp = int(m.phone_prosody_levels)
  if qp and not spec:
    raise ValueError(f"{path} has no 'phone_prosody_codes' feature (encode-dataset writes them "
                     f"when the corpus durations are at the codec's hop); "
                     f"config.model.phone_prosody_levels={qp} needs them")
  if qp and int(spec["inner_shape"][0]) < qp:
    raise ValueError(f"config.model.phone_prosody_levels={qp} but {path} "
                     f"phone_prosody_codes have {spec['inner_shape'][0]} per phone")
  bad = [int(s) for s in cfg.data.bucket_samples if int(s) % hop]
  if bad:
    raise ValueError(f"config.data.bucket_samples {bad} are not multiples of the code hop {hop}")
  return hop
