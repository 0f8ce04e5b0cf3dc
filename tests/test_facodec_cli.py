"""FACodec from a trained workdir: the training logs, `jaxtts-codec encode / decode / convert /
encode-dataset`, bad codes and short prompts, and `jaxtts-eval codec`'s VC and probe tables."""

import json
import os

import numpy as np
import pytest

from conftest import run_python
from jaxtts.audio.io import load_wav, save_wav
from jaxtts.data import pipeline
from jaxtts.data.source import CorpusSource


def codec(*args, check=True):
  return run_python("-m", "jaxtts.codec.cli", *args, check=check)


def _wav(corpus, split, index, path):
  ex = CorpusSource(corpus, split).example(index)
  audio = ex["audio"].astype(np.float32) / 32768.0
  save_wav(path, audio, 16000)
  return audio, ex


def test_training_logs_every_head_and_codebook(facodec_run):
  """metrics.jsonl holds each head's loss and accuracy and every codebook's usage;
  params.json counts parameters per part."""
  with open(os.path.join(facodec_run["workdir"], "metrics.jsonl")) as f:
    lines = [json.loads(line) for line in f]
  train = [r for r in lines if "loss" in r][-1]
  for key in ("mel_loss", "codebook_loss", "commitment_loss", "prosody_f0_loss", "phone_loss",
              "phone_accuracy", "speaker_loss", "speaker_accuracy", "grl_content_f0_loss",
              "grl_detail_f0_loss", "grl_prosody_phone_accuracy", "grl_detail_phone_loss",
              "grl_speaker_loss", "spectrum_amplitude_loss"):
    assert np.isfinite(train[f"train/{key}"]), key
  for q in ("prosody_0", "content_0", "content_1", "detail_0", "detail_1", "detail_2"):
    assert 1.0 <= train[f"train/codes/{q}/perplexity"] <= 32.0
    assert train[f"train/codes/{q}/used"] >= 1
  assert any("valid/mel_distance" in r for r in lines)  # the sample step's metrics
  # dead_code_reset.every_steps=2 in the fixture: restarts on steps 2 and 4 only (the
  # codebooks of 32 start far from the tiny encoder's outputs).
  resets = {r["step"]: sum(v for k, v in r.items() if k.endswith("/reset"))
            for r in lines if any(k.endswith("/reset") for k in r)}
  assert resets[1] == resets[3] == 0 and resets[2] > 0, resets
  with open(os.path.join(facodec_run["workdir"], "params.json")) as f:
    modules = json.load(f)["groups"]["generator"]["modules"]
  assert {"encoder", "decoder", "prosody_vq", "content_vq", "detail_vq", "timbre_encoder",
          "timbre_norm", "content_phone_head", "grl_speaker_head"} <= set(modules)


def test_encode_decode_convert(facodec_run, tmp_path):
  """encode -> codes [F, 6] int32 in range and timbre [16]; decode gives F x hop samples;
  convert keeps the source's length; bad codes and a short prompt are one-line errors."""
  wd, corpus = facodec_run["workdir"], facodec_run["corpus"]
  src, _ = _wav(corpus, "test_zero_shot", 0, tmp_path / "src.wav")
  prompt, _ = _wav(corpus, "test_zero_shot", len(CorpusSource(corpus, "test_zero_shot")) - 1,
                   tmp_path / "prompt.wav")
  out = json.loads(codec("encode", "--workdir", wd, "--input", tmp_path / "src.wav", "--out",
                         tmp_path / "rep.npz").stdout.splitlines()[-1])
  frames = len(src) // 200
  assert out["fields"] == {"codes": [frames, 6], "timbre": [16]}
  with np.load(tmp_path / "rep.npz") as f:
    codes, timbre = f["codes"], f["timbre"]
  assert codes.dtype == np.int32 and codes.min() >= 0 and codes.max() < 32
  codec("decode", "--workdir", wd, "--input", tmp_path / "rep.npz", "--out", tmp_path / "d.wav")
  assert len(load_wav(str(tmp_path / "d.wav"), 16000)) == frames * 200
  result = json.loads(codec("convert", "--workdir", wd, "--source", tmp_path / "src.wav",
                            "--prompt", tmp_path / "prompt.wav", "--out",
                            tmp_path / "vc.wav").stdout.splitlines()[-1])
  converted = load_wav(str(tmp_path / "vc.wav"), 16000)
  assert result["samples"] == len(converted) == len(src)
  # The conversion is the source's codes decoded with the prompt's timbre.
  from jaxtts.codec.registry import load_codec
  loaded = load_codec(wd)
  want = loaded.decode({"codes": codes, "timbre": loaded.encode(prompt)["timbre"]})
  np.testing.assert_allclose(converted, want[:len(src)], atol=2e-4)  # 16-bit wav rounding
  assert not np.allclose(loaded.encode(prompt)["timbre"], timbre)

  np.savez(tmp_path / "bad.npz", codes=codes + 32, timbre=timbre)
  proc = codec("decode", "--workdir", wd, "--input", tmp_path / "bad.npz", "--out",
               tmp_path / "x.wav", check=False)
  assert proc.returncode == 2 and "0..31" in proc.stderr and "Traceback" not in proc.stderr
  np.savez(tmp_path / "bad.npz", codes=codes[:, :3], timbre=timbre)
  proc = codec("decode", "--workdir", wd, "--input", tmp_path / "bad.npz", "--out",
               tmp_path / "x.wav", check=False)
  assert proc.returncode == 2 and "'codes' must have shape ['F', 6]" in proc.stderr
  save_wav(tmp_path / "short.wav", prompt[:4000], 16000)
  proc = codec("convert", "--workdir", wd, "--source", tmp_path / "src.wav", "--prompt",
               tmp_path / "short.wav", "--out", tmp_path / "x.wav", check=False)
  assert proc.returncode == 2 and "too short for a timbre estimate" in proc.stderr
  assert "short.wav" in proc.stderr and "Traceback" not in proc.stderr


def test_encode_dataset_codes_and_timbre_read_by_the_pipeline(facodec_run, tmp_path):
  """encode-dataset writes codes [F, 6], timbre [16] and NS3's phone-level prosody codes
  [P, 1] per record; the Grain pipeline reads them back (bucket mode over codes, timbre and
  the phone-level codes as extra features, the latter padded to max_phonemes) equal to the
  codec's own encode of the same utterances. A crop-mode reader refuses phone-level fields."""
  wd, corpus = facodec_run["workdir"], facodec_run["corpus"]
  out = tmp_path / "codes"
  codec("encode-dataset", "--workdir", wd, "--data-dir", corpus, "--out", out, "--splits",
        "test_zero_shot")
  manifest = json.load(open(out / "manifest.json"))
  assert manifest["codes"]["codebook_sizes"] == [32] * 6 and manifest["codes"]["timbre_dim"] == 16
  cfg = pipeline.default_data_config()
  assert manifest["features"]["phone_prosody_codes"]["level"] == "phoneme"
  cfg.update(dir=str(out), mode="bucket", features="codes",
             extra_features=("timbre", "phone_prosody_codes"), bucket_samples=(64000,),
             max_phonemes=64)
  batch = next(iter(pipeline.make_dataset(cfg, "test_zero_shot", global_batch_size=2, seed=0,
                                          train=False, process_index=0, process_count=1)))
  assert batch["codes"].shape == (2, 320, 6) and batch["timbre"].shape == (2, 16)
  assert batch["phone_prosody_codes"].shape == (2, 64, 1)
  from jaxtts.codec.registry import load_codec
  loaded = load_codec(wd)
  src = CorpusSource(corpus, "test_zero_shot")
  ids = [src.example(i)["id"] for i in range(len(src))]
  stored = CorpusSource(str(out), "test_zero_shot")
  for i in range(2):
    ex = stored.example(i)
    enc = loaded.encode(src.example(ids.index(ex["id"]))["audio"].astype(np.float32) / 32768.0)
    np.testing.assert_array_equal(ex["codes"], enc["codes"])
    np.testing.assert_allclose(ex["timbre"], enc["timbre"], atol=1e-6)
    n = int(batch["code_len"][i])
    assert n == len(ex["codes"])
    phones = loaded.encode_phones(src.example(ids.index(ex["id"]))["audio"].astype(np.float32)
                                  / 32768.0, ex["durations"])["phone_prosody_codes"]
    p = int(batch["phoneme_len"][i])
    assert phones.shape == (len(ex["phonemes"]), 1) == (p, 1)
    np.testing.assert_array_equal(ex["phone_prosody_codes"], phones)
    np.testing.assert_array_equal(batch["phone_prosody_codes"][i, :p], phones)
    assert not batch["phone_prosody_codes"][i, p:].any()
  crop = pipeline.default_data_config()
  crop.update(dir=str(out), mode="crop", extra_features=("phone_prosody_codes",))
  with pytest.raises(ValueError, match="phoneme-level fields"):
    next(iter(pipeline.make_dataset(crop, "test_zero_shot", global_batch_size=2, seed=0,
                                    train=False, process_index=0, process_count=1)))


def test_eval_codec_reports_vc_and_probes(facodec_run, tmp_path):
  """`jaxtts-eval codec` on a FACodec: reconstruction table with MCD, the VC table and the
  probe table, and the converted audio."""
  proc = run_python("-m", "jaxtts.eval.cli", "codec", "--workdir", facodec_run["workdir"],
                    "--limit", "2", "--vc-pairs", "2", "--probe-utterances", "6",
                    "--asr-model", "none", "--no-progress", "--out", tmp_path / "eval",
                    "--metrics", "mel_distance", "mcd")
  assert "## Voice conversion" in proc.stdout and "## Disentanglement probes" in proc.stdout
  report = json.load(open(tmp_path / "eval" / "report.json"))
  assert [r["metric"] for r in report["table"]] == ["mel_distance", "mcd"]
  assert {(r["probe"], r["branch"]) for r in report["probe_table"]} == {
      ("phone accuracy", "content"), ("phone accuracy", "prosody"),
      ("speaker accuracy", "timbre"), ("speaker accuracy", "content"),
      ("F0 correlation", "prosody"), ("F0 correlation", "content")}
  assert len(report["vc_rows"]) == 2
  assert len(os.listdir(tmp_path / "eval" / "vc")) == 6
