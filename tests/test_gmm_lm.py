"""GMM-LM: cached decoding against the teacher-forced pass, presets against Table 7, gradients
through the straight-through alignment, and a short training run on a latent corpus."""

import json
import os
import subprocess

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import PYTHON, ROOT, subprocess_env
from jaxtts.alignment import monotonic
from jaxtts.gmm_lm import decode
from jaxtts.gmm_lm.decode import durations, generate
from jaxtts.gmm_lm.model import GMMLM
from jaxtts.nn import mixture as mixture_lib
from jaxtts.tasks.gmm_lm import build_model, gumbel_temperature, stop_loss
from jaxtts.train.config import build_config

B, P, J, D = 2, 6, 9, 8


def _small(**kw):
  args = dict(vocab_size=20, latent_dim=D, encoder_layers=1, encoder_dim=32,
              encoder_ffn_dim=64, encoder_heads=2, decoder_layers=2, decoder_dim=48,
              decoder_ffn_dim=96, decoder_heads=2, kernel_size=5, num_components=3,
              energy_dim=16, dropout=0.0)
  args.update(kw)
  return GMMLM(**args)


def _init(model, frames=12):
  lat = jnp.zeros((B, frames, D))
  return nn.meta.unbox(model.init(
      {"params": jax.random.key(1), "alignment": jax.random.key(2)}, lat,
      jnp.ones((B, frames), bool), jnp.ones((B, J), jnp.int32), jnp.ones((B, J), bool))["params"])


@pytest.mark.parametrize("position", ["rotary"])  # relative_xl's cache: tests/test_conformer.py
def test_cached_decoding_matches_teacher_forced_pass(position):
  """Greedy generation (argmax component, its mean, threshold alignment) through the KV cache
  equals the parallel teacher-forced pass over [prompt, generated frames] to 1e-5."""
  model = _small(position=position, energy_bias_init=3.0)
  params = _init(model)
  key = jax.random.key(3)
  prompt = jax.random.normal(key, (B, P, D))
  prompt_len = jnp.array([P, 3])
  prompt = prompt * (jnp.arange(P)[None, :, None] < prompt_len[:, None, None])
  phonemes = jax.random.randint(jax.random.key(4), (B, J), 1, 20)
  phoneme_len = jnp.array([J, 7])
  out = generate(model, params, prompt, prompt_len, phonemes, phoneme_len, jax.random.key(5),
                 max_frames=10, weight_temperature=0.0, scale_temperature=0.0,
                 stop_threshold=1.1, stay_mode="threshold")
  lengths = np.asarray(out["lengths"])
  assert (lengths >= 2).all(), lengths
  # Teacher-forced sequences: each row's prompt followed by its generated frames.
  total = P + 10
  seq = np.zeros((B, total, D), np.float32)
  for b in range(B):
    pl, n = int(prompt_len[b]), int(lengths[b])
    seq[b, :pl] = np.asarray(prompt[b, :pl])
    seq[b, pl:pl + n] = np.asarray(out["frames"][b, :n])
  mask = np.arange(total)[None, :] < (np.asarray(prompt_len) + lengths)[:, None]
  phoneme_mask = jnp.arange(J)[None, :] < phoneme_len[:, None]
  tf = model.apply({"params": params}, jnp.asarray(seq), jnp.asarray(mask), phonemes,
                   phoneme_mask, alignment="threshold")
  comp = np.asarray(mixture_lib.mixture_mode_component(tf["mixture"]))
  means = np.asarray(tf["mixture"].means)
  alpha = np.asarray(tf["alpha"])
  for b in range(B):
    pl = int(prompt_len[b])
    for k in range(int(lengths[b])):
      i = pl + k
      np.testing.assert_allclose(out["frames"][b, k], means[b, i, comp[b, i]], atol=1e-5,
                                 rtol=1e-5)
      assert int(out["phoneme_index"][b, k]) == int(np.argmax(alpha[b, i]))
  np.testing.assert_array_equal(np.asarray(out["prompt_alpha"])[0], alpha[0, :P + 1])
  assert (np.asarray(out["phoneme_index"])[np.arange(10)[None] >= lengths[:, None]] == -1).all()


def test_generation_respects_max_frames_and_stops_past_last_phoneme():
  model = _small(energy_bias_init=-6.0)   # advance almost every frame
  params = _init(model)
  prompt = jnp.zeros((B, 2, D))
  phonemes = jnp.ones((B, J), jnp.int32)
  out = generate(model, params, prompt, jnp.array([2, 0]), phonemes, jnp.array([4, 6]),
                 jax.random.key(0), max_frames=30, stop_threshold=1.1)
  lengths = np.asarray(out["lengths"])
  assert (np.asarray(out["stopped_by"]) == 1).all() and (lengths < 30).all()
  idx = np.asarray(out["phoneme_index"])
  for b, n_ph in enumerate((4, 6)):
    row = idx[b, :lengths[b]]
    assert (np.diff(row) >= 0).all() and (np.diff(row) <= 1).all() and row.max() == n_ph - 1
  assert durations(idx, J).sum() == lengths.sum()
  capped = generate(model.clone(energy_bias_init=8.0), _init(model.clone(energy_bias_init=8.0)),
                    prompt, jnp.array([2, 0]), phonemes, jnp.array([4, 6]), jax.random.key(0),
                    max_frames=5, stop_threshold=1.1)
  assert (np.asarray(capped["lengths"]) == 5).all()
  assert (np.asarray(capped["stopped_by"]) == 2).all()


@pytest.mark.parametrize("straight_through", ["sequence", "step"])
def test_straight_through_gradient_reaches_the_energies(straight_through):
  model = _small(dropout=0.0, straight_through=straight_through)
  params = _init(model)
  lat = jax.random.normal(jax.random.key(0), (B, 12, D))
  fmask = jnp.ones((B, 12), bool)
  ph = jax.random.randint(jax.random.key(1), (B, J), 1, 20)
  pmask = jnp.ones((B, J), bool)

  def loss(p):
    out = model.apply({"params": p}, lat, fmask, ph, pmask, 0.5,
                      rngs={"alignment": jax.random.key(7)})
    return mixture_lib.mixture_nll(out["mixture"], lat, fmask)

  out = model.apply({"params": params}, lat, fmask, ph, pmask, 0.5,
                    rngs={"alignment": jax.random.key(7)})
  np.testing.assert_array_equal(np.asarray(out["alpha"]).sum(-1), 1.0)  # hard forward
  assert set(np.unique(np.asarray(out["alpha"]))) == {0.0, 1.0}
  grads = jax.grad(loss)(params)
  for name in ("query", "key"):
    g = np.asarray(grads["energy"][name]["kernel"])
    assert np.isfinite(g).all() and np.abs(g).max() > 0, name
  assert np.abs(float(grads["energy"]["energy_bias"])) > 0


TABLE7 = {"mini": 51.5e6, "101m": 101e6, "170m": 170e6, "large": 315e6}


def _param_count(preset):
  cfg = build_config(f"configs/gmm_lm.py:{preset}")
  model = build_model(cfg)
  shapes = jax.eval_shape(lambda: model.init(
      {"params": jax.random.key(0), "alignment": jax.random.key(1)},
      jnp.zeros((1, 8, cfg.model.latent_dim)), jnp.ones((1, 8), bool),
      jnp.ones((1, 4), jnp.int32), jnp.ones((1, 4), bool)))["params"]
  return sum(int(np.prod(getattr(x, "value", x).shape)) for x in jax.tree.leaves(shapes))


@pytest.mark.parametrize("preset", ["101m", "170m", "large"])
def test_table7_parameter_counts_within_5_percent(preset):
  n = _param_count(preset)
  assert abs(n / TABLE7[preset] - 1) < 0.05, (preset, n)


@pytest.mark.parametrize("preset", ["tiny", "espeak", "mini", "101m", "170m", "large"])
def test_preset_buckets_fit_the_latent_hop(preset):
  """Bucket lengths are whole latent frames and whole espeak-corpus duration frames (200)."""
  cfg = build_config(f"configs/gmm_lm.py:{preset}")
  for s in cfg.data.bucket_samples:
    assert s % cfg.model.latent_hop == 0 and s % 200 == 0, (preset, s)
  from jaxtts.tasks.gmm_lm import GMMLMTask
  bad = build_config(f"configs/gmm_lm.py:{preset}", ["--config.data.bucket_samples=(48100,)"])
  with pytest.raises(ValueError, match=r"bucket_samples \[48100\].*latent_hop"):
    GMMLMTask(bad)


def test_mini_parameter_count_is_explained():
  """Table 7's Mini (51.5M) is not reachable with its listed sizes: the 6-component diagonal
  head over the codec's 1024-dim latents alone is 512 * 6 * (1 + 2 * 1024) = 6.3M, and the
  Conformer stacks of the listed sizes are 48.3M (no position parameters). We build the
  listed sizes and land at +7.8 %; this pins that figure so a change is noticed."""
  n = _param_count("mini")
  head = 512 * 6 * (1 + 2 * 1024) + 6 * (1 + 2 * 1024)
  assert 0.05 < n / TABLE7["mini"] - 1 < 0.09, n
  assert n - head < TABLE7["mini"]


def test_gumbel_temperature_schedule_and_stop_loss():
  cfg = build_config("configs/gmm_lm.py:tiny")
  a, steps = cfg.alignment, cfg.train.steps
  assert float(gumbel_temperature(cfg, 0)) == pytest.approx(a.temperature_start)
  assert float(gumbel_temperature(cfg, steps * a.anneal_start_fraction)) == pytest.approx(
      a.temperature_start)
  assert float(gumbel_temperature(cfg, steps)) == pytest.approx(a.temperature_end)
  logits = jnp.array([[-2.0, -1.0, 3.0, 0.0]])
  mask = jnp.array([[1.0, 1.0, 1.0, 0.0]])
  got = float(stop_loss(logits, jnp.array([3]), mask, 5.0))
  sig = lambda x: 1 / (1 + np.exp(-x))
  want = -(np.log(1 - sig(-2.0)) + np.log(1 - sig(-1.0)) + 5.0 * np.log(sig(3.0))) / 3
  assert got == pytest.approx(want, rel=1e-5)


@pytest.fixture(scope="module")
def latent_corpus(tmp_path_factory):
  """Synthetic latent shards (one latent frame per duration frame) with true durations."""
  from jaxtts.data.synthetic import write_synthetic_corpus
  corpus = tmp_path_factory.mktemp("latents")
  write_synthetic_corpus(str(corpus), num_speakers=3, utterances_per_speaker=12,
                         zero_shot_speakers=1, seed=0, latent_dim=16, max_seconds=2.5)
  return corpus


def test_alignment_metrics_score_the_corpus_durations(latent_corpus):
  """The task's ``alignment/reference_*`` metrics on two corpus utterances equal a NumPy
  count: each real frame's phoneme (argmax of the task's own alpha) against the phoneme the
  corpus durations put there (``np.repeat``)."""
  from jaxtts.data.source import CorpusSource
  from jaxtts.tasks.gmm_lm import GMMLMTask
  cfg = build_config("configs/gmm_lm.py:tiny", [
      f"--config.data.dir={latent_corpus}", "--config.model.encoder_layers=1",
      "--config.model.decoder_layers=1", "--config.model.frames_per_step=1"])
  task = GMMLMTask(cfg)
  assert task.duration_scale == 1.0  # one latent frame per duration frame (200-sample hop)
  exs = [CorpusSource(str(latent_corpus), "train").example(i) for i in range(2)]
  frames = max(len(ex["latents"]) for ex in exs) + 3   # padded frames too
  num_ph = max(len(ex["phonemes"]) for ex in exs) + 2
  batch = {"latents": np.zeros((2, frames, 16), np.float32),
           "latent_len": np.array([len(ex["latents"]) for ex in exs], np.int32),
           "phonemes": np.zeros((2, num_ph), np.int32),
           "phoneme_len": np.array([len(ex["phonemes"]) for ex in exs], np.int32),
           "durations": np.zeros((2, num_ph), np.int32)}
  for b, ex in enumerate(exs):
    batch["latents"][b, :len(ex["latents"])] = ex["latents"]
    batch["phonemes"][b, :len(ex["phonemes"])] = ex["phonemes"]
    batch["durations"][b, :len(ex["durations"])] = ex["durations"]
  params = task.init_params(jax.random.key(0), batch)
  params = nn.meta.unbox(params)["model"]
  losses = jax.jit(task.losses, static_argnums=4)
  _, (metrics, out) = losses(params, batch, jax.random.key(1), jnp.float32(0.5), False)
  alpha = np.asarray(out["alpha"])
  diffs = []
  for b, ex in enumerate(exs):
    n = int(batch["latent_len"][b])
    truth = np.repeat(np.arange(len(ex["durations"])), ex["durations"])
    assert len(truth) == n
    diffs.append(np.abs(alpha[b, :n].argmax(-1) - truth))
  diffs = np.concatenate(diffs)
  assert 0 < np.mean(diffs <= 1) < 1  # an untrained alignment: neither all right nor all wrong
  assert float(metrics["alignment/reference_within_1"]) == pytest.approx(np.mean(diffs <= 1))
  assert float(metrics["alignment/reference_phoneme_error"]) == pytest.approx(diffs.mean(),
                                                                              rel=1e-6)


def test_frames_per_step_stacks_r_frames_per_decoder_step(latent_corpus):
  """``model.frames_per_step=2``: the task's loss equals that of the same network applied by
  hand to NumPy-stacked steps ``[h_0; h_1], [h_2; h_3], ...`` (odd tails dropped), and
  `unstack_frames` inverts the stacking."""
  from jaxtts.gmm_lm import stacking
  from jaxtts.tasks.gmm_lm import GMMLMTask
  cfg = build_config("configs/gmm_lm.py:tiny", [
      f"--config.data.dir={latent_corpus}", "--config.model.encoder_layers=1",
      "--config.model.decoder_layers=1", "--config.model.frames_per_step=2"])
  task = GMMLMTask(cfg)
  rng = np.random.default_rng(0)
  lat = rng.normal(size=(2, 11, 16)).astype(np.float32)
  batch = {"latents": lat, "latent_len": np.array([11, 6], np.int32),
           "phonemes": np.array([[3, 4, 5, 6], [7, 8, 9, 0]], np.int32),
           "phoneme_len": np.array([4, 3], np.int32),
           "durations": np.array([[3, 3, 3, 2], [2, 2, 2, 0]], np.int32)}
  params = nn.meta.unbox(task.init_params(jax.random.key(0), batch))["model"]
  assert params["head"]["kernel"].shape[-1] == 3 * (1 + 2 * 32)  # 3 components over 2 x 16
  loss, (metrics, out) = task.losses(params, batch, jax.random.key(1), jnp.float32(0.5), True)
  stacked = np.stack([np.concatenate([lat[:, 2 * k], lat[:, 2 * k + 1]], -1)
                      for k in range(5)], 1)                              # [2, 5, 32]
  lens = np.array([5, 3])
  np.testing.assert_array_equal(stacking.stack_frames(lat, batch["latent_len"], 2)[0], stacked)
  np.testing.assert_array_equal(stacking.unstack_frames(stacked, 2), lat[:, :10])
  lmask = np.arange(5)[None] < lens[:, None]
  pmask = np.arange(4)[None] < batch["phoneme_len"][:, None]
  a_rng, d_rng = jax.random.split(jax.random.key(1))
  ref = task.model.apply({"params": params}, stacked, lmask, batch["phonemes"], pmask, 0.5,
                         True, rngs={"alignment": a_rng, "dropout": d_rng})
  mask = lmask.astype(np.float32)
  want = (mixture_lib.mixture_nll(ref["mixture"], stacked, mask, per_dim=True)
          + cfg.loss.stop_weight * stop_loss(ref["stop_logits"], lens, mask,
                                             cfg.loss.stop_pos_weight))
  assert float(loss) == pytest.approx(float(want), rel=1e-6)
  assert out["alpha"].shape == (2, 5, 4)
  assert task.duration_scale == 0.5  # corpus frames -> decoder steps
  # eval's text_nll_gain: the NLL with the rows' texts swapped (NumPy roll) minus the NLL.
  swapped = dict(batch, **{k: np.roll(batch[k], 1, axis=0)
                           for k in ("phonemes", "phoneme_len", "durations")})
  s = jnp.float32(cfg.alignment.temperature_end)
  own = task.losses(params, batch, jax.random.key(0), s, True)[1][0]["nll_per_dim"]
  other = task.losses(params, swapped, jax.random.key(0), s, True)[1][0]["nll_per_dim"]
  got = task.eval_step({"model": params}, batch)["text_nll_gain"]
  assert float(got) == pytest.approx(float(other - own), rel=1e-5, abs=1e-6)
  assert float(other) != float(own)
  # The alignment warm start: on warm steps the corpus durations (in decoder steps) are the
  # alignment, and the stay decisions' BCE against them joins the loss with its weight.
  warm_cfg = build_config("configs/gmm_lm.py:tiny", [
      f"--config.data.dir={latent_corpus}", "--config.model.encoder_layers=1",
      "--config.model.decoder_layers=1", "--config.alignment.reference_warmup_steps=10",
      "--config.alignment.reference_stay_weight=3.0"])
  warm_task = GMMLMTask(warm_cfg)
  loss_w, (m_w, out_w) = warm_task.losses(params, batch, jax.random.key(1), s, True, True)
  ref = monotonic.reference_phonemes(batch["durations"] * 0.5, pmask, 5)
  np.testing.assert_array_equal(np.asarray(out_w["alpha"]),
                                np.asarray(jax.nn.one_hot(ref, 4)) * pmask[:, None])
  assert float(loss_w) == pytest.approx(float(m_w["nll_per_dim"] + cfg.loss.stop_weight
                                              * m_w["stop_loss"] + 3.0
                                              * m_w["alignment/reference_stay_loss"]), rel=1e-6)
  loss_c, (m_c, out_c) = warm_task.losses(params, batch, jax.random.key(1), s, True, False)
  # the statistics stay those of the model's own (sampled) alignment
  np.testing.assert_array_equal(np.asarray(out_w["sampled_alpha"]), np.asarray(out_c["alpha"]))
  assert m_w["alignment/reference_within_1"] == m_c["alignment/reference_within_1"]
  assert float(loss_c) == pytest.approx(float(m_c["nll_per_dim"] + cfg.loss.stop_weight
                                              * m_c["stop_loss"]), rel=1e-6)


def test_tiny_training_on_latent_shards_reduces_loss(tmp_path, latent_corpus):
  corpus = latent_corpus
  workdir = tmp_path / "lm"
  cmd = [PYTHON, "-m", "jaxtts.train", "--config",
         os.path.join(ROOT, "configs", "gmm_lm.py") + ":tiny", "--workdir", str(workdir),
         f"--config.data.dir={corpus}", "--config.train.steps=30",
         "--config.train.log_every_steps=5", "--config.logging.progress_bar=False",
         "--config.train.eval_every_steps=30", "--config.train.sample_every_steps=30",
         # One bucket: one compiled train step (bucketing itself: tests/test_data.py).
         "--config.data.bucket_samples=(48000,)", "--config.checkpoint.every_steps=30",
         "--config.data.eval_split=test_zero_shot"]
  proc = subprocess.run(cmd, env=subprocess_env(1), cwd=ROOT, capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  records = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  train = [r for r in records if "loss" in r]
  assert train[-1]["loss"] < train[0]["loss"] - 0.3, [r["loss"] for r in train]
  assert train[-1]["train/alignment/reached_end"] > train[0]["train/alignment/reached_end"]
  # The synthetic corpus carries its true durations: the alignment is scored against them
  # (the figure itself: test_alignment_metrics_score_the_corpus_durations).
  assert all("train/alignment/reference_within_1" in r for r in train)
  evals = [r for r in records if "eval/loss" in r]
  assert evals and np.isfinite(evals[-1]["eval/nll_per_dim"])
  samples = [n for _, _, names in os.walk(workdir / "samples") for n in names]
  assert any(n.endswith("alignment.png") for n in samples), samples


def test_stop_logit_counts_only_on_the_last_phoneme():
  """With ``stop_threshold=-1`` the stop logit says "stop" at every frame: by default a row
  still runs until its alignment reaches the last phoneme; ungated it stops at once."""
  model = _small(energy_bias_init=-2.0)
  params = _init(model)
  prompt, phonemes = jnp.zeros((B, 2, D)), jnp.ones((B, J), jnp.int32)
  gated = generate(model, params, prompt, jnp.array([2, 0]), phonemes, jnp.array([4, 6]),
                   jax.random.key(0), max_frames=40, stop_threshold=-1.0)
  lengths, idx = np.asarray(gated["lengths"]), np.asarray(gated["phoneme_index"])
  assert (np.asarray(gated["stopped_by"]) == 0).all()
  for b, n_ph in enumerate((4, 6)):
    assert idx[b, lengths[b] - 1] == n_ph - 1 and (idx[b, :lengths[b] - 1] < n_ph - 1).all()
  ungated = generate(model, params, prompt, jnp.array([2, 0]), phonemes, jnp.array([4, 6]),
                     jax.random.key(0), max_frames=40, stop_threshold=-1.0,
                     stop_on_last_phoneme_only=False)
  assert (np.asarray(ungated["lengths"]) == 1).all()
  assert (np.asarray(ungated["stopped_by"]) == 0).all()


def test_frame_noise_corrupts_only_the_previous_frames_in_training():
  """``frame_noise_std`` adds noise to the teacher-forced inputs x_1.. (not to BOS x_0, not to
  the targets) when ``deterministic=False``; evaluation passes are unaffected."""
  lat = jax.random.normal(jax.random.key(7), (B, 12, D))
  args = (lat, jnp.ones((B, 12), bool), jnp.ones((B, J), jnp.int32), jnp.ones((B, J), bool))
  clean, noisy = _small(), _small(frame_noise_std=0.5)
  params = _init(clean)
  rngs = {"alignment": jax.random.key(8), "dropout": jax.random.key(9)}

  def run(model, deterministic):
    return model.apply({"params": params}, *args, deterministic=deterministic, rngs=rngs,
                       alignment="expected")
  ref, same = run(clean, True), run(noisy, True)
  np.testing.assert_array_equal(same["mixture"].means, ref["mixture"].means)
  train_clean, train_noisy = run(clean, False), run(noisy, False)
  np.testing.assert_array_equal(train_clean["mixture"].means, ref["mixture"].means)
  diff = np.abs(np.asarray(train_noisy["mixture"].means - ref["mixture"].means))
  # Causal decoder: step 0 sees only BOS (unchanged); every later step sees a noisy frame.
  assert diff[:, 0].max() < 1e-6 and diff[:, 1:].max(axis=(-1, -2)).min() > 1e-4
  assert np.abs(np.asarray(train_noisy["energies"] - ref["energies"]))[:, 1:].min() > 0


def test_prompt_prefill_decoding_matches_teacher_forcing():
  """`generate` with ``prompt_phoneme_len`` (jaxtts-synthesize's call), greedy (threshold
  stays, argmax component, its mean): every generated frame is the mode mean of a parallel
  teacher-forced pass over ``[prompt, frames]`` whose alignment is the one decoding recorded;
  that alignment is Algorithm 1 step 7 on the teacher-forced energies from the last prompt
  frame, which sits on the transcript's last phoneme; prefill's first-frame mixture and stop
  logit equal the teacher-forced ones at step ``prompt_len``."""
  model = _small()
  params = dict(_init(model))
  # Sharper energies and a small advance bias: greedy decisions both stay and advance.
  params["energy"] = {"query": {"kernel": 3.0 * params["energy"]["query"]["kernel"]},
                      "key": {"kernel": 3.0 * params["energy"]["key"]["kernel"]},
                      "energy_bias": jnp.float32(-0.5)}
  prompt = jax.random.normal(jax.random.key(13), (B, P, D))
  prompt_len = np.array([P, 4])
  prompt = prompt * (jnp.arange(P)[None, :, None] < prompt_len[:, None, None])
  phonemes = jax.random.randint(jax.random.key(14), (B, J), 1, 20)
  phoneme_len, ppl = np.array([J, 8]), np.array([6, 3])
  max_frames = 12
  out = generate(model, params, prompt, jnp.asarray(prompt_len), phonemes,
                 jnp.asarray(phoneme_len), jax.random.key(5), max_frames=max_frames,
                 weight_temperature=0.0, scale_temperature=0.0, stop_threshold=1.1,
                 stay_mode="threshold", prompt_phoneme_len=jnp.asarray(ppl))
  out = jax.tree.map(np.asarray, out)
  lengths, index, prompt_alpha = out["lengths"], out["phoneme_index"], out["prompt_alpha"]
  total = P + max_frames
  latents = np.zeros((B, total, D), np.float32)  # [prompt, generated frames], zero padded
  alpha = np.zeros((B, total, J), np.float32)    # the alignment decoding recorded
  for b in range(B):
    pl, n = prompt_len[b], lengths[b]
    assert n >= 3, lengths
    latents[b, :pl], latents[b, pl:pl + n] = np.asarray(prompt[b, :pl]), out["frames"][b, :n]
    alpha[b, :pl + 1] = prompt_alpha[b, :pl + 1]
    alpha[b, pl:pl + n] = np.eye(J)[index[b, :n]]
    # The first generated frame was recorded with the state its mixture was computed with.
    np.testing.assert_array_equal(prompt_alpha[b, pl], np.eye(J)[index[b, 0]])
  frames_in = np.concatenate([np.zeros((B, 1, D), np.float32), latents[:, :-1]], axis=1)
  fmask = np.arange(total)[None] < (prompt_len + lengths)[:, None]
  pmask = np.arange(J)[None] < phoneme_len[:, None]

  def teacher_forced(m):
    y, y_dec = m.encode(phonemes, jnp.asarray(pmask))
    mixture, stop_logits = m.outputs(jnp.asarray(frames_in), jnp.asarray(alpha), y_dec,
                                     jnp.asarray(fmask))
    return m.energies(jnp.asarray(frames_in), y), mixture, stop_logits
  e, tf, stop_logits = jax.jit(nn.apply(teacher_forced, model))({"params": params})
  u = (np.asarray(e) > 0).astype(np.float32)  # the threshold stay decisions
  u[:, 0] = 1.0                                # step 0 sits on phoneme 0 (Algorithm 1)
  comp = np.asarray(mixture_lib.mixture_mode_component(tf))
  means = np.asarray(tf.means)
  for b in range(B):
    pl, n, n_ph = prompt_len[b], lengths[b], ppl[b]
    # Prompt: within its transcript's phonemes, the last prompt frame on the last of them.
    within = (np.arange(J) < n_ph)[None]
    ref = monotonic.monotonic_alignment_reference(u[b:b + 1, :pl], within)[0]
    np.testing.assert_array_equal(prompt_alpha[b, :pl - 1], ref[:pl - 1])
    np.testing.assert_array_equal(prompt_alpha[b, pl - 1], np.eye(J)[n_ph - 1])
    # Generated frames: Algorithm 1 step 7 from the last prompt frame over all phonemes.
    steps = monotonic.monotonic_alignment_reference(
        u[b:b + 1, pl:pl + n], pmask[b:b + 1], alpha0=alpha[b:b + 1, pl - 1])[0]
    np.testing.assert_array_equal(steps.argmax(-1), index[b, :n])
    for k in range(n):
      i = pl + k
      np.testing.assert_allclose(out["frames"][b, k], means[b, i, comp[b, i]], rtol=1e-5,
                                 atol=1e-5)
  # Row 0's first frame stays on the prompt's last phoneme, row 1's advances; both move on.
  assert index[0, 0] == ppl[0] - 1 and index[1, 0] == ppl[1], index
  assert all(len(set(index[b, :lengths[b]])) > 2 for b in range(B)), index
  # Prefill's first-frame mixture and stop logit (all parameters) against step prompt_len.
  dec = model.clone(decode=True)
  cache = decode._zero_cache(dec, B, total + 1, D, J)
  first = jax.jit(lambda: dec.apply(
      {"params": params, "cache": cache}, prompt, jnp.asarray(prompt_len), phonemes,
      jnp.asarray(pmask), "threshold", jnp.asarray(ppl), method=GMMLM.prefill,
      mutable=["cache"])[0])()
  at = lambda a: np.asarray(a)[np.arange(B), prompt_len]
  for name in ("logits", "means", "scales"):
    np.testing.assert_allclose(np.asarray(getattr(first["mixture"], name))[:, 0],
                               at(getattr(tf, name)), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(first["stop_logits"])[:, 0], at(stop_logits),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(first["alpha"], prompt_alpha[np.arange(B), prompt_len])


def test_energy_bias_init_follows_the_frame_rate():
  """With energy_bias_init=None the bias starts every step rate at alignment.phoneme_seconds:
  a phoneme's mean stay ``1 / (1 - sigmoid(b))`` is 4 steps at 40 steps/s (tiny: the espeak
  codec's 80 frames/s, 2 frames per step), 8 at 80 (one frame per step) and 3.125 at 31.25
  (Table 7, hop 512), all 100 ms; a number overrides."""
  from scipy.special import expit
  from jaxtts.gmm_lm.model import energy_bias_init
  from jaxtts.train.config import build_config
  for preset, frames, extra in (("tiny", 4.0, []),
                                ("tiny", 8.0, ["--config.model.frames_per_step=1"]),
                                ("paper", 3.125, [])):
    cfg = build_config(f"configs/gmm_lm.py:{preset}", extra)
    assert 1.0 / (1.0 - expit(energy_bias_init(cfg))) == pytest.approx(frames, rel=1e-9)
  cfg = build_config("configs/gmm_lm.py:tiny", ["--config.alignment.energy_bias_init=-1.5"])
  assert energy_bias_init(cfg) == -1.5


def test_mixture_head_stays_float32_under_bfloat16_compute():
  """A bf16 model computes the mixture head's projection from float32 operands: the head's
  dot_general (its output has the head's N(1 + 2D) width) sees float32 inputs, while the
  Conformer's products are bf16."""
  model = _small(dtype=jnp.bfloat16)
  params = _init(model)
  lat = jnp.zeros((B, 12, D))
  jaxpr = jax.make_jaxpr(lambda p: model.apply(
      {"params": p}, lat, jnp.ones((B, 12), bool), jnp.ones((B, J), jnp.int32),
      jnp.ones((B, J), bool), rngs={"alignment": jax.random.key(0)}))(params)
  width = 3 * (1 + 2 * D)

  def all_dots(jx):
    for e in jx.eqns:
      if e.primitive.name == "dot_general":
        yield e
      for v in e.params.values():
        for sub in (v if isinstance(v, (tuple, list)) else (v,)):
          inner = getattr(sub, "jaxpr", sub)
          if hasattr(inner, "eqns"):
            yield from all_dots(inner)

  dots = list(all_dots(jaxpr.jaxpr))
  head = [e for e in dots if e.outvars[0].aval.shape[-1] == width]
  assert head and all(v.aval.dtype == jnp.float32 for e in head for v in e.invars)
  assert any(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)
