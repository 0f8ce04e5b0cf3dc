"""CLONE task (`000_31cfc13db0a5a5eb.txt`; `jaxtts.prosody.clone.CLONE`, `configs/clone.py`):
trains the whole model end to end on bucket batches of whole utterances (``audio [B, Tb]``,
``phonemes [B, P]``, ``durations [B, P]`` at the model's hop, ``speaker_id``).

The objective, each term under its own weight (``config.loss``)::

    L = mel_weight · (L_mel(posterior path) + L_mel(acoustic path))      λ1 = 45
      + kl_weight · L_kl            eq. 16, flow prior on the phoneme-level z   λ2 = 1
      + pp_weight · L_pp            eq. 17, prosody predictor vs posterior     λ3 = 10
      + duration_weight · L_dur     VITS's MSE on log durations               λ4 = 0.1
      + ir_match_weight · |îr − sg(ir)|      ours: ties the two autoencoders
      [+ f0_weight · L1(log F0) + voicing_weight · BCE(voicing)]  model.excitation: f0_head on îr
      [+ adversarial_weight · L_adv + feature_matching_weight · L_fm]   λ5 = λ6 = 1

The mapping of λ3 and λ4 is not published (the appendix lists λ1..λ6 = [45, 1, 10, 0.1, 1, 1]);
ours is the one above, each weight named by its term. The wave decoder runs on a random
``loss.segment_frames`` window of each row (VITS's random slice), decoding both the posterior
wave encoder's ``ir`` and the acoustic encoder's ``îr``; L_mel is the L1 distance of natural-log
mel spectrograms (VITS). The spectrogram input is the linear magnitude ``|STFT|`` on the
frames the Vocos decoder writes (`jaxtts.nn.vocos.same_frames_stft`), so frame ``f`` of the
spectrogram, the durations and the decoder all cover the same samples.

Samples: each eval row synthesised from its text alone (prosody sampled from the predictor,
durations predicted) and reconstructed through the posterior, as audio, mel images and the
predicted against recorded durations.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxtts.audio import spectral
from jaxtts.audio.excitation import f0_head_losses
from jaxtts.data import features as features_lib
from jaxtts.data.source import read_manifest
from jaxtts.nn.duration import duration_loss
from jaxtts.nn.vocos import same_frames_stft
from jaxtts.plots import display_mel
from jaxtts.prosody import synthesis
from jaxtts.prosody.clone import CLONE
from jaxtts.prosody.kl import flow_prior_kl, prosody_predictor_kl
from jaxtts.tasks import adversarial
from jaxtts.tasks import flops as flops_lib
from jaxtts.tasks.corpus_data import CorpusData
from jaxtts.train import state as state_lib

log = logging.getLogger(__name__)

MODEL_FIELDS = ("num_phones", "hidden", "prosody_dim", "speaker_dim", "speaker_encoder",
                "num_speakers", "reference_layers",
                "text_layers", "text_heads", "text_ffn_dim", "text_kernel_size",
                "wn_kernel_size", "prosody_layers", "posterior_layers", "acoustic_layers",
                "wave_posterior_layers", "alignment", "aligner_mels", "flows", "flow_layers",
                "flow_mean_only",
                "duration_filters", "duration_kernel_size", "duration_dropout", "hop_length",
                "decoder", "excitation", "decoder_dim", "decoder_intermediate_dim",
                "decoder_layers",
                "hifigan_upsample_rates", "hifigan_upsample_kernel_sizes", "hifigan_channels",
                "hifigan_resblock_kernel_sizes", "hifigan_resblock_dilations", "dropout")


def from_config(cfg: ml_collections.ConfigDict) -> CLONE:
  """The model of a ``clone`` config (``configs/clone.py``)."""
  dtype = jnp.bfloat16 if cfg.train.compute_dtype == "bfloat16" else jnp.float32
  return CLONE(**{k: cfg.model[k] for k in MODEL_FIELDS},
               sample_rate=int(cfg.data.sample_rate), dtype=dtype)


def aligner_log_mel(cfg: ml_collections.ConfigDict, audio: jax.Array,
                    num_frames: int) -> jax.Array:
  """``model.alignment="mas"``'s log-mel frames ``[B, F, M]`` of ``audio [B, S]`` (frame ``i``
  centred on sample ``i hop``; n_fft = 4 hop, ``model.aligner_mels`` bins)."""
  hop = int(cfg.model.hop_length)
  mel = spectral.MelConfig(sample_rate=int(cfg.data.sample_rate), n_fft=4 * hop,
                           hop_length=hop, n_mels=int(cfg.model.aligner_mels))
  return mel.log_mel(audio)[:, :num_frames]


def linear_spectrogram(audio: jax.Array, hop: int) -> jax.Array:
  """``audio [B, S]`` -> ``|STFT| [B, S // hop, 2 hop + 1]`` (n_fft = 4 hop, Vocos' frames)."""
  return jnp.abs(same_frames_stft(audio, 4 * hop, hop))


def frame_lengths(audio_len: jax.Array, hop: int, num_frames: int) -> jax.Array:
  """Valid frames per row: ``min(ceil(audio_len / hop), F)``."""
  return jnp.minimum((audio_len + hop - 1) // hop, num_frames).astype(jnp.int32)


def check_manifest(cfg: ml_collections.ConfigDict, data_dir: str) -> None:
  """The corpus against the config: one ValueError naming both fields when they disagree."""
  manifest = read_manifest(data_dir)
  path = f"{data_dir}/manifest.json"
  m = cfg.model
  if int(manifest["sample_rate"]) != int(cfg.data.sample_rate):
    raise ValueError(f"config.data.sample_rate={cfg.data.sample_rate} but {path} is at "
                     f"{manifest['sample_rate']} Hz; rebuild the corpus at the model's rate or "
                     f"pick the preset of that rate")
  if int(manifest["hop_length"]) != int(m.hop_length):
    raise ValueError(f"config.model.hop_length={m.hop_length} but the durations of {path} are at "
                     f"hop {manifest['hop_length']}")
  symbols = len(manifest["phoneme_table"]["symbols"])
  if symbols > int(m.num_phones):
    raise ValueError(f"config.model.num_phones={m.num_phones} is smaller than the {symbols}-symbol "
                     f"phoneme table of {path}")
  speakers = int(manifest.get("num_speakers", 0))
  if m.speaker_encoder == "table" and speakers > int(m.num_speakers):
    raise ValueError(f"config.model.num_speakers={m.num_speakers} but {path} has {speakers} "
                     f"speakers")
  if m.excitation:
    features_lib.require(manifest, ("f0", "voiced"), path, flag="config.model.excitation")
  if m.alignment == "durations":  # MAS finds its own; the corpus's are only logged then
    features_lib.require(manifest, ("durations",), path,
                         flag="config.model.alignment='durations' (or use 'mas')")
  bad = [int(s) for s in cfg.data.bucket_samples if int(s) % int(m.hop_length)]
  if bad:
    raise ValueError(f"config.data.bucket_samples {bad} are not multiples of model.hop_length="
                     f"{m.hop_length}")


class CLONETask(CorpusData):

  def __init__(self, cfg: ml_collections.ConfigDict):
    if cfg.data.mode != "bucket" or cfg.data.features != "audio":
      raise ValueError("config.data: the clone task trains on whole utterances: set "
                       "data.mode='bucket' and data.features='audio'")
    if cfg.model.speaker_encoder == "table" and int(cfg.model.num_speakers) <= 0:
      raise ValueError("config.model.num_speakers: speaker_encoder='table' (CLONE's speaker-ID "
                       "table) needs the corpus' speaker count")
    if cfg.model.excitation:   # the task's own view: the F0 frames join every batch
      cfg = ml_collections.ConfigDict(cfg.to_dict())
      cfg.data.extra_features = tuple(dict.fromkeys(tuple(cfg.data.extra_features)
                                                    + ("f0", "voiced")))
    self.cfg = cfg
    self.model = from_config(cfg)
    self.hop = int(cfg.model.hop_length)
    self.sample_rate = int(cfg.data.sample_rate)
    self.mel = spectral.MelConfig(sample_rate=self.sample_rate, n_fft=4 * self.hop,
                                  hop_length=self.hop, n_mels=int(cfg.loss.mel_bins))
    if cfg.data.dir:
      check_manifest(cfg, cfg.data.dir)
    self.discriminators, self.groups, self.adversarial = adversarial.setup(
        cfg.discriminator, self.generator_objective)

  # ------------------------------------------------------------------ shapes and init
  def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    s, p = int(self.cfg.data.bucket_samples[0]), int(self.cfg.data.max_phonemes)
    f = s // self.hop
    durations = np.zeros((batch_size, p), np.int32)
    durations[:, :min(p, f)] = 1
    batch = {"audio": np.zeros((batch_size, s), np.float32),
             "audio_len": np.full((batch_size,), s, np.int32),
             "phonemes": np.ones((batch_size, p), np.int32),
             "phoneme_len": np.full((batch_size,), min(p, f), np.int32),
             "durations": durations, "speaker_id": np.zeros((batch_size,), np.int32)}
    if self.model.excitation:
      batch["f0"] = np.zeros((batch_size, f), np.float32)
      batch["voiced"] = np.zeros((batch_size, f), bool)
    return self.without_absent_fields(batch)

  def init_params(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> dict[str, Any]:
    g_rng, d_rng, f_rng = jax.random.split(rng, 3)
    inputs = self._inputs(batch)
    seg = self._segment(inputs["frame_len"], inputs["spec"].shape[1], f_rng)
    mel = (self.aligner_mel(inputs["audio"], inputs["spec"].shape[1])
           if self.model.alignment == "mas" else None)
    variables = self.model.init({"params": g_rng}, *inputs["args"], rng=f_rng,
                                segment_start=seg, segment_frames=self.segment_frames(
                                    inputs["spec"].shape[1]), mel=mel, **inputs["source"])
    params = {"generator": variables["params"]}
    if self.discriminators is not None:
      params["discriminator"] = self.discriminators.init(
          d_rng, jnp.zeros((1, self.segment_frames(inputs["spec"].shape[1]) * self.hop)))["params"]
    return params

  def flops_per_step(self, batch_shapes: Mapping[str, tuple[int, ...]]) -> float:
    """Model FLOPs of one train step on a global batch (`jaxtts.tasks.flops.clone_train_step`:
    3x the generator forward, 9x the discriminators on the decoded windows)."""
    b, s = flops_lib.shape_of(batch_shapes, "audio")
    p = flops_lib.shape_of(batch_shapes, "phonemes")[1]
    return flops_lib.clone_train_step(self.cfg, b, s, p)

  # ------------------------------------------------------------------ loss
  def segment_frames(self, num_frames: int) -> int:
    return min(int(self.cfg.loss.segment_frames), num_frames)

  def _segment(self, frame_len: jax.Array, num_frames: int, rng: jax.Array) -> jax.Array:
    """``[B]`` random window starts, each window inside its row's valid frames when it fits."""
    seg = self.segment_frames(num_frames)
    room = jnp.maximum(frame_len - seg, 0)
    return jnp.floor(jax.random.uniform(rng, frame_len.shape) * (room + 1)).astype(jnp.int32)

  def _inputs(self, batch):
    audio = batch["audio"].astype(jnp.float32)
    sample_mask = jnp.arange(audio.shape[-1])[None] < batch["audio_len"][:, None]
    audio = audio * sample_mask
    spec = linear_spectrogram(audio, self.hop)
    f = spec.shape[1]
    frame_len = frame_lengths(batch["audio_len"], self.hop, f)
    frame_mask = jnp.arange(f)[None] < frame_len[:, None]
    phone_mask = jnp.arange(batch["phonemes"].shape[1])[None] < batch["phoneme_len"][:, None]
    # A corpus without aligner output has no durations: MAS (model.alignment='mas') needs none.
    recorded = batch.get("durations", jnp.zeros_like(batch["phonemes"]))
    durations = jnp.where(phone_mask, recorded, 0).astype(jnp.int32)
    spec = spec * frame_mask[..., None]
    source = {}
    if self.model.excitation:
      source = {"f0": jnp.where(frame_mask, batch["f0"][:, :f], 0.0).astype(jnp.float32),
                "voiced": frame_mask & batch["voiced"][:, :f].astype(bool)}
    return {"audio": audio, "source": source, "sample_mask": sample_mask, "spec": spec,
            "frame_len": frame_len,
            "frame_mask": frame_mask, "phone_mask": phone_mask, "durations": durations,
            "args": (batch["phonemes"], phone_mask, durations, spec, frame_mask,
                     batch["speaker_id"])}

  def losses(self, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array, train: bool
             ) -> tuple[jax.Array, tuple[dict, jax.Array, jax.Array]]:
    """The objective (module docstring): ``(L, (metrics, fake [2B, s], real [2B, s]))`` with
    the decoded windows of both paths and the recording's windows (padding zeroed)."""
    lc = self.cfg.loss
    seg_rng, fwd_rng, drop_rng = jax.random.split(rng, 3)
    x = self._inputs(batch)
    f = x["spec"].shape[1]
    seg = self.segment_frames(f)
    start = self._segment(x["frame_len"], f, seg_rng)
    use_mas = self.model.alignment == "mas"
    mel = self.aligner_mel(x["audio"], f) if use_mas else None
    out = self.model.apply({"params": params}, *x["args"], rng=fwd_rng, segment_start=start,
                           segment_frames=seg, mel=mel, deterministic=not train,
                           rngs={"dropout": drop_rng}, **x["source"])
    take = jax.vmap(lambda a, s: jax.lax.dynamic_slice_in_dim(a, s * self.hop, seg * self.hop))
    real = take(x["audio"], start)
    real_mask = take(x["sample_mask"].astype(jnp.float32), start)
    frame_window = jnp.arange(seg)[None] + start[:, None]
    window_mask = (frame_window < x["frame_len"][:, None]).astype(jnp.float32)       # [B, seg]
    target_mel = self.mel.log_mel(real)
    mel_mask = window_mask[:, :target_mel.shape[1]] if target_mel.shape[1] <= seg else \
        jnp.pad(window_mask, ((0, 0), (0, target_mel.shape[1] - seg)), mode="edge")
    mel_mask = mel_mask[..., None]

    def mel_l1(wav):
      return jnp.sum(jnp.abs(self.mel.log_mel(wav * real_mask) - target_mel) * mel_mask) / \
          jnp.maximum(jnp.sum(mel_mask) * target_mel.shape[-1], 1.0)

    mel_posterior, mel_acoustic = mel_l1(out["wav_posterior"]), mel_l1(out["wav_acoustic"])
    pm = x["phone_mask"][..., None]
    kl = flow_prior_kl(out["z_p"], out["log_sigma_q"], out["logdet"], pm)
    mu_q, ls_q = out["mu_q"], out["log_sigma_q"]
    if lc.pp_detach_posterior:
      mu_q, ls_q = jax.lax.stop_gradient(mu_q), jax.lax.stop_gradient(ls_q)
    pp = prosody_predictor_kl(out["mu_pp"], out["log_sigma_pp"], mu_q, ls_q, pm)
    dur = duration_loss(out["log_w"], out["durations"], x["phone_mask"])
    wm = window_mask[..., None]
    ir_match = jnp.sum(jnp.abs(out["ir_hat"] - jax.lax.stop_gradient(out["ir"])) * wm) / \
        jnp.maximum(jnp.sum(wm) * out["ir"].shape[-1], 1.0)
    loss = (lc.mel_weight * (mel_posterior + mel_acoustic) + lc.kl_weight * kl
            + lc.pp_weight * pp + lc.duration_weight * dur + lc.ir_match_weight * ir_match)
    metrics = {}
    if self.model.excitation:
      f0_loss, voicing_loss = f0_head_losses(out["f0_raw"], x["source"]["f0"],
                                        x["source"]["voiced"], x["frame_mask"])
      loss = loss + lc.f0_weight * f0_loss + lc.voicing_weight * voicing_loss
      metrics.update(f0_loss=f0_loss, voicing_loss=voicing_loss)
    if use_mas:
      loss = loss + lc.aligner_weight * out["aligner_nll"]
      rows = (batch["audio_len"] > 0)
      metrics.update(aligner_loss=out["aligner_nll"],
                     mas_unalignable_rows=jnp.sum(rows & ~out["alignable"]).astype(jnp.float32))
      if "durations" in batch:  # against the corpus' own, where it has them
        agree = jnp.abs(out["durations"] - x["durations"]) <= 1
        metrics["mas_durations_within_1"] = jnp.sum(agree * x["phone_mask"]) / jnp.maximum(
            jnp.sum(x["phone_mask"]), 1)
    metrics.update({"loss": loss, "mel_posterior_loss": mel_posterior,
               "mel_acoustic_loss": mel_acoustic, "kl_loss": kl, "pp_loss": pp,
               "duration_loss": dur, "ir_match_loss": ir_match,
               "posterior_log_sigma": jnp.sum(out["log_sigma_q"] * pm)
               / jnp.maximum(jnp.sum(pm) * out["log_sigma_q"].shape[-1], 1.0)})
    fake = jnp.concatenate([out["wav_posterior"], out["wav_acoustic"]], 0) * \
        jnp.concatenate([real_mask, real_mask], 0)
    return loss, (metrics, fake, jnp.concatenate([real, real], 0))

  def aligner_mel(self, audio: jax.Array, num_frames: int) -> jax.Array:
    """The aligner's log-mel frames ``[B, F, M]`` (`aligner_log_mel`)."""
    return aligner_log_mel(self.cfg, audio, num_frames)

  def generator_objective(self, g_params: Any, batch: Mapping[str, jax.Array], rng: jax.Array):
    """`losses` in training mode, in the shape `adversarial.AdversarialStep` takes."""
    return self.losses(g_params, batch, rng, True)

  def train_step(self, state: state_lib.TrainState, batch: Mapping[str, jax.Array],
                 rng: jax.Array, optimizers) -> tuple[state_lib.TrainState, dict]:
    if self.adversarial is not None:
      return self.adversarial(state, batch, rng, optimizers)
    params, opt_state = dict(state.params), dict(state.opt_state)
    grads, (metrics, _, _) = jax.grad(self.losses, has_aux=True)(params["generator"], batch,
                                                                 rng, True)
    params["generator"], opt_state["generator"] = state_lib.apply_group(
        params["generator"], opt_state["generator"], grads, optimizers["generator"])
    metrics["grad_norm"] = optax.tree.norm(grads)
    return state.replace(params=params, opt_state=opt_state), metrics

  def eval_step(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array]) -> dict:
    """The objective on a fixed key, without dropout."""
    return self.losses(params["generator"], batch, jax.random.key(0), False)[1][0]

  # ------------------------------------------------------------------ samples
  def sample_step(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array]) -> dict:
    """Text-only synthesis (predicted prosody and durations) and the posterior reconstruction
    of each eval row (fixed keys)."""
    x = self._inputs(batch)
    p = {"params": params["generator"]}
    speaker = self.speaker_inputs(p, batch, x)
    syn = synthesis.synthesize(self.model, p, batch["phonemes"], x["phone_mask"],
                               jax.random.key(1), x["spec"].shape[1],
                               noise_scale=float(self.cfg.synthesis.noise_scale), **speaker)
    durations = x["durations"]
    if "durations" not in batch:  # no aligner output in the corpus: the model's own MAS path
      mel = self.aligner_mel(x["audio"], x["spec"].shape[1])
      durations = self.model.apply(p, method=lambda m: m.align(
          m.encode_text(batch["phonemes"], x["phone_mask"]), x["phone_mask"], mel,
          x["frame_mask"])[0])
    recon = synthesis.reconstruct(self.model, p, batch["phonemes"], x["phone_mask"],
                                  durations, x["spec"], x["frame_mask"], **speaker)
    return {"synthesis": syn["wav"], "synthesis_frames": syn["frame_len"],
            "durations": syn["durations"], "reconstruction": recon}

  def speaker_inputs(self, p, batch, x) -> dict:
    """The speaker arguments of `jaxtts.prosody.synthesis`: the row's ID, or the reference
    encoder's embedding of the row's own recording."""
    if self.model.speaker_encoder == "table":
      return {"speaker_id": batch["speaker_id"]}
    return {"speaker_embedding": self.model.apply(p, x["spec"], x["frame_mask"],
                                                  method=self.model.embed_reference)}

  def write_samples(self, writer, step: int, batch: Mapping[str, np.ndarray],
                    outputs: Mapping[str, np.ndarray]) -> None:
    if not writer.is_main:
      return
    for i in range(min(int(self.cfg.train.num_samples), batch["audio"].shape[0])):
      n, p = int(batch["audio_len"][i]), int(batch["phoneme_len"][i])
      if not n:
        continue
      k = int(outputs["synthesis_frames"][i]) * self.hop
      for kind, wav in (("target", batch["audio"][i, :n]),
                        ("reconstruction", outputs["reconstruction"][i, :n]),
                        ("synthesis", outputs["synthesis"][i, :k])):
        writer.audio(step, f"sample_{i}/{kind}", wav, self.sample_rate)
        writer.image(step, f"sample_{i}/mel_{kind}", display_mel(wav, self.sample_rate),
                     xlabel="frame", ylabel="mel bin")
      if "durations" not in batch:
        continue
      writer.image(step, f"sample_{i}/durations_recorded_vs_predicted",
                   np.stack([batch["durations"][i, :p], outputs["durations"][i, :p]],
                            -1).astype(np.float32), xlabel="phoneme",
                   ylabel="recorded / predicted")
