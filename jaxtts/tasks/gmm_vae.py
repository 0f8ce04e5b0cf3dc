"""GMM-VAE codec generator task (Lin & He, ICLR 2025, §3.1 eq. 4; appendix A.5).

Loss (per batch of crops x [B, S] with valid lengths):

    L = mel_weight · MelL1(x̂, x)  +  λ · NLL_GMM(h) / D

with h = E(x) (deterministic posterior), x̂ = D(h), MelL1 DAC's multi-scale log-mel L1 over the
valid samples and NLL_GMM the per-dimension negative log-likelihood of the valid latent frames
under the learned mixture prior (`jaxtts.codec.gmm_vae.gmm_prior_nll`). With
`discriminator.enabled`, DAC's multi-period and multi-band STFT discriminators add the
adversarial and feature-matching terms (after `discriminator.start_step`) and a second
parameter group, "discriminator", with its own optimizer.
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
from jaxtts.codec import losses as codec_losses
from jaxtts.codec.discriminators import build_discriminators
from jaxtts.codec.gmm_vae import GMMVAE, frame_mask_from_lengths
from jaxtts.nn import mixture as mixture_lib
from jaxtts.train import state as state_lib

log = logging.getLogger(__name__)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_model(cfg: ml_collections.ConfigDict) -> GMMVAE:
  m = cfg.model
  if cfg.train.compute_dtype not in DTYPES:
    raise ValueError(f"config.train.compute_dtype: {cfg.train.compute_dtype!r} is not one of "
                     f"{sorted(DTYPES)}")
  return GMMVAE(encoder_dim=m.encoder_dim, encoder_strides=tuple(m.encoder_strides),
                decoder_dim=m.decoder_dim, latent_dim=m.latent_dim,
                num_mixtures=m.num_mixtures, learn_weights=m.learn_weights,
                learn_scales=m.learn_scales, remat=m.remat,
                dtype=DTYPES[cfg.train.compute_dtype])


class GMMVAETask:

  def __init__(self, cfg: ml_collections.ConfigDict):
    self.cfg = cfg
    self.model = build_model(cfg)
    self.discriminators = (build_discriminators(cfg.discriminator)
                           if cfg.discriminator.enabled else None)
    self.groups = ("generator", "discriminator") if self.discriminators else ("generator",)
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
    return {"audio": np.zeros((batch_size, s), np.float32),
            "audio_len": np.full((batch_size,), s, np.int32),
            "speaker_id": np.zeros((batch_size,), np.int32)}

  def init_params(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> dict[str, Any]:
    g_rng, d_rng = jax.random.split(rng)
    params = {"generator": self.model.init(g_rng, batch["audio"])["params"]}
    if self.discriminators is not None:
      params["discriminator"] = self.discriminators.init(d_rng, batch["audio"])["params"]
    return params

  # ------------------------------------------------------------------ losses
  def losses(self, params: Any, batch: Mapping[str, jax.Array]
             ) -> tuple[jax.Array, tuple[dict, jax.Array]]:
    """Reconstruction objective. Returns (loss, (metrics, reconstruction [B, S] masked))."""
    audio, lengths = batch["audio"], batch["audio_len"]
    frames = self.model.num_frames(audio.shape[-1])
    frame_mask = frame_mask_from_lengths(lengths, frames, self.model.hop_length)
    out = self.model.apply({"params": params}, audio, frame_mask=frame_mask)
    sample_mask = (jnp.arange(audio.shape[-1])[None, :] < lengths[:, None])
    lc = self.cfg.loss
    mel = spectral.multiscale_mel_loss(
        out["reconstruction"], audio, sample_rate=self.sample_rate,
        window_lengths=tuple(lc.mel_window_lengths), n_mels=tuple(lc.mel_bins),
        mask=sample_mask)
    loss = lc.mel_weight * mel + lc.prior_weight * out["prior_nll"]
    metrics = {"loss": loss, "mel_loss": mel, "prior_nll": out["prior_nll"],
               **self.latent_statistics(params, out["latents"], frame_mask)}
    return loss, (metrics, out["reconstruction"] * sample_mask)

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
    resp = mixture_lib.responsibilities(mix, h)                             # [B, F, L]
    usage = jnp.sum(resp * w, axis=(0, 1)) / n
    stats = {"latent/rms": jnp.sqrt(jnp.sum(jnp.square(h) * w) / (n * h.shape[-1])),
             "latent/mean_abs": jnp.mean(jnp.abs(mean)), "latent/var_mean": jnp.mean(var),
             "latent/var_min": jnp.min(var), "latent/var_max": jnp.max(var)}
    stats.update({f"latent/responsibility_{l}": usage[l] for l in range(usage.shape[0])})
    return stats

  def _generator_objective(self, g_params, d_params, batch, adversarial_on):
    """Mel + prior, plus (after `discriminator.start_step`) the adversarial and
    feature-matching terms of DAC: λ_adv · Σ_k mean((1 - D_k(x̂))²) + λ_fm · L1 features."""
    loss, (metrics, fake) = self.losses(g_params, batch)
    dc = self.cfg.discriminator
    real = batch["audio"] * (jnp.arange(batch["audio"].shape[-1])[None, :]
                             < batch["audio_len"][:, None])
    d_fake = self.discriminators.apply({"params": d_params}, fake)
    d_real = jax.lax.stop_gradient(self.discriminators.apply({"params": d_params}, real))
    adv = codec_losses.generator_adversarial_loss(d_fake, dc.loss)
    fm = codec_losses.feature_matching_loss(d_real, d_fake)
    loss = loss + adversarial_on * (dc.adversarial_weight * adv
                                    + dc.feature_matching_weight * fm)
    metrics = dict(metrics, loss=loss, adversarial_loss=adv, feature_matching_loss=fm)
    return loss, (metrics, real, fake)

  def train_step(self, state: state_lib.TrainState, batch: Mapping[str, jax.Array],
                 rng: jax.Array, optimizers) -> tuple[state_lib.TrainState, dict]:
    """One generator update and (with discriminators) one discriminator update.

    Both updates see the discriminator parameters from the start of the step (simultaneous
    gradient steps); the discriminator is trained on the generator output of this step.
    """
    del rng  # the objectives are deterministic given the batch
    params, opt_state = dict(state.params), dict(state.opt_state)
    if self.discriminators is None:
      grads, (metrics, _) = jax.grad(self.losses, has_aux=True)(params["generator"], batch)
    else:
      on = (state.step >= self.cfg.discriminator.start_step).astype(jnp.float32)
      grads, (metrics, real, fake) = jax.grad(self._generator_objective, has_aux=True)(
          params["generator"], params["discriminator"], batch, on)
      fake = jax.lax.stop_gradient(fake)

      def disc_objective(d_params):
        apply = lambda x: self.discriminators.apply({"params": d_params}, x)
        return codec_losses.discriminator_loss(apply(real), apply(fake),
                                               self.cfg.discriminator.loss)

      d_loss, d_grads = jax.value_and_grad(disc_objective)(params["discriminator"])
      params["discriminator"], opt_state["discriminator"] = state_lib.apply_group(
          params["discriminator"], opt_state["discriminator"], d_grads,
          optimizers["discriminator"])
      metrics["discriminator_loss"] = d_loss
      metrics["discriminator_grad_norm"] = optax.tree.norm(d_grads)
    params["generator"], opt_state["generator"] = state_lib.apply_group(
        params["generator"], opt_state["generator"], grads, optimizers["generator"])
    metrics["grad_norm"] = optax.tree.norm(grads)
    return state.replace(params=params, opt_state=opt_state), metrics

  def eval_step(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array]) -> dict:
    return self.losses(params["generator"], batch)[1][0]

  # ------------------------------------------------------------------ samples
  def reconstruct(self, params: Mapping[str, Any], audio: jax.Array) -> jax.Array:
    """``audio [B, T] -> [B, T]`` through encoder and decoder."""
    return self.model.apply({"params": params["generator"]}, audio)["reconstruction"]

  def sample_step(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array]) -> dict:
    out = self.model.apply({"params": params["generator"]}, batch["audio"])
    return {"reconstruction": out["reconstruction"], "latents": out["latents"]}

  def log_mel(self, audio: np.ndarray) -> np.ndarray:
    """A display spectrogram ``[frames, 80]`` of one waveform."""
    return np.asarray(spectral.log_mel_spectrogram(
        jnp.asarray(audio)[None], sample_rate=self.sample_rate, n_fft=1024, hop_length=200,
        win_length=800, n_mels=80))[0]

  def write_samples(self, writer, step: int, batch: Mapping[str, np.ndarray],
                    outputs: Mapping[str, np.ndarray]) -> None:
    """Audio, spectrograms and latents of `train.num_samples` eval-split crops, and the
    reconstruction metrics of `eval.sample_metrics` averaged over them (``valid/<name>``).
    A metric that cannot be computed on a crop (e.g. PESQ on silence) is logged and left out
    of that step's average."""
    from jaxtts.eval import codec_metrics  # pylint: disable=import-outside-toplevel
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
