"""`jaxtts-codec` on a tiny trained workdir: encode/decode, reconstruct, encode-dataset."""

import json
import os
import subprocess

import numpy as np
import pytest

from conftest import PYTHON, ROOT, subprocess_env
from jaxtts.audio.io import save_wav
from jaxtts.data import pipeline
from jaxtts.data.source import CorpusSource

TINY = os.path.join(ROOT, "configs", "gmm_vae.py") + ":tiny"


def codec(*args, check=True):
  proc = subprocess.run([PYTHON, "-m", "jaxtts.codec.cli", *map(str, args)],
                        env=subprocess_env(1), cwd=ROOT, capture_output=True, text=True,
                        timeout=600)
  if check:
    assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


@pytest.fixture(scope="module")
def workdir(synthetic_corpus, tmp_path_factory):
  wd = tmp_path_factory.mktemp("codec_workdir")
  proc = subprocess.run(
      [PYTHON, "-m", "jaxtts.train", "--config", TINY, "--workdir", str(wd),
       f"--config.data.dir={synthetic_corpus}", "--config.train.steps=2",
       "--config.train.batch_size=8", "--config.data.segment_samples=1600",
       "--config.train.eval_every_steps=0", "--config.train.sample_every_steps=0",
       "--config.logging.progress_bar=False", "--config.model.decoder_dim=16",
       "--config.model.encoder_strides=(8,25)",
       # The program of tests/test_train.py's runs: compiled once (persistent cache).
       "--config.discriminator.start_step=2"],
      env=subprocess_env(1), cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return str(wd)


def test_encode_decode_round_trip_shapes(workdir, tmp_path):
  wav = 0.3 * np.sin(2 * np.pi * 220 * np.arange(12345) / 16000).astype(np.float32)
  save_wav(tmp_path / "in.wav", wav, 16000)
  out = json.loads(codec("encode", "--workdir", workdir, "--input", tmp_path / "in.wav",
                         "--out", tmp_path / "lat.npy").stdout.splitlines()[-1])
  latents = np.load(tmp_path / "lat.npy")
  assert latents.shape == (-(-12345 // 200), 16) == (out["frames"], out["dim"])
  assert np.all(np.isfinite(latents))
  codec("decode", "--workdir", workdir, "--input", tmp_path / "lat.npy", "--out",
        tmp_path / "out.wav")
  import soundfile
  decoded, rate = soundfile.read(tmp_path / "out.wav")
  assert rate == 16000 and len(decoded) == latents.shape[0] * 200


def test_decode_rejects_wrong_latent_dim(workdir, tmp_path):
  np.save(tmp_path / "bad.npy", np.zeros((5, 7), np.float32))
  proc = codec("decode", "--workdir", workdir, "--input", tmp_path / "bad.npy", "--out",
               tmp_path / "x.wav", check=False)
  assert proc.returncode == 2 and "'latents' must have shape ['F', 16]" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_other_sample_rate_resampled_or_rejected(workdir, tmp_path):
  save_wav(tmp_path / "in22.wav", np.zeros(22050, np.float32) + 0.01, 22050)
  codec("encode", "--workdir", workdir, "--input", tmp_path / "in22.wav", "--out",
        tmp_path / "a.npy")
  assert np.load(tmp_path / "a.npy").shape == (80, 16)  # 1 s at 16 kHz / hop 200
  proc = codec("encode", "--workdir", workdir, "--input", tmp_path / "in22.wav", "--out",
               tmp_path / "b.npy", "--no-resample", check=False)
  assert proc.returncode != 0 and "in22.wav" in proc.stderr and "22050" in proc.stderr


def test_encode_dataset_is_readable_and_resumable(workdir, synthetic_corpus, tmp_path):
  out = tmp_path / "latents"
  first = json.loads(codec("encode-dataset", "--workdir", workdir, "--data-dir",
                           synthetic_corpus, "--out", out, "--splits", "valid",
                           "test_zero_shot").stdout.splitlines()[-1])
  assert first["shards_written"] > 0 and first["shards_skipped"] == 0
  again = json.loads(codec("encode-dataset", "--workdir", workdir, "--data-dir",
                           synthetic_corpus, "--out", out, "--splits", "valid",
                           "test_zero_shot").stdout.splitlines()[-1])
  assert again["shards_written"] == 0 and again["shards_skipped"] == first["shards_written"]
  manifest = json.load(open(out / "manifest.json"))
  assert manifest["latents"]["dim"] == 16 and manifest["latents"]["hop_length"] == 200
  src, ref = CorpusSource(str(out), "test_zero_shot"), CorpusSource(synthetic_corpus,
                                                                     "test_zero_shot")
  assert len(src) == len(ref)
  for i in range(len(src)):
    ex, orig = src.example(i), ref.example(i)
    assert ex["id"] == orig["id"] and ex["latents"].shape == (len(orig["audio"]) // 200, 16)
  cfg = pipeline.default_data_config()
  cfg.dir, cfg.segment_samples = str(out), 1600
  batch = next(iter(pipeline.make_dataset(cfg, "test_zero_shot", global_batch_size=4, seed=0,
                                          train=False, process_index=0, process_count=1)))
  assert batch["audio"].shape == (4, 1600)
  # The shards hold what the codec's own encode gives for the same utterances.
  from jaxtts.codec.registry import load_codec
  loaded = load_codec(workdir)
  for i in range(len(src)):
    audio = ref.example(i)["audio"].astype(np.float32) / 32768.0
    np.testing.assert_allclose(src.example(i)["latents"], loaded.encode(audio)["latents"],
                               rtol=0, atol=1e-6)
  assert manifest["features"]["latents"]["dtype"] == "float32"
  assert manifest["codec"]["representation"]["kind"] == "continuous"


def test_inference_imports_no_trainer():
  """Codecs and generators load from a workdir without the trainer or the tasks."""
  code = ("import sys, jaxtts.codec.registry, jaxtts.codec.gmm_vae_codec, jaxtts.codec.cli, "
          "jaxtts.infer.registry, jaxtts.infer.gmm_lm, jaxtts.gmm_lm.decode; "
          "print([m for m in sys.modules if m.startswith(('jaxtts.train', 'jaxtts.tasks'))])")
  proc = subprocess.run([PYTHON, "-c", code], env=subprocess_env(1), cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_workdir_errors_are_one_line(workdir, tmp_path):
  save_wav(tmp_path / "in.wav", np.zeros(1600, np.float32), 16000)
  for wd, text in ((tmp_path / "nothing", "no config.json"),):
    proc = codec("encode", "--workdir", wd, "--input", tmp_path / "in.wav", "--out",
                 tmp_path / "x.npy", check=False)
    assert proc.returncode == 2 and text in proc.stderr and "Traceback" not in proc.stderr
  proc = codec("encode", "--workdir", workdir, "--input", tmp_path / "missing.wav", "--out",
               tmp_path / "x.npy", check=False)
  assert proc.returncode == 2 and "missing.wav" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_pitch_in_latent_is_the_world_f0_of_each_utterance(chain):
  """The chain's codec (`make demo`'s form: ``model.f0_source='latent'``): every latent shard
  written by encode-dataset ends in ``(v (log f0 - 5), 2 v - 1)`` of WORLD's F0 of that
  utterance's audio (`jaxtts.audio.f0.compute_f0`, NumPy), and `Codec.encode` of the same audio
  gives the same latents."""
  from jaxtts.audio.f0 import compute_f0  # pylint: disable=import-outside-toplevel
  from jaxtts.codec.registry import load_codec  # pylint: disable=import-outside-toplevel
  source = CorpusSource(chain["latents"], "test_zero_shot")
  model = load_codec(chain["codec"])
  assert model.model.pitch_in_latent
  for i in range(2):
    ex = source.example(i)
    audio = ex["audio"].astype(np.float32) / 32768.0
    f0, voiced = compute_f0(audio, 16000, 200)
    n = min(len(f0), ex["latents"].shape[0])
    want = np.stack([voiced * (np.log(np.where(voiced, f0, 1.0)) - 5.0), 2.0 * voiced - 1.0], -1)
    np.testing.assert_allclose(ex["latents"][:n, -2:], want[:n], atol=1e-5)
    assert np.all(ex["latents"][n:, -1] == -1.0)  # frames past WORLD's: unvoiced
    np.testing.assert_allclose(model.encode(audio)["latents"], ex["latents"], atol=1e-5)
