"""`jaxtts-train` on every real-corpus layout: each fixture tree (data_pipelines/fixtures.py) is
built once by `jaxtts-corpus <corpus>` (its `main`, in this process), then the tiny codec trains on it
(`python -m jaxtts.train`): LibriSpeech with TextGrid durations, LibriTTS resampled from 24 kHz
without durations, LibriLight from LibriHeavy cuts, and LibriLight's untranscribed VAD pieces.
The codec trains without discriminators (one compiled step: tracing, which the compilation
cache does not save, is most of a 2-step run); the trainer tests cover both parameter groups."""

import json
import math
import os

import pytest

from conftest import PYTHON
from data_pipelines import fixtures
from data_pipelines.espeak_corpus import main as corpus_main
from jaxtts.data.source import read_manifest
from train_helpers import losses, run, train_cmd

pytestmark = pytest.mark.slow

COMMON = ["--seed", "0", "--shard-size", "4", "--valid-fraction", "0.34", "--max-seconds", "6",
          "--no-progress"]


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
  return fixtures.build_all(str(tmp_path_factory.mktemp("trees")))


def _builds(fx):
  return {
      "librispeech": ["librispeech", "--root", fx["librispeech"], "--split",
                      "train=train-clean-100", "--split", "test_zero_shot=test-clean",
                      "--alignments", fx["alignments"]],
      "libritts": ["libritts", "--root", fx["libritts"], "--split", "train=train-clean-100",
                   "--split", "test_zero_shot=test-clean"],
      "librilight": ["librilight", "--root", fx["librilight"], "--cuts",
                     f"train={fx['cuts']['small']}", "--cuts",
                     f"test_zero_shot={fx['cuts']['test_clean']}"],
      "librilight_vad": ["librilight", "--root", fx["librilight"], "--split", "train=small",
                         "--split", "test_zero_shot=medium"],
  }


@pytest.fixture(scope="module")
def built(trees, tmp_path_factory):
  """name -> corpus dir, each built on first use (`jaxtts-corpus` exit status 0)."""
  out = {}

  def get(name):
    if name not in out:
      corpus = str(tmp_path_factory.mktemp(name) / "corpus")
      assert corpus_main([*_builds(trees)[name], "--out", corpus, *COMMON]) == 0
      out[name] = corpus
    return out[name]

  return get


@pytest.mark.parametrize("name", ["librispeech", "libritts", "librilight", "librilight_vad"])
def test_jaxtts_train_trains_on_each_built_corpus(built, tmp_path, name):
  corpus = built(name)
  manifest = read_manifest(corpus)
  stored = set(manifest["features"])
  assert ("durations" in stored) == (name == "librispeech")
  assert ("phonemes" in stored) == (name != "librilight_vad")
  assert manifest["splits"]["train"]["num_examples"] > 0
  workdir = tmp_path / "train"
  run(train_cmd(workdir, corpus, 2, **{"discriminator.enabled": False}))
  got = losses(workdir)
  assert sorted(got) == [1, 2] and all(math.isfinite(v) for v in got.values())
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    assert json.load(f)["data"]["dir"] == corpus
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))


def test_clone_trains_by_mas_on_a_corpus_without_durations(built, tmp_path):
  """A TTS family on a real layout: CLONE with its own monotonic alignment search
  (``model.alignment='mas'``) on the LibriTTS corpus, which has no durations; the sample step
  reconstructs through the model's MAS path instead of recorded durations."""
  corpus = built("libritts")
  workdir = tmp_path / "clone"
  run([PYTHON, "-m", "jaxtts.train", "--config", "configs/clone.py:tiny", "--workdir",
       str(workdir), f"--config.data.dir={corpus}", "--config.model.alignment=mas",
       "--config.train.steps=2", "--config.train.eval_every_steps=0",
       "--config.train.sample_every_steps=2", "--config.checkpoint.every_steps=2",
       "--config.data.eval_split=test_zero_shot", "--config.logging.progress_bar=False",
       "--config.data.bucket_samples=(96000,)"])
  with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == [1, 2]
  for r in rows:
    assert math.isfinite(r["loss"]) and math.isfinite(r["train/aligner_loss"])
    assert "train/mas_durations_within_1" not in r  # nothing recorded to agree with
  sample = workdir / "samples" / "step_0000002" / "sample_0"
  assert {"mel_reconstruction.png", "mel_synthesis.png"} <= set(os.listdir(sample))
  assert not any(n.startswith("durations") for n in os.listdir(sample))
