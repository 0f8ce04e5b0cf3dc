"""GMM-VAE codec generator task (Lin & He, ICLR 2025, §3.1 eq. 4; appendix A.5).

Loss (per batch of crops x [B, S] with valid lengths):

    L = mel_weight · MelL1(x̂, x)  +  λ · NLL_GMM(h) / D
        [+ spectrum_amplitude_weight · L_A + spectrum_phase_weight · (L_IP + L_GD + L_IAF)]

with h = E(x) (deterministic posterior), x̂ = D(h), MelL1 DAC's multi-scale log-mel L1 over the
valid samples and NLL_GMM the per-dimension negative log-likelihood of the valid latent frames
under the learned mixture prior (`jaxtts.codec.gmm_vae.gmm_prior_nll`). With
`discriminator.enabled`, DAC's multi-period and multi-band STFT discriminators add the
adversarial and feature-matching terms (after `discriminator.start_step`) and a second
parameter group, "discriminator", with its own optimizer. The bracketed terms (APNet's, on
the Vocos head's spectrum; `jaxtts.audio.phase`) are ours, off in the paper presets.
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
from jaxtts.codec import losses as codec_losses
from jaxtts.codec.gmm_vae import GMMVAE, frame_mask_from_lengths, from_config
from jaxtts.data import features as features_lib
from jaxtts.data.source import read_manifest
from jaxtts.eval import codec_metrics
from jaxtts.nn import mixture as mixture_lib
from jaxtts.plots import display_mel
from jaxtts.tasks import adversarial
from jaxtts.tasks import flops as flops_lib
from jaxtts.tasks.corpus_data import CorpusData
from jaxtts.train import state as state_lib

log = logging.getLogger(__name__)


def build_model(cfg: ml_collections.ConfigDict) -> GMMVAE:
  """The model of the config (one definition: `jaxtts.codec.gmm_vae.from_config`)."""
  return from_config(cfg)


class GMMVAETask(CorpusData):

  def __init__(self, cfg: ml_collections.ConfigDict):
    if cfg.model.get("excitation", False):   # the task's own view: F0 frames in every batch
      if cfg.data.dir:
        features_lib.require(read_manifest(cfg.data.dir), ("f0", "voiced"),
                             f"{cfg.data.dir}/manifest.json", flag="config.model.excitation")
      cfg = ml_collections.ConfigDict(cfg.to_dict())
      cfg.data.extra_features = tuple(dict.fromkeys(tuple(cfg.data.extra_features)
                                                    + ("f0", "voiced")))
    self.cfg = cfg
    self.model = build_model(cfg)
    self.discriminators, self.groups, self.adversarial = adversarial.setup(
        cfg.discriminator, self.reconstruction_objective)
    self.sample_rate = int(cfg.data.sample_rate)
    if cfg.data.mode != "crop":
      raise ValueError(f"config.data.mode: the gmm_vae task trains on crops; got "
                       f"{cfg.data.mode!r}")
    if cfg.data.segment_samples % self.model.hop_length:
      raise ValueError(f"config.data.segment_samples={cfg.data.segment_samples} is not a "
                       f"multiple of the codec hop {self.model.hop_length} "
                       f"(model.encoder_strides={tuple(cfg.model.encoder_strides)})")

  # ------------------------------------------------------------------ shapes and init
  def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    s = int(self.cfg.data.segment_samples)
    batch = {"audio": np.zeros((batch_size, s), np.float32),
             "audio_len": np.full((batch_size,), s, np.int32),
             "speaker_id": np.zeros((batch_size,), np.int32)}
    if self.model.excitation:
      f = s // self.model.hop_length
      batch["f0"] = np.zeros((batch_size, f), np.float32)
      batch["voiced"] = np.zeros((batch_size, f), bool)
    return batch

  def init_params(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> dict[str, Any]:
    g_rng, d_rng = jax.random.split(rng)
    params = {"generator": self.model.init(g_rng, batch["audio"],
                                           **self.pitch_inputs(batch))["params"]}
    if self.discriminators is not None:
      params["discriminator"] = self.discriminators.init(d_rng, batch["audio"])["params"]
    return params

  def pitch_inputs(self, batch: Mapping[str, jax.Array]) -> dict:
    """``{f0, voiced}`` of the batch for a model whose latent carries them
    (``model.f0_source="latent"``: every call encodes with them), else ``{}``."""
    if not self.model.pitch_in_latent:
      return {}
    return {"f0": batch["f0"], "voiced": batch["voiced"]}

  def flops_per_step(self, batch_shapes: Mapping[str, tuple[int, ...]]) -> float:
    """Model FLOPs of one train step on a global batch (`jaxtts.tasks.flops`)."""
    b, s = flops_lib.shape_of(batch_shapes, "audio")
    return flops_lib.gmm_vae_train_step(self.cfg, b, s)

  # ------------------------------------------------------------------ losses
  def losses(self, params: Any, batch: Mapping[str, jax.Array]
             ) -> tuple[jax.Array, tuple[dict, jax.Array]]:
    """Reconstruction objective. Returns (loss, (metrics, reconstruction [B, S] masked))."""
    audio, lengths = batch["audio"], batch["audio_len"]
    frames = self.model.num_frames(audio.shape[-1])
    frame_mask = frame_mask_from_lengths(lengths, frames, self.model.hop_length)
    source = {}
    if self.model.excitation:
      source = dict(f0=jnp.where(frame_mask > 0, batch["f0"][:, :frames], 0.0),
                    voiced=(frame_mask > 0) & batch["voiced"][:, :frames].astype(bool))
    out = self.model.apply({"params": params}, audio, frame_mask=frame_mask, **source)
    sample_mask = (jnp.arange(audio.shape[-1])[None, :] < lengths[:, None])
    lc = self.cfg.loss
    mel = spectral.multiscale_mel_loss(
        out["reconstruction"], audio, sample_rate=self.sample_rate,
        window_lengths=tuple(lc.mel_window_lengths), n_mels=tuple(lc.mel_bins),
        mask=sample_mask)
    loss = lc.mel_weight * mel + lc.prior_weight * out["prior_nll"]
    metrics = {"loss": loss, "mel_loss": mel, "prior_nll": out["prior_nll"],
               **self.latent_statistics(params, out["latents"], frame_mask)}
    if self.model.excitation and not self.model.pitch_in_latent:
      f0_loss, voicing_loss = f0_head_losses(out["f0_raw"], source["f0"], source["voiced"],
                                             frame_mask)
      loss = loss + lc.f0_weight * f0_loss + lc.voicing_weight * voicing_loss
      metrics.update(loss=loss, f0_loss=f0_loss, voicing_loss=voicing_loss)
    if lc.spectrum_amplitude_weight or lc.spectrum_phase_weight:
      terms = self.spectrum_losses(out, audio * sample_mask, frame_mask)
      loss = (loss + lc.spectrum_amplitude_weight * terms["spectrum_amplitude_loss"]
              + lc.spectrum_phase_weight * terms["spectrum_phase_loss"])
      metrics.update(terms, loss=loss)
    return loss, (metrics, out["reconstruction"] * sample_mask)

  def spectrum_losses(self, out: Mapping[str, jax.Array], audio: jax.Array,
                      frame_mask: jax.Array) -> dict:
    """APNet's losses on the Vocos head's spectrum (`codec_losses.head_spectrum_losses`)."""
    if "head_phase" not in out:
      raise ValueError("config.loss.spectrum_amplitude_weight / spectrum_phase_weight need "
                       "config.model.decoder='vocos' (a decoder that predicts a spectrum)")
    return codec_losses.head_spectrum_losses(out["head_log_magnitude"], out["head_phase"],
                                             audio, frame_mask, self.model.hop_length)

  def latent_statistics(self, params: Any, h: jax.Array, frame_mask: jax.Array) -> dict:
    """Scalars about the latents ``h [B, F, D]`` over real frames: RMS, per-dimension mean
    and variance summarised (mean |mean_d|, mean var_d, min/max var_d), and the prior's
    mixture responsibilities (mean posterior probability of each component)."""
    w = frame_mask[..., None]
    n = jnp.maximum(jnp.sum(frame_mask), 1.0)
    mean = jnp.sum(h * w, axis=(0, 1)) / n                                  # [D]
    var = jnp.sum(jnp.square(h - mean) * w, axis=(0, 1)) / n               # [D]
    prior = params["prior"]
    means = prior["means"]
    logits = prior.get("logits", jnp.zeros(means.shape[:1]))
    scales = jnp.exp(prior["log_scales"]) if "log_scales" in prior else jnp.ones_like(means)
    mix = mixture_lib.MixtureParams(logits=logits, means=means, scales=scales)
    resp = mixture_lib.responsibilities(mix, h[..., :means.shape[-1]])      # [B, F, L]
    usage = jnp.sum(resp * w, axis=(0, 1)) / n
    stats = {"latent/rms": jnp.sqrt(jnp.sum(jnp.square(h) * w) / (n * h.shape[-1])),
             "latent/mean_abs": jnp.mean(jnp.abs(mean)), "latent/var_mean": jnp.mean(var),
             "latent/var_min": jnp.min(var), "latent/var_max": jnp.max(var)}
    stats.update({f"latent/responsibility_{l}": usage[l] for l in range(usage.shape[0])})
    return stats

  def reconstruction_objective(self, g_params: Any, batch: Mapping[str, jax.Array],
                               rng: jax.Array) -> tuple[jax.Array, tuple[dict, jax.Array,
                                                                         jax.Array]]:
    """`losses` in the shape `adversarial.AdversarialStep` takes: ``(loss, (metrics,
    reconstruction [B, S], real audio [B, S]))``, padding zeroed in both."""
    del rng  # the objective is deterministic given the batch
    loss, (metrics, fake) = self.losses(g_params, batch)
    real = batch["audio"] * (jnp.arange(batch["audio"].shape[-1])[None, :]
                             < batch["audio_len"][:, None])
    return loss, (metrics, fake, real)

  def train_step(self, state: state_lib.TrainState, batch: Mapping[str, jax.Array],
                 rng: jax.Array, optimizers) -> tuple[state_lib.TrainState, dict]:
    """One generator update and (with discriminators) one discriminator update
    (`jaxtts.tasks.adversarial`: simultaneous steps from the start-of-step parameters; the
    adversarial and feature-matching terms reach the generator from `discriminator.start_step`).
    """
    if self.adversarial is not None:
      return self.adversarial(state, batch, rng, optimizers)
    params, opt_state = dict(state.params), dict(state.opt_state)
    grads, (metrics, _) = jax.grad(self.losses, has_aux=True)(params["generator"], batch)
    params["generator"], opt_state["generator"] = state_lib.apply_group(
        params["generator"], opt_state["generator"], grads, optimizers["generator"])
    metrics["grad_norm"] = optax.tree.norm(grads)
    return state.replace(params=params, opt_state=opt_state), metrics

  def eval_step(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array]) -> dict:
    return self.losses(params["generator"], batch)[1][0]

  # ------------------------------------------------------------------ samples
  def reconstruct(self, params: Mapping[str, Any], audio: jax.Array, **pitch) -> jax.Array:
    """``audio [B, T] -> [B, T]`` through encoder and decoder (``pitch``: `pitch_inputs`)."""
    return self.model.apply({"params": params["generator"]}, audio, **pitch)["reconstruction"]

  def sample_step(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array]) -> dict:
    out = self.model.apply({"params": params["generator"]}, batch["audio"],
                           **self.pitch_inputs(batch))
    return {"reconstruction": out["reconstruction"], "latents": out["latents"]}

  def log_mel(self, audio: np.ndarray) -> np.ndarray:
    """The display spectrogram ``[frames, 80]`` of one waveform (`jaxtts.plots`)."""
    return display_mel(audio, self.sample_rate)

  def write_samples(self, writer, step: int, batch: Mapping[str, np.ndarray],
                    outputs: Mapping[str, np.ndarray]) -> None:
    """Audio, spectrograms and latents of `train.num_samples` eval-split crops, and the
    reconstruction metrics of `eval.sample_metrics` averaged over them (``valid/<name>``).
    A metric that cannot be computed on a crop (e.g. PESQ on silence) is logged and left out
    of that step's average."""
    if not writer.is_main:
      return
    scores: dict[str, list[float]] = {}
    count = min(int(self.cfg.train.num_samples), batch["audio"].shape[0])
    for i in range(count):
      n = int(batch["audio_len"][i])
      for name in self.cfg.eval.sample_metrics:
        try:
          value = codec_metrics.compute_all(outputs["reconstruction"][i, :n],
                                            batch["audio"][i, :n], self.sample_rate,
                                            metrics=(name,))[name]
        except (ValueError, RuntimeError) as e:
          log.warning("step %d sample %d: %s not computed: %s", step, i, name, e)
          continue
        scores.setdefault(name, []).append(float(value))
    if scores:
      writer.scalars(step, {f"valid/{k}": float(np.mean(v)) for k, v in scores.items()})
    if count:
      lat = np.asarray(outputs["latents"][0])
      writer.image(step, "latents/sample_0", lat.T, xlabel="frame", ylabel="latent dim")
    for i in range(count):
      n = int(batch["audio_len"][i])
      target, recon = batch["audio"][i, :n], outputs["reconstruction"][i, :n]
      writer.audio(step, f"sample_{i}/target", target, self.sample_rate)
      writer.audio(step, f"sample_{i}/reconstruction", recon, self.sample_rate)
      writer.image(step, f"sample_{i}/mel_target", self.log_mel(target), xlabel="frame",
                   ylabel="mel bin")
      writer.image(step, f"sample_{i}/mel_reconstruction", self.log_mel(recon),
                   xlabel="frame", ylabel="mel bin")
