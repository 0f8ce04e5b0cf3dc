"""FACodec generator task (NaturalSpeech 3, ``../shared/papers/003_1b235cc35c31a20d.txt`` §3.2,
appendix B.1; the model is `jaxtts.codec.facodec.FACodec`).

Loss over a batch of crops ``x [B, S]`` with frame labels (phone, F0, voicing) and speaker ids,
every term a mean over the valid frames (rows for the utterance-level ones)::

  L = w_rec  MelL1(x̂, x)                                    (DAC's multi-scale mel, §B.1: 10)
    + w_cb   Σ_q codebook_q + w_com Σ_q commitment_q          (FVQ, §3.2.1: 1 and 0.25)
    + w_f0   F0(prosody)   + w_ph  CE_phone(content)          (supervision, §3.2.2: 5 and 5)
    + w_spk  CE_speaker(timbre)                               (the paper gives no weight)
    + w_gf0  [F0(GRL content) + F0(GRL detail)]               (§3.2.2: 5)
    + w_gph  [CE_phone(GRL prosody) + CE_phone(GRL detail)]   (§3.2.2: 5)
    + w_gspk CE_speaker(GRL pooled q_p + q_c + q_d)           (§3.2.2: 1)
    [+ w_amp L_A on the Vocos head's spectrum]                (ours, as the GMM-VAE's cpu preset)

and with discriminators (`jaxtts.tasks.adversarial`) the adversarial (2) and feature-matching
(2) terms. The gradient-reversal heads learn to predict their targets while the reversal
(`jaxtts.nn.grl`, α = ``model.grl_alpha``) pushes the branches to carry none of it.

``F0(head) = mean_voiced |ẑ - z| + mean_valid BCE(v̂, voiced)``: ``z`` is log F0 z-scored over
the voiced frames of each crop (the paper: "normalized F0"; a crop is the utterance the model
sees, 1 s in §B.1), with the spread floored at ``loss.f0_std_floor``; a crop with fewer than
two voiced frames adds no F0 term. ``CE_phone`` is over frames, with labels from the corpus
durations (``phone_labels``); ``CE_speaker`` is over rows.

Labels come from the corpus (`data.extra_features`, set here): ``phone_labels`` (derived from
the durations), ``f0`` and ``voiced`` (`jaxtts-corpus derive f0` or ``--f0``). A corpus whose
manifest lists no ``durations`` trains with the phone terms off (logged). Weights of 0 switch a
term off; the ablation presets of ``configs/facodec.py`` do that.

With ``dead_code_reset.every_steps = n > 0`` (ours; the paper has none), every ``n``-th step
ends by restarting each codebook's dead codes from the batch's encodings under the updated
parameters (`jaxtts.nn.quantize.reset_dead_codes`), each quantizer of a residual stack from
its own residual; ``codes/<branch>_<i>/reset`` logs how many (0 on the other steps; like
every metric it is averaged over the logging window, so a restart of n codes in a window of
``log_every_steps`` shows as n / log_every_steps).
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
from jaxtts.codec import facodec as facodec_lib
from jaxtts.codec import losses as codec_losses
from jaxtts.codec.gmm_vae import frame_mask_from_lengths
from jaxtts.data import features as features_lib
from jaxtts.data.source import read_manifest
from jaxtts.eval import codec_metrics
from jaxtts.nn.quantize import code_usage, reset_dead_codes
from jaxtts.plots import display_mel
from jaxtts.tasks import adversarial
from jaxtts.tasks import flops as flops_lib
from jaxtts.tasks.corpus_data import CorpusData
from jaxtts.train import state as state_lib

log = logging.getLogger(__name__)

BRANCHES = ("prosody", "content", "detail")


# ------------------------------------------------------------------ loss terms
def normalized_log_f0(f0: jax.Array, voiced: jax.Array, std_floor: float
                      ) -> tuple[jax.Array, jax.Array]:
  """``f0 [B, F]`` Hz, ``voiced [B, F]`` -> ``(z [B, F], mask [B, F])``: log F0 z-scored over
  each row's voiced frames (spread floored at ``std_floor``); ``mask`` marks voiced frames of
  rows with at least two of them."""
  v = (voiced & (f0 > 0)).astype(jnp.float32)
  n = jnp.sum(v, axis=1, keepdims=True)
  logf = jnp.log(jnp.maximum(f0, 1.0))
  mean = jnp.sum(logf * v, axis=1, keepdims=True) / jnp.maximum(n, 1.0)
  var = jnp.sum(jnp.square(logf - mean) * v, axis=1, keepdims=True) / jnp.maximum(n, 1.0)
  z = (logf - mean) / jnp.maximum(jnp.sqrt(var), std_floor)
  return z * v, v * (n >= 2)


def f0_loss(pred: jax.Array, z: jax.Array, z_mask: jax.Array, voiced: jax.Array,
            frame_mask: jax.Array) -> jax.Array:
  """``pred [B, F, 2]`` (z-scored log F0, voicing logit): L1 on the voiced frames + the
  voicing BCE on the valid frames (module docstring)."""
  pred = pred.astype(jnp.float32)
  l1 = jnp.sum(jnp.abs(pred[..., 0] - z) * z_mask) / jnp.maximum(jnp.sum(z_mask), 1.0)
  bce = optax.sigmoid_binary_cross_entropy(pred[..., 1], voiced.astype(jnp.float32))
  return l1 + jnp.sum(bce * frame_mask) / jnp.maximum(jnp.sum(frame_mask), 1.0)


def masked_cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array
                         ) -> tuple[jax.Array, jax.Array]:
  """``logits [..., K]``, int ``labels [...]``, ``mask [...]`` -> (mean CE, accuracy) over the
  masked entries."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  n = jnp.maximum(jnp.sum(mask), 1.0)
  acc = jnp.sum((jnp.argmax(logits, -1) == labels) * mask) / n
  return jnp.sum(ce * mask) / n, acc


class FACodecTask(CorpusData):

  def __init__(self, cfg: ml_collections.ConfigDict):
    if cfg.data.mode != "crop":
      raise ValueError(f"config.data.mode: the facodec task trains on crops; got "
                       f"{cfg.data.mode!r}")
    self.model = facodec_lib.from_config(cfg)
    hop = self.model.hop_length
    if cfg.data.segment_samples % hop:
      raise ValueError(f"config.data.segment_samples={cfg.data.segment_samples} is not a "
                       f"multiple of the FACodec hop {hop} "
                       f"(model.encoder_strides={tuple(cfg.model.encoder_strides)})")
    lc = cfg.loss
    self.use_phone = bool(lc.phone_weight or lc.grl_phone_weight)
    self.use_f0 = bool(lc.f0_weight or lc.grl_f0_weight
                       or cfg.model.get("excitation", False))
    if cfg.data.dir:
      self._check_manifest(cfg)
    extra = (("phone_labels",) if self.use_phone else ()) + (("f0", "voiced")
                                                            if self.use_f0 else ())
    cfg = ml_collections.ConfigDict(cfg.to_dict())  # the task's own view: derived fields set
    cfg.data.extra_features = tuple(dict.fromkeys(tuple(cfg.data.extra_features) + extra))
    self.cfg = cfg
    self.sample_rate = int(cfg.data.sample_rate)
    self.discriminators, self.groups, self.adversarial = adversarial.setup(
        cfg.discriminator, self.reconstruction_objective)

  def _check_manifest(self, cfg: ml_collections.ConfigDict) -> None:
    """Label geometry and sizes against the corpus: the label hop is the codec hop; phone and
    speaker ids fit the heads; a corpus without durations turns the phone terms off."""
    manifest = read_manifest(cfg.data.dir)
    path = f"{cfg.data.dir}/manifest.json"
    hop = self.model.hop_length
    stored = manifest.get("features")
    if self.use_phone and stored is not None and "durations" not in stored:
      log.warning("%s lists no phone durations: training with the phone and GRL-phone terms "
                  "off", path)
      self.use_phone = False
    if (self.use_phone or self.use_f0) and int(manifest["hop_length"]) != hop:
      raise ValueError(f"{path}: hop_length {manifest['hop_length']} but the FACodec hop is "
                       f"{hop} (model.encoder_strides): frame labels would not align")
    if self.use_f0:
      features_lib.require(manifest, ("f0", "voiced"), path, flag="config.loss.f0_weight")
    symbols = len(manifest["phoneme_table"]["symbols"])
    if self.use_phone and symbols > int(cfg.model.num_phones):
      raise ValueError(f"config.model.num_phones={cfg.model.num_phones} is smaller than the "
                       f"{symbols}-symbol phoneme table of {path}")
    top = max(int(s["id"]) for s in manifest["speakers"]) + 1
    if top > int(cfg.model.num_speakers):
      raise ValueError(f"config.model.num_speakers={cfg.model.num_speakers}: {path} has "
                       f"speaker ids up to {top - 1}")

  # ------------------------------------------------------------------ shapes and init
  def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    s = int(self.cfg.data.segment_samples)
    f = s // self.model.hop_length
    batch = {"audio": np.zeros((batch_size, s), np.float32),
             "audio_len": np.full((batch_size,), s, np.int32),
             "speaker_id": np.zeros((batch_size,), np.int32)}
    if self.use_phone:
      batch["phone_labels"] = np.zeros((batch_size, f), np.int32)
    if self.use_f0:
      batch["f0"] = np.zeros((batch_size, f), np.float32)
      batch["voiced"] = np.zeros((batch_size, f), bool)
    return batch

  def init_params(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> dict[str, Any]:
    g_rng, d_rng = jax.random.split(rng)
    params = {"generator": self.model.init({"params": g_rng}, batch["audio"])["params"]}
    if self.discriminators is not None:
      params["discriminator"] = self.discriminators.init(d_rng, batch["audio"])["params"]
    return params

  def flops_per_step(self, batch_shapes: Mapping[str, tuple[int, ...]]) -> float:
    b, s = flops_lib.shape_of(batch_shapes, "audio")
    return flops_lib.facodec_train_step(self.cfg, b, s)

  # ------------------------------------------------------------------ losses
  def loss_terms(self, out: Mapping[str, Any], batch: Mapping[str, jax.Array],
                 frame_mask: jax.Array) -> dict[str, jax.Array]:
    """The unweighted supervision and GRL terms (module docstring) and their accuracies."""
    heads, terms = out["heads"], {}
    lc = self.cfg.loss
    rows = (batch["audio_len"] > 0).astype(jnp.float32)
    spk = batch["speaker_id"]
    terms["speaker_loss"], terms["speaker_accuracy"] = masked_cross_entropy(
        heads["timbre_speaker"], spk, rows)
    terms["grl_speaker_loss"], terms["grl_speaker_accuracy"] = masked_cross_entropy(
        heads["grl_speaker"], spk, rows)
    if self.use_phone:
      labels = batch["phone_labels"]
      terms["phone_loss"], terms["phone_accuracy"] = masked_cross_entropy(
          heads["content_phone"], labels, frame_mask)
      for name in ("grl_prosody_phone", "grl_detail_phone"):
        if name in heads:
          terms[f"{name}_loss"], terms[f"{name}_accuracy"] = masked_cross_entropy(
              heads[name], labels, frame_mask)
    if self.use_f0:
      z, z_mask = normalized_log_f0(batch["f0"], batch["voiced"], float(lc.f0_std_floor))
      for name in ("prosody_f0", "grl_content_f0", "grl_detail_f0"):
        if name in heads:
          terms[f"{name}_loss"] = f0_loss(heads[name], z, z_mask, batch["voiced"], frame_mask)
    if "decoder_f0" in heads:   # model.excitation: the decoder's F0 head, in log Hz
      terms["decoder_f0_loss"], terms["decoder_voicing_loss"] = f0_head_losses(
          heads["decoder_f0"], batch["f0"], batch["voiced"], frame_mask > 0)
    return terms

  def losses(self, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array,
             train: bool) -> tuple[jax.Array, tuple[dict, jax.Array]]:
    """The objective (module docstring). Returns (loss, (metrics, reconstruction [B, S]
    masked))."""
    audio, lengths = batch["audio"], batch["audio_len"]
    hop = self.model.hop_length
    frame_mask = frame_mask_from_lengths(lengths, self.model.num_frames(audio.shape[-1]), hop)
    source = {}
    if self.model.excitation:   # teacher forcing: the decoder hears the recording's F0
      source = dict(f0=jnp.where(frame_mask > 0, batch["f0"], 0.0),
                    voiced=(frame_mask > 0) & batch["voiced"].astype(bool))
    out = self.model.apply({"params": params}, audio, train, frame_mask=frame_mask,
                           rngs={"dropout": rng}, **source)
    sample_mask = jnp.arange(audio.shape[-1])[None, :] < lengths[:, None]
    lc = self.cfg.loss
    mel = spectral.multiscale_mel_loss(
        out["reconstruction"], audio, sample_rate=self.sample_rate,
        window_lengths=tuple(lc.mel_window_lengths), n_mels=tuple(lc.mel_bins),
        mask=sample_mask)
    terms = self.loss_terms(out, batch, frame_mask)
    get = lambda k: terms.get(k, 0.0)  # noqa: E731
    loss = (lc.mel_weight * mel + lc.codebook_weight * out["codebook_loss"]
            + lc.commitment_weight * out["commitment_loss"]
            + lc.f0_weight * get("prosody_f0_loss") + lc.phone_weight * get("phone_loss")
            + lc.speaker_weight * get("speaker_loss")
            + lc.grl_f0_weight * (get("grl_content_f0_loss") + get("grl_detail_f0_loss"))
            + lc.grl_phone_weight * (get("grl_prosody_phone_loss")
                                     + get("grl_detail_phone_loss"))
            + lc.grl_speaker_weight * get("grl_speaker_loss")
            + lc.get("decoder_f0_weight", 0.0) * get("decoder_f0_loss")
            + lc.get("decoder_voicing_weight", 0.0) * get("decoder_voicing_loss"))
    metrics = {"mel_loss": mel, "codebook_loss": out["codebook_loss"],
               "commitment_loss": out["commitment_loss"], **terms}
    if lc.spectrum_amplitude_weight:
      if "head_phase" not in out:
        raise ValueError("config.loss.spectrum_amplitude_weight needs "
                         "config.model.decoder='vocos' (a decoder that predicts a spectrum)")
      spec = codec_losses.head_spectrum_losses(out["head_log_magnitude"], out["head_phase"],
                                               audio * sample_mask, frame_mask, hop)
      loss = loss + lc.spectrum_amplitude_weight * spec["spectrum_amplitude_loss"]
      metrics["spectrum_amplitude_loss"] = spec["spectrum_amplitude_loss"]
    metrics.update(self.code_statistics(out["codes"], frame_mask))
    metrics["loss"] = loss
    return loss, (metrics, out["reconstruction"] * sample_mask)

  def code_statistics(self, codes: jax.Array, frame_mask: jax.Array) -> dict:
    """Per-codebook perplexity, dead-code share and codes used over the valid frames:
    ``codes/<branch>_<i>/<stat>`` (``codes [B, F, Q]`` in the paper's order)."""
    m = self.model
    names = ([f"prosody_{i}" for i in range(m.num_prosody_quantizers)]
             + [f"content_{i}" for i in range(m.num_content_quantizers)]
             + [f"detail_{i}" for i in range(m.num_detail_quantizers)])
    stats = {}
    for q, name in enumerate(names):
      for k, v in code_usage(codes[..., q], m.codebook_size, frame_mask).items():
        stats[f"codes/{name}/{k}"] = v
    return stats

  def reconstruction_objective(self, g_params: Any, batch: Mapping[str, jax.Array],
                               rng: jax.Array):
    """`losses` in training mode, in the shape `adversarial.AdversarialStep` takes."""
    loss, (metrics, fake) = self.losses(g_params, batch, rng, True)
    real = batch["audio"] * (jnp.arange(batch["audio"].shape[-1])[None, :]
                             < batch["audio_len"][:, None])
    return loss, (metrics, fake, real)

  def train_step(self, state: state_lib.TrainState, batch: Mapping[str, jax.Array],
                 rng: jax.Array, optimizers) -> tuple[state_lib.TrainState, dict]:
    """One generator update (detail dropout from ``rng``) and, with discriminators, one
    discriminator update (`jaxtts.tasks.adversarial`); then, when due, the dead-code reset
    (module docstring)."""
    if self.adversarial is not None:
      new_state, metrics = self.adversarial(state, batch, rng, optimizers)
    else:
      params, opt_state = dict(state.params), dict(state.opt_state)
      grads, (metrics, _) = jax.grad(self.losses, has_aux=True)(params["generator"], batch,
                                                                rng, True)
      params["generator"], opt_state["generator"] = state_lib.apply_group(
          params["generator"], opt_state["generator"], grads, optimizers["generator"])
      metrics["grad_norm"] = optax.tree.norm(grads)
      new_state = state.replace(params=params, opt_state=opt_state)
    reset = self.cfg.get("dead_code_reset")  # absent from configs written before it existed
    every = int(reset.every_steps) if reset else 0
    if every <= 0:
      return new_state, metrics
    generator = new_state.params["generator"]
    no_reset = lambda g: (g, {k: jnp.zeros((), jnp.float32)  # noqa: E731
                              for k in self._reset_names()})
    generator, counts = jax.lax.cond(
        (state.step + 1) % every == 0,
        lambda g: self.reset_codebooks(g, batch, jax.random.fold_in(rng, 1)), no_reset,
        generator)
    metrics.update(counts)
    return new_state.replace(params={**new_state.params, "generator": generator}), metrics

  def _reset_names(self) -> list[str]:
    m = self.model
    return [f"codes/{branch}_{i}/reset" for branch, n in
            (("prosody", m.num_prosody_quantizers), ("content", m.num_content_quantizers),
             ("detail", m.num_detail_quantizers)) for i in range(n)]

  def reset_codebooks(self, g_params: Any, batch: Mapping[str, jax.Array], rng: jax.Array
                      ) -> tuple[Any, dict[str, jax.Array]]:
    """Generator parameters with every codebook's dead codes restarted from this batch's
    encodings (`jaxtts.nn.quantize.reset_dead_codes`, ``dead_code_reset.min_cosine``), and
    the count per codebook (``codes/<branch>_<i>/reset``)."""
    audio = batch["audio"]
    frame_mask = frame_mask_from_lengths(batch["audio_len"],
                                         self.model.num_frames(audio.shape[-1]),
                                         self.model.hop_length)
    encodings = self.model.apply({"params": g_params}, audio, frame_mask,
                                 method=self.model.codebook_encodings)
    params = dict(g_params)
    counts = {}
    for scope, z in encodings.items():
      stack = dict(params[scope])
      branch = scope[:-len("_vq")]
      for i in range(z.shape[2]):
        rng, sub = jax.random.split(rng)
        vq = dict(stack[f"vq_{i}"])
        vq["codebook"], counts[f"codes/{branch}_{i}/reset"] = reset_dead_codes(
            vq["codebook"], z[:, :, i].reshape(-1, z.shape[-1]), frame_mask.reshape(-1), sub,
            float(self.cfg.dead_code_reset.min_cosine))
        stack[f"vq_{i}"] = vq
      params[scope] = stack
    return params, counts

  def eval_step(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array]) -> dict:
    """The objective without detail dropout (every utterance keeps its detail codes)."""
    return self.losses(params["generator"], batch, jax.random.key(0), False)[1][0]

  # ------------------------------------------------------------------ samples
  def sample_step(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array]) -> dict:
    """Reconstructions and voice conversions: row ``i``'s codes decoded with the timbre of row
    ``i + 1`` (mod B), a crop of another speaker when the batch mixes speakers."""
    p = {"params": params["generator"]}
    model = self.model
    enc = model.apply(p, batch["audio"], method=model.encode)
    recon = model.apply(p, enc["codes"], enc["timbre"], method=model.decode)
    converted = model.apply(p, enc["codes"], jnp.roll(enc["timbre"], -1, axis=0),
                            method=model.decode)
    s = batch["audio"].shape[-1]
    return {"reconstruction": recon[:, :s], "conversion": converted[:, :s],
            "codes": enc["codes"]}

  def write_samples(self, writer, step: int, batch: Mapping[str, np.ndarray],
                    outputs: Mapping[str, np.ndarray]) -> None:
    """Audio and spectrograms of `train.num_samples` eval crops (target, reconstruction,
    conversion to the next row's timbre), their codes, and the reconstruction metrics of
    `eval.sample_metrics` (``valid/<name>``)."""
    if not writer.is_main:
      return
    count = min(int(self.cfg.train.num_samples), batch["audio"].shape[0])
    scores: dict[str, list[float]] = {}
    for i in range(count):
      n = int(batch["audio_len"][i])
      if not n:
        continue
      target = batch["audio"][i, :n]
      for name in self.cfg.eval.sample_metrics:
        try:
          value = codec_metrics.compute_all(outputs["reconstruction"][i, :n], target,
                                            self.sample_rate, metrics=(name,))[name]
        except (ValueError, RuntimeError) as e:
          log.warning("step %d sample %d: %s not computed: %s", step, i, name, e)
          continue
        scores.setdefault(name, []).append(float(value))
      for kind in ("reconstruction", "conversion"):
        wav = outputs[kind][i, :n]
        writer.audio(step, f"sample_{i}/{kind}", wav, self.sample_rate)
        writer.image(step, f"sample_{i}/mel_{kind}", display_mel(wav, self.sample_rate),
                     xlabel="frame", ylabel="mel bin")
      writer.audio(step, f"sample_{i}/target", target, self.sample_rate)
      writer.image(step, f"sample_{i}/mel_target", display_mel(target, self.sample_rate),
                   xlabel="frame", ylabel="mel bin")
      writer.image(step, f"sample_{i}/codes", np.asarray(outputs["codes"][i]).T,
                   xlabel="frame", ylabel="codebook")
    if scores:
      writer.scalars(step, {f"valid/{k}": float(np.mean(v)) for k, v in scores.items()})
