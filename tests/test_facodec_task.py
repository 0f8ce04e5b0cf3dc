"""The FACodec task (`jaxtts.tasks.facodec`): its loss terms against NumPy, every term wired
with its weight, the label checks against the corpus, the presets and ablations, and the paper
preset's parameter counts against the released model's."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from train_helpers import facodec_batch
from jaxtts.tasks import facodec as task_lib
from jaxtts.train.config import build_config

CONFIG = os.path.join(ROOT, "configs", "facodec.py")


def _config(preset="tiny", *overrides):
  return build_config(f"{CONFIG}:{preset}", list(overrides))


@pytest.fixture(scope="module")
def f0_corpus(tmp_path_factory):
  """A synthetic corpus with F0 and voicing (harmonic voices; no espeak)."""
  from jaxtts.data.synthetic import write_synthetic_corpus
  out = tmp_path_factory.mktemp("facodec_corpus")
  write_synthetic_corpus(str(out), num_speakers=3, utterances_per_speaker=4,
                         zero_shot_speakers=1, seed=0, f0=True)
  return str(out)


def test_normalized_log_f0_and_f0_loss_against_numpy():
  """z = (log f0 - mean) / max(std, floor) over each row's voiced frames; rows with < 2
  voiced frames are masked; the loss is L1 on voiced frames + BCE on valid frames."""
  rng = np.random.default_rng(0)
  f0 = rng.uniform(80, 300, (3, 12)).astype(np.float32)
  voiced = rng.random((3, 12)) < 0.6
  voiced[2] = False
  voiced[2, 4] = True                     # one voiced frame: no F0 target in that row
  f0[~voiced] = 0.0
  z, mask = task_lib.normalized_log_f0(jnp.asarray(f0), jnp.asarray(voiced), 0.02)
  want = np.zeros_like(f0)
  for b in range(2):
    lf = np.log(f0[b, voiced[b]])
    want[b, voiced[b]] = (lf - lf.mean()) / max(lf.std(), 0.02)
  np.testing.assert_allclose(np.asarray(z)[:2], want[:2], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(mask), np.r_[voiced[:2], np.zeros((1, 12), bool)])

  pred = rng.standard_normal((3, 12, 2)).astype(np.float32)
  frames = np.ones((3, 12), np.float32)
  frames[1, 9:] = 0
  got = float(task_lib.f0_loss(jnp.asarray(pred), z, mask, jnp.asarray(voiced),
                               jnp.asarray(frames)))
  m = np.asarray(mask)
  l1 = np.abs(pred[..., 0] - np.asarray(z))[m > 0].mean()
  p = 1 / (1 + np.exp(-pred[..., 1]))
  bce = -(voiced * np.log(p) + (1 - voiced) * np.log(1 - p))
  np.testing.assert_allclose(got, l1 + bce[frames > 0].mean(), rtol=1e-5)


def test_masked_cross_entropy_against_numpy():
  rng = np.random.default_rng(1)
  logits = rng.standard_normal((2, 5, 7)).astype(np.float32)
  labels = rng.integers(0, 7, (2, 5))
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
  ce, acc = task_lib.masked_cross_entropy(jnp.asarray(logits), jnp.asarray(labels),
                                          jnp.asarray(mask))
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
  np.testing.assert_allclose(float(ce), nll[mask > 0].mean(), rtol=1e-5)
  np.testing.assert_allclose(float(acc), (logits.argmax(-1) == labels)[mask > 0].mean())


# metric name -> the loss weight it carries (the task's module docstring).
WIRING = {
    "mel_loss": "mel_weight", "codebook_loss": "codebook_weight",
    "commitment_loss": "commitment_weight", "prosody_f0_loss": "f0_weight",
    "phone_loss": "phone_weight", "speaker_loss": "speaker_weight",
    "grl_content_f0_loss": "grl_f0_weight", "grl_detail_f0_loss": "grl_f0_weight",
    "grl_prosody_phone_loss": "grl_phone_weight", "grl_detail_phone_loss": "grl_phone_weight",
    "grl_speaker_loss": "grl_speaker_weight",
    "spectrum_amplitude_loss": "spectrum_amplitude_weight",
    # model.excitation (on in the test below): the decoder's F0 head.
    "decoder_f0_loss": "decoder_f0_weight", "decoder_voicing_loss": "decoder_voicing_weight",
}


def test_every_loss_term_is_wired_with_its_weight():
  """With distinct weights, the loss and its gradient equal those of the weighted sum of the
  task's individual terms, recombined here from the metric table above; every term is
  present and non-zero, and every weight is used. The batch holds a silent and a clipped
  row; loss and gradients stay finite. The source-filter decoder (``model.excitation``) is on,
  so its F0 head's terms are among them, and decoding codes alone uses that head's F0."""
  weights = dict(zip(sorted(set(WIRING.values())), (2.0, 3.0, 5.0, 7.0, 11.0, 13.0, 17.0,
                                                     19.0, 23.0, 29.0, 31.0, 37.0)))
  assert len(weights) == 12
  cfg = _config("tiny", "--config.model.excitation=True",
                *(f"--config.loss.{k}={v}" for k, v in weights.items()))
  task = task_lib.FACodecTask(cfg)
  batch = facodec_batch(cfg.data.segment_samples, task.model.hop_length)
  # Row 2 is silent (and unvoiced), row 3 clipped to +-1: no NaN from either.
  batch["audio"][2] = 0.0
  batch["voiced"][2] = False
  batch["audio"][3] = np.sign(batch["audio"][3])
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  params = jax.jit(lambda r: nn.meta.unbox(task.init_params(r, batch)))(
      jax.random.key(0))["generator"]
  key = jax.random.key(3)

  def total(p):
    return task.losses(p, batch, key, True)[0]

  def recombined(p):
    metrics = task.losses(p, batch, key, True)[1][0]
    return sum(weights[w] * metrics[m] for m, w in WIRING.items()), metrics

  (loss, grads), ((ref, metrics), ref_grads) = jax.jit(lambda p: (
      jax.value_and_grad(total)(p), jax.value_and_grad(recombined, has_aux=True)(p)))(params)
  for name in WIRING:
    assert float(metrics[name]) > 0, name
  np.testing.assert_allclose(float(loss), float(ref), rtol=1e-6)
  flat, ref_flat = jax.tree.leaves(grads), jax.tree.leaves(ref_grads)
  assert np.isfinite(float(loss)) and all(np.isfinite(np.asarray(g)).all() for g in flat)
  for g, r in zip(flat, ref_flat):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4,
                               atol=1e-6 * float(np.abs(np.asarray(r)).max() + 1e-12))
  assert float(jnp.sum(jnp.abs(grads["decoder"]["harmonic_head"]["kernel"]))) > 0


def test_reset_codebooks_restarts_each_quantizer_from_its_own_encodings():
  """`reset_codebooks` changes only codebooks; every restarted row of quantizer i is one of
  quantizer i's own lookup inputs on a valid frame (the residual stack's later quantizers
  code residuals, so their encodings differ), and the counts are the rows changed. The train
  step's schedule (restarts on due steps only) is checked on the CLI run
  (tests/test_facodec_cli.py)."""
  cfg = _config("tiny", "--config.dead_code_reset.every_steps=2",
                "--config.dead_code_reset.min_cosine=0.999")
  task = task_lib.FACodecTask(cfg)
  batch = {k: jnp.asarray(v) for k, v in
           facodec_batch(cfg.data.segment_samples, task.model.hop_length).items()}
  params = jax.jit(lambda r: nn.meta.unbox(task.init_params(r, batch)))(
      jax.random.key(0))["generator"]
  model = task.model

  @jax.jit
  def run(params):
    new, counts = task.reset_codebooks(params, batch, jax.random.key(2))
    return new, counts, model.apply({"params": params}, batch["audio"],
                                    method=model.codebook_encodings)

  new, counts, encodings = run(params)
  names = task._reset_names()  # pylint: disable=protected-access
  assert len(names) == 6 and set(counts) == set(names)
  hop = task.model.hop_length
  valid = (np.arange(next(iter(encodings.values())).shape[1])[None, :] * hop
           < np.asarray(batch["audio_len"])[:, None])
  changed = []
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(new)[0], jax.tree.leaves(params)):
    if not np.array_equal(np.asarray(a), np.asarray(b)):
      changed.append(jax.tree_util.keystr(path))
  assert changed and all(p.endswith("['codebook']") for p in changed), changed
  for scope, z in encodings.items():
    z = np.asarray(z)
    for i in range(z.shape[2]):
      before = np.asarray(params[scope][f"vq_{i}"]["codebook"])
      after = np.asarray(new[scope][f"vq_{i}"]["codebook"])
      rows = np.flatnonzero((before != after).any(axis=1))
      assert len(rows) == int(counts[f"codes/{scope[:-3]}_{i}/reset"])
      own = z[:, :, i][valid]
      for r in rows:
        assert np.isclose(own, after[r], atol=1e-6).all(axis=1).any(), (scope, i, r)


def test_label_checks_against_the_corpus(f0_corpus, tmp_path):
  """Heads smaller than the corpus' phoneme table or speaker ids, a codec hop that is not the
  corpus' label hop, or a corpus without F0 are one-line errors naming the field."""
  ok = task_lib.FACodecTask(_config("tiny", f"--config.data.dir={f0_corpus}"))
  assert ok.cfg.data.extra_features == ("phone_labels", "f0", "voiced")
  assert set(ok.example_batch(2)) == {"audio", "audio_len", "speaker_id", "phone_labels",
                                      "f0", "voiced"}
  with pytest.raises(ValueError, match="num_speakers=2"):
    task_lib.FACodecTask(_config("tiny", f"--config.data.dir={f0_corpus}",
                                 "--config.model.num_speakers=2"))
  with pytest.raises(ValueError, match="num_phones=3"):
    task_lib.FACodecTask(_config("tiny", f"--config.data.dir={f0_corpus}",
                                 "--config.model.num_phones=3"))
  with pytest.raises(ValueError, match="hop_length 200 but the FACodec hop is 160"):
    task_lib.FACodecTask(_config("tiny", f"--config.data.dir={f0_corpus}",
                                 "--config.model.encoder_strides=(8,20)"))
  from jaxtts.data.synthetic import write_synthetic_corpus
  plain = str(tmp_path / "no_f0")
  write_synthetic_corpus(plain, num_speakers=2, utterances_per_speaker=2, seed=0)
  with pytest.raises(Exception, match="'f0'.*jaxtts-corpus derive f0"):
    task_lib.FACodecTask(_config("tiny", f"--config.data.dir={plain}"))
  # Without F0 supervision the same corpus trains (no F0 labels asked for).
  no_f0 = task_lib.FACodecTask(_config("tiny", f"--config.data.dir={plain}",
                                       "--config.loss.f0_weight=0",
                                       "--config.loss.grl_f0_weight=0"))
  assert no_f0.cfg.data.extra_features == ("phone_labels",)
  # A corpus whose manifest lists no phone durations trains with the phone terms off.
  import json
  import shutil
  bare = tmp_path / "no_durations"
  shutil.copytree(f0_corpus, bare)
  manifest = json.loads((bare / "manifest.json").read_text())
  del manifest["features"]["durations"]
  (bare / "manifest.json").write_text(json.dumps(manifest))
  task = task_lib.FACodecTask(_config("tiny", f"--config.data.dir={bare}"))
  assert task.cfg.data.extra_features == ("f0", "voiced") and not task.use_phone


def test_presets_and_ablations():
  """The ablation rows switch what they name; unknown presets/ablations are errors."""
  paper = _config("paper")
  assert (paper.model.num_detail_quantizers, paper.model.code_dim, paper.loss.mel_weight,
          paper.loss.commitment_weight) == (3, 8, 10.0, 0.25)
  assert tuple(paper.train.optimizers.generator[k] for k in ("learning_rate", "b1", "b2")) == (
      2e-4, 0.5, 0.9)
  assert not _config("espeak+no_bottleneck").model.bottleneck
  assert _config("espeak+no_detail").model.num_detail_quantizers == 0
  no_grl = _config("espeak+no_grl")
  assert not no_grl.model.use_grl and no_grl.loss.grl_phone_weight == 0
  assert no_grl.loss.phone_weight == 5.0
  none = _config("espeak+no_supervision")
  assert none.loss.f0_weight == none.loss.phone_weight == none.loss.speaker_weight == 0
  assert _config("paper").dead_code_reset.every_steps == 0
  assert _config("espeak+dead_code_reset").dead_code_reset.every_steps == 50
  released = _config("paper+released")
  assert released.model.prosody_input == "mel20" and released.model.detach_prosody_content
  assert released.model.snake_beta and not paper.model.snake_beta
  with pytest.raises(ValueError, match="unknown ablation 'no_timbre'"):
    _config("espeak+no_timbre")
  with pytest.raises(ValueError, match="unknown preset 'large'"):
    _config("large")
  # A task without phone/F0 terms asks the corpus for no labels.
  assert task_lib.FACodecTask(_config("tiny+no_supervision")).cfg.data.extra_features == ()


# Released inference model (Amphion ns3_codec), counted from its code
# (../shared/research/ns3_facodec.md): encoder 4.21M, decoder 17.07M, 6 FVQs 0.08M, timbre +
# CLN 7.49M; one weight-normed FVQ 256 -> 8 -> 256 is 2,064 + 8,192 + 2,560 parameters. Ours
# adds Transformer-XL relative positions to the timbre attention (a D x D position projection
# and two D biases per layer: 4 x 66,048) and has no weight-norm gains in the FVQ projections.
RELEASED = {"encoder": 4.21e6, "decoder": 17.07e6, "quantizers": 6 * 12_816,
            "timbre": 7.49e6 + 4 * 66_048}


def test_paper_parameter_counts():
  from jaxtts.codec import facodec
  model = facodec.from_config(_config("paper"))
  shapes = jax.eval_shape(lambda r: nn.meta.unbox(model.init({"params": r},
                                                             jnp.zeros((1, 16000)))),
                          jax.random.key(0))["params"]
  count = {k: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(v)) for k, v in shapes.items()}
  parts = {"encoder": count["encoder"], "decoder": count["decoder"],
           "quantizers": count["prosody_vq"] + count["content_vq"] + count["detail_vq"],
           "timbre": count["timbre_encoder"] + count["timbre_norm"]}
  for part, want in RELEASED.items():
    assert abs(parts[part] - want) / want < 0.03, (part, parts[part], want)
  # SnakeBeta (+released) adds one per-channel parameter to every activation.
  released = facodec.from_config(_config("paper+released"))
  shapes_b = jax.eval_shape(lambda r: nn.meta.unbox(released.init({"params": r},
                                                                   jnp.zeros((1, 16000)))),
                            jax.random.key(0))["params"]
  alphas = sum(int(np.prod(x.shape)) for path, x in
               jax.tree_util.tree_flatten_with_path(shapes["encoder"])[0]
               if "alpha" in jax.tree_util.keystr(path))
  enc_b = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes_b["encoder"]))
  assert alphas > 0 and enc_b == count["encoder"] + alphas
  # The training heads: phone heads of the 114-symbol table, speaker heads of 8192 ids.
  assert count["timbre_speaker_head"] == count["grl_speaker_head"] == 257 * 8192 + 2 * 256
