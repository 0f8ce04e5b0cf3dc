"""The GMM-VAE task's GAN step (two parameter groups, two optimizers; `jaxtts.tasks.adversarial`),
its loss composition against a by-hand formula, its latent statistics, and robustness to
silent and clipped audio."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scipy.special import logsumexp

from jaxtts.audio import spectral
from jaxtts.codec import losses as codec_losses
from jaxtts.codec.gmm_vae import frame_mask_from_lengths
from jaxtts.nn.vocos import same_frames_stft
from jaxtts.tasks.gmm_vae import GMMVAETask
from jaxtts.train import optim
from jaxtts.train import state as state_lib
from jaxtts.train.config import build_config

S = 1600
TINY = [f"--config.data.segment_samples={S}", "--config.model.decoder_dim=16",
        "--config.model.encoder_strides=(8,25)"]


def _batch():
  rng = np.random.default_rng(0)
  t = np.arange(S) / 16000.0
  audio = np.stack([0.3 * np.sin(2 * np.pi * (110 + 40 * i) * t) + 0.01 * rng.standard_normal(S)
                    for i in range(4)]).astype(np.float32)
  return {"audio": jnp.asarray(audio), "audio_len": jnp.array([S, S, 1200, 800], jnp.int32),
          "speaker_id": jnp.zeros((4,), jnp.int32)}


@pytest.fixture(scope="module")
def setup():
  cfg = build_config("configs/gmm_vae.py:tiny", TINY + ["--config.discriminator.start_step=1"])
  task = GMMVAETask(cfg)
  batch = _batch()
  params = nn.meta.unbox(jax.jit(task.init_params)(jax.random.key(0, impl="unsafe_rbg"), batch))
  optimizers = {g: optim.make_optimizer(cfg.train.optimizers[g], cfg.train.steps)
                for g in task.groups}
  state = state_lib.create(params, optimizers, jax.random.key(1))
  return cfg, task, batch, state, optimizers


@pytest.fixture(scope="module")
def run_step(setup):
  """One jitted program: the task's step plus the by-hand per-group updates (one compile,
  shared by every test of this file)."""
  cfg, task, _, _, optimizers = setup

  @jax.jit
  def run(state, batch):
    new_state, metrics = task.train_step(state, batch, jax.random.key(2), optimizers)
    g, d = state.params["generator"], state.params["discriminator"]
    on = (state.step >= cfg.discriminator.start_step).astype(jnp.float32)
    g_grads, (_, real, fake) = jax.grad(task.adversarial.generator_loss, has_aux=True)(
        g, d, batch, jax.random.key(2), on)
    fake = jax.lax.stop_gradient(fake)
    apply = lambda p, x: task.discriminators.apply({"params": p}, x)
    d_grads = jax.grad(lambda p: codec_losses.discriminator_loss(
        apply(p, real), apply(p, fake), cfg.discriminator.loss))(d)
    want_g, _ = state_lib.apply_group(g, state.opt_state["generator"], g_grads,
                                      optimizers["generator"])
    want_d, _ = state_lib.apply_group(d, state.opt_state["discriminator"], d_grads,
                                      optimizers["discriminator"])
    mel_only = jax.grad(lambda p: task.losses(p, batch)[0])(g)
    return new_state, metrics, want_g, want_d, g_grads, mel_only

  return run


def _changed(a, b):
  return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_gan_step_updates_each_group_from_its_own_objective(setup, run_step):
  """One step equals, group by group, the optimizer applied to the gradient of that group's
  objective alone: the generator's (mel + prior + adversarial + feature matching, with the
  discriminator at its start-of-step parameters) and the discriminator's (LSGAN on the real
  audio and the detached reconstruction). Before `start_step` the generator sees no
  adversarial terms."""
  _, _, batch, state, _ = setup
  run = run_step
  new_state, metrics, want_g, want_d, g_grads, mel_only = run(state, batch)
  assert _changed(state.params["generator"], new_state.params["generator"])
  assert _changed(state.params["discriminator"], new_state.params["discriminator"])
  for got, want in ((new_state.params["generator"], want_g),
                    (new_state.params["discriminator"], want_d)):
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  # Step 0 < start_step 1: the generator's gradient is the mel + prior gradient exactly.
  for x, y in zip(jax.tree.leaves(g_grads), jax.tree.leaves(mel_only)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
  assert float(metrics["discriminator_loss"]) > 0 and np.isfinite(float(metrics["loss"]))
  # Step 1 >= start_step: adversarial terms now reach the generator.
  _, _, _, _, g_grads1, mel_only1 = run(new_state.replace(step=new_state.step + 1), batch)
  diff = max(float(np.max(np.abs(x - y))) for x, y in
             zip(jax.tree.leaves(g_grads1), jax.tree.leaves(mel_only1)))
  assert diff > 1e-6


def _np_outputs(outputs):
  return [[np.asarray(f, np.float64) for f in maps] for maps in outputs]


@pytest.mark.parametrize("kind", ["lsgan", "hinge"])
def test_loss_composition_matches_formula(kind):
  """The generator's objective and the discriminator's, recomputed here from the model's and
  the discriminators' outputs: ``mel_w * mel + prior_w * NLL/D + gate * (adv_w * L_adv + fm_w *
  L_FM)`` with LSGAN or hinge terms, the prior NLL of equal-weight unit-variance mixtures over
  the valid frames, and the feature L1 over every map but the logits. Non-default weights, so
  a swapped or missing weight shows."""
  weights = dict(mel=7.0, prior=3.0, adv=1.5, fm=0.25)
  cfg = build_config("configs/gmm_vae.py:tiny", TINY + [
      f"--config.discriminator.loss={kind}", f"--config.loss.mel_weight={weights['mel']}",
      f"--config.loss.prior_weight={weights['prior']}",
      f"--config.discriminator.adversarial_weight={weights['adv']}",
      f"--config.discriminator.feature_matching_weight={weights['fm']}"])
  task = GMMVAETask(cfg)
  batch = _batch()
  params = nn.meta.unbox(jax.jit(task.init_params)(jax.random.key(3), batch))
  g, d = params["generator"], params["discriminator"]

  @jax.jit
  def run(g, d):
    frames = task.model.num_frames(S)
    frame_mask = frame_mask_from_lengths(batch["audio_len"], frames, task.model.hop_length)
    out = task.model.apply({"params": g}, batch["audio"], frame_mask=frame_mask)
    mask = jnp.arange(S)[None, :] < batch["audio_len"][:, None]
    fake, real = out["reconstruction"] * mask, batch["audio"] * mask
    mel = spectral.multiscale_mel_loss(
        out["reconstruction"], batch["audio"], sample_rate=16000,
        window_lengths=tuple(cfg.loss.mel_window_lengths), n_mels=tuple(cfg.loss.mel_bins),
        mask=mask)
    apply = lambda x: task.discriminators.apply({"params": d}, x)
    got = {gate: task.adversarial.generator_loss(g, d, batch, jax.random.key(0), gate)
           for gate in (0.0, 1.0)}
    d_loss = task.adversarial.discriminator_loss(d, real, fake)
    return (out["latents"], frame_mask, mel, apply(fake), apply(real),
            {k: v[0] for k, v in got.items()}, {k: v[1][0] for k, v in got.items()}, d_loss)

  h, frame_mask, mel, d_fake, d_real, loss, metrics, d_loss = run(g, d)
  h, frame_mask = np.asarray(h, np.float64), np.asarray(frame_mask)
  means = np.asarray(g["prior"]["means"], np.float64)                       # [L, D]
  dim = h.shape[-1]
  logp = (-0.5 * ((h[:, :, None, :] - means) ** 2).sum(-1)
          - 0.5 * dim * np.log(2 * np.pi) - np.log(len(means)))             # [B, F, L]
  nll = -logsumexp(logp, axis=-1)
  prior = (nll * frame_mask).sum() / frame_mask.sum() / dim
  d_fake, d_real = _np_outputs(d_fake), _np_outputs(d_real)
  if kind == "lsgan":
    adv = sum(np.mean((1 - maps[-1]) ** 2) for maps in d_fake)
    disc = sum(np.mean((1 - r[-1]) ** 2) + np.mean(f[-1] ** 2) for r, f in zip(d_real, d_fake))
  else:
    adv = sum(np.mean(-maps[-1]) for maps in d_fake)
    disc = sum(np.mean(np.maximum(0, 1 - r[-1])) + np.mean(np.maximum(0, 1 + f[-1]))
               for r, f in zip(d_real, d_fake))
  fm = sum(np.mean(np.abs(a - b)) for r, f in zip(d_real, d_fake) for a, b in zip(r[:-1], f[:-1]))
  base = weights["mel"] * float(mel) + weights["prior"] * prior
  m = metrics[1.0]
  np.testing.assert_allclose(float(m["mel_loss"]), float(mel), rtol=1e-6)
  np.testing.assert_allclose(float(m["prior_nll"]), prior, rtol=1e-4)
  np.testing.assert_allclose(float(m["adversarial_loss"]), adv, rtol=1e-4)
  np.testing.assert_allclose(float(m["feature_matching_loss"]), fm, rtol=1e-4)
  np.testing.assert_allclose(float(loss[0.0]), base, rtol=1e-4)
  np.testing.assert_allclose(float(loss[1.0]),
                             base + weights["adv"] * adv + weights["fm"] * fm, rtol=1e-4)
  np.testing.assert_allclose(float(d_loss), disc, rtol=1e-4)
  assert abs(weights["adv"] * adv + weights["fm"] * fm) > 1e-3 * abs(base)  # the gate matters


def test_latent_statistics_match_numpy(setup):
  _, task, _, state, _ = setup
  g = state.params["generator"]
  h = np.random.default_rng(1).normal(size=(3, 7, 16)).astype(np.float32)
  mask = np.ones((3, 7), np.float32)
  mask[1, 4:] = 0
  stats = jax.jit(task.latent_statistics)(g, jnp.asarray(h), jnp.asarray(mask))
  real = h[mask > 0]                                   # [N, D]
  np.testing.assert_allclose(stats["latent/mean_abs"], np.mean(np.abs(real.mean(0))), rtol=1e-5)
  np.testing.assert_allclose(stats["latent/var_mean"], np.mean(real.var(0)), rtol=1e-5)
  means = np.asarray(g["prior"]["means"])              # equal weights, unit variances
  logp = -0.5 * ((real[:, None, :] - means[None]) ** 2).sum(-1)
  resp = np.exp(logp - logp.max(1, keepdims=True))
  resp /= resp.sum(1, keepdims=True)
  for l, want in enumerate(resp.mean(0)):
    np.testing.assert_allclose(stats[f"latent/responsibility_{l}"], want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["silence", "clipped"])
def test_silence_and_clipping_give_finite_losses_and_gradients(setup, run_step, kind):
  _, _, batch, state, _ = setup
  if kind == "silence":
    audio = jnp.zeros_like(batch["audio"])
  else:
    audio = jnp.clip(40.0 * batch["audio"], -1.0, 1.0)   # hard-clipped square-ish waves
  batch = dict(batch, audio=audio)
  new_state, metrics = run_step(state, batch)[:2]
  for k, v in metrics.items():
    assert np.isfinite(float(v)), (kind, k, v)
  for leaf in jax.tree.leaves(new_state.params):
    assert np.isfinite(np.asarray(leaf)).all()


def test_vocos_decoder_switch_trains():
  """model.decoder=vocos: the config builds the Vocos decoder (no transposed convolutions in
  the parameters), the output keeps the input's length, and the task's losses (masked
  multi-scale mel and prior NLL) have finite gradients that reach every decoder parameter."""
  cfg = build_config("configs/gmm_vae.py:tiny", TINY + [
      "--config.model.decoder=vocos", "--config.model.vocos.dim=16",
      "--config.model.vocos.intermediate_dim=24", "--config.model.vocos.num_layers=2"])
  task = GMMVAETask(cfg)
  batch = _batch()
  params = nn.meta.unbox(jax.jit(task.init_params)(jax.random.key(0, impl="unsafe_rbg"), batch))
  decoder = params["generator"]["decoder"]
  assert set(decoder) == {"backbone", "head"} and decoder["head"]["kernel"].shape == (16, 802)
  recon = jax.jit(task.reconstruct)(params, batch["audio"])
  assert recon.shape == batch["audio"].shape

  def objective(g):
    return task.losses(g, batch)[1][0]["mel_loss"]

  grads = jax.jit(jax.grad(objective))(params["generator"])
  norms = jax.tree.map(lambda x: float(jnp.linalg.norm(x)), grads["decoder"])
  assert all(np.isfinite(v) and v > 0 for v in jax.tree.leaves(norms)), norms


def test_excitation_switch_adds_the_f0_head_and_decodes_latents_at_its_f0():
  """model.excitation: the F0 head's two terms enter the loss under their weights and train the
  head and the harmonic filter; decoding latents alone uses the head's F0 (what codec decoding
  and the GMM-LM's output get), and it differs from decoding at the recording's F0."""
  cfg = build_config("configs/gmm_vae.py:tiny", TINY + [
      "--config.model.decoder=vocos", "--config.model.vocos.dim=16",
      "--config.model.vocos.intermediate_dim=24", "--config.model.vocos.num_layers=1",
      "--config.model.excitation=True", "--config.loss.f0_weight=3.0",
      "--config.loss.voicing_weight=5.0"])
  task = GMMVAETask(cfg)
  batch = _batch()
  f = S // task.model.hop_length
  batch["f0"] = jnp.asarray(np.repeat([[110.0], [150.0], [190.0], [230.0]], f, 1), jnp.float32)
  batch["voiced"] = jnp.ones((4, f), bool)
  params = nn.meta.unbox(jax.jit(task.init_params)(jax.random.key(0, impl="unsafe_rbg"), batch))

  def objective(g):
    loss, (metrics, _) = task.losses(g, batch)
    return loss, metrics

  (loss, m), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(params["generator"])
  want = (cfg.loss.mel_weight * m["mel_loss"] + cfg.loss.prior_weight * m["prior_nll"]
          + 3.0 * m["f0_loss"] + 5.0 * m["voicing_loss"])
  np.testing.assert_allclose(float(loss), float(want), rtol=1e-5)
  for tree in (grads["f0_head"], grads["decoder"]["harmonic_head"]):
    assert float(sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(tree))) > 0
  model, v = task.model, {"params": params["generator"]}
  h = model.apply(v, batch["audio"], method=model.encode)
  alone = model.apply(v, h, method=model.decode)
  raw = model.apply(v, h, method=lambda mdl, x: mdl.f0_head(x))
  head = model.apply(v, h, jnp.exp(raw[..., 0] + 5.0), raw[..., 1] > 0, method=model.decode)
  forced = model.apply(v, h, batch["f0"], batch["voiced"], method=model.decode)
  np.testing.assert_allclose(np.asarray(alone), np.asarray(head), atol=1e-6)
  assert not np.allclose(np.asarray(alone), np.asarray(forced), atol=1e-4)


def test_f0_source_latent_carries_the_pitch_in_the_last_two_channels():
  """model.f0_source='latent': the latent's last two channels are ``v (log f0 - 5)`` and
  ``2 v - 1`` of the given F0 (NumPy), the prior sees only the learned channels, there is no
  F0 head and no F0 loss, and decoding the latent alone equals decoding at the given F0."""
  cfg = build_config("configs/gmm_vae.py:tiny", TINY + [
      "--config.model.decoder=vocos", "--config.model.vocos.dim=16",
      "--config.model.vocos.intermediate_dim=24", "--config.model.vocos.num_layers=1",
      "--config.model.excitation=True", "--config.model.f0_source=latent"])
  task = GMMVAETask(cfg)
  batch = _batch()
  f = S // task.model.hop_length
  f0 = np.repeat([[110.0], [150.0], [190.0], [230.0]], f, 1) * np.linspace(0.9, 1.1, f)
  voiced = (np.arange(f)[None] + np.arange(4)[:, None]) % 3 > 0
  batch["f0"] = jnp.asarray(np.where(voiced, f0, 0.0), jnp.float32)
  batch["voiced"] = jnp.asarray(voiced)
  params = nn.meta.unbox(jax.jit(task.init_params)(jax.random.key(0, impl="unsafe_rbg"), batch))
  g = params["generator"]
  assert "f0_head" not in g and g["prior"]["means"].shape == (3, cfg.model.latent_dim - 2)
  (loss, (m, _)) = jax.jit(task.losses)(g, batch)
  assert "f0_loss" not in m
  np.testing.assert_allclose(float(loss), float(cfg.loss.mel_weight * m["mel_loss"]
                                                + cfg.loss.prior_weight * m["prior_nll"]),
                             rtol=1e-5)
  model, v = task.model, {"params": g}
  h = np.asarray(model.apply(v, batch["audio"], batch["f0"], batch["voiced"],
                             method=model.encode))
  assert h.shape == (4, f, cfg.model.latent_dim)
  want = np.stack([voiced * (np.log(np.where(voiced, f0, 1.0)) - 5.0), 2.0 * voiced - 1.0], -1)
  np.testing.assert_allclose(h[..., -2:], want, atol=1e-5)
  moved = h.copy()
  moved[..., -2:] += 3.0
  nll = lambda x: float(model.apply(v, jnp.asarray(x), method=model.prior_nll))  # noqa: E731
  np.testing.assert_allclose(nll(moved), nll(h), rtol=1e-6)
  alone = model.apply(v, jnp.asarray(h), method=model.decode)
  forced = model.apply(v, jnp.asarray(h), batch["f0"], batch["voiced"], method=model.decode)
  # exp(log f0) drifts the excitation's cumulative phase by ~1e-4 over 1600 samples; a 5 %
  # pitch change moves the output by orders of magnitude more
  np.testing.assert_allclose(np.asarray(alone), np.asarray(forced), atol=2e-3)
  sharp = model.apply(v, jnp.asarray(h), batch["f0"] * 1.05, batch["voiced"], method=model.decode)
  assert np.max(np.abs(np.asarray(sharp) - np.asarray(forced))) > 0.1
  with pytest.raises(ValueError, match="needs the frame f0 and voiced"):
    model.apply(v, batch["audio"], method=model.encode)


def test_vocos_encoder_switch_trains():
  """model.encoder=vocos: the STFT encoder replaces the strided convolutions (no conv_in in
  the encoder's parameters), the latents come one per hop, and the mel loss's gradients reach
  every encoder parameter."""
  cfg = build_config("configs/gmm_vae.py:tiny", TINY + [
      "--config.model.encoder=vocos", "--config.model.vocos_encoder.dim=16",
      "--config.model.vocos_encoder.intermediate_dim=24",
      "--config.model.vocos_encoder.num_layers=1"])
  task = GMMVAETask(cfg)
  batch = _batch()
  params = nn.meta.unbox(jax.jit(task.init_params)(jax.random.key(0, impl="unsafe_rbg"), batch))
  encoder = params["generator"]["encoder"]
  assert set(encoder) == {"backbone", "project"}
  out = jax.jit(lambda p, x: task.model.apply({"params": p["generator"]}, x))(
      params, batch["audio"])
  assert out["latents"].shape == (batch["audio"].shape[0], S // task.model.hop_length,
                                  cfg.model.latent_dim)

  def objective(g):
    return task.losses(g, batch)[1][0]["mel_loss"]

  grads = jax.jit(jax.grad(objective))(params["generator"])
  norms = jax.tree.map(lambda x: float(jnp.linalg.norm(x)), grads["encoder"])
  assert all(np.isfinite(v) and v > 0 for v in jax.tree.leaves(norms)), norms


def test_spectrum_losses_switch_adds_apnet_terms():
  """loss.spectrum_amplitude_weight / spectrum_phase_weight: the loss gains exactly the
  weighted APNet terms, computed against the analysis STFT of the head's own frames (so a
  head that outputs that STFT has zero amplitude and phase loss); they need the Vocos head."""
  base = TINY + ["--config.model.decoder=vocos", "--config.model.vocos.dim=16",
                 "--config.model.vocos.intermediate_dim=24", "--config.model.vocos.num_layers=1"]
  on = GMMVAETask(build_config("configs/gmm_vae.py:tiny", base + [
      "--config.loss.spectrum_amplitude_weight=2.0", "--config.loss.spectrum_phase_weight=0.5"]))
  batch = _batch()
  params = nn.meta.unbox(jax.jit(on.init_params)(jax.random.key(0, impl="unsafe_rbg"), batch))
  loss_on, (m_on, _) = jax.jit(on.losses)(params["generator"], batch)
  lc = on.cfg.loss
  want = (lc.mel_weight * m_on["mel_loss"] + lc.prior_weight * m_on["prior_nll"]
          + 2.0 * m_on["spectrum_amplitude_loss"] + 0.5 * m_on["spectrum_phase_loss"])
  np.testing.assert_allclose(float(loss_on), float(want), rtol=1e-5)
  assert float(m_on["spectrum_amplitude_loss"]) > 0.1  # an untrained head is far from it
  assert float(m_on["spectrum_phase_loss"]) == pytest.approx(
      sum(float(m_on[f"phase/{k}"]) for k in ("instantaneous_phase", "group_delay",
                                              "instantaneous_frequency")), rel=1e-6)

  # The head's outputs replaced by the target's own log-magnitude and phase: both terms vanish.
  hop = on.model.hop_length
  frames = S // hop
  frame_mask = frame_mask_from_lengths(batch["audio_len"], frames, hop)
  audio = batch["audio"] * (jnp.arange(S)[None, :] < batch["audio_len"][:, None])
  target = same_frames_stft(audio, 4 * hop, hop)
  exact = {"head_log_magnitude": jnp.log(jnp.maximum(jnp.abs(target), 1e-5)),
           "head_phase": jnp.angle(target)}
  terms = on.spectrum_losses(exact, audio, frame_mask)
  assert float(terms["spectrum_amplitude_loss"]) < 1e-5
  assert float(terms["spectrum_phase_loss"]) < 1e-4

  dac = GMMVAETask(build_config("configs/gmm_vae.py:tiny", TINY + [
      "--config.loss.spectrum_amplitude_weight=1.0"]))
  shapes = jax.eval_shape(dac.init_params, jax.random.key(0, impl="unsafe_rbg"), batch)
  with pytest.raises(ValueError, match="model.decoder='vocos'"):
    jax.eval_shape(dac.losses, nn.meta.unbox(shapes)["generator"], batch)
