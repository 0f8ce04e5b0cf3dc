"""Zero-shot TTS evaluation backends with the real models: Whisper-base (faster-whisper), GE2E
(Resemblyzer), a tiny random WavLM x-vector (transformers), DNSMOS (speechmos), pYIN."""

import os

import numpy as np
import pytest
import soundfile as sf

from conftest import run_python
from jaxtts.data.source import CorpusSource
from jaxtts.eval import asr, diversity, mos, speaker
from jaxtts.eval.backends import BackendUnavailableError, load_audio

SR = 16000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """12 espeak utterances: 3 training speakers x 3 + one zero-shot speaker x 3. Built in a
  child process: building in this one slows torch's LSTM (GE2E) down ~10x afterwards."""
  out = str(tmp_path_factory.mktemp("eval_backends") / "corpus")
  run_python("-m", "data_pipelines.espeak_corpus", "--out", out, "--speakers", 3,
             "--zero-shot-speakers", 1, "--utterances-per-speaker", 3, "--seed", 0,
             "--no-progress")
  return [src.example(i) for split in ("train", "valid", "test_zero_shot")
          for src in [CorpusSource(out, split)] for i in range(len(src))]


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
  return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def _tone(f0: float, seconds: float = 1.0) -> np.ndarray:
  t = np.arange(int(seconds * SR)) / SR
  return (0.3 * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3))).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Audio loading
# --------------------------------------------------------------------------------------------


def test_load_audio(tmp_path):
  stereo = np.stack([_tone(200.0), _tone(200.0)], axis=1)  # [T, 2]
  path = tmp_path / "a.wav"
  sf.write(path, stereo, 22050)
  wav = load_audio(str(path))
  assert wav.dtype == np.float32 and wav.shape == (round(SR * stereo.shape[0] / 22050),)
  pcm = np.array([16384, -32768], np.int16)
  np.testing.assert_allclose(load_audio(pcm, SR), [0.5, -1.0])
  with pytest.raises(ValueError, match="sample_rate is required"):
    load_audio(pcm)
  with pytest.raises(FileNotFoundError, match="missing.wav"):
    load_audio(str(tmp_path / "missing.wav"))
  (tmp_path / "bad.wav").write_bytes(b"not audio at all")
  with pytest.raises(ValueError, match="bad.wav"):
    load_audio(str(tmp_path / "bad.wav"))


# --------------------------------------------------------------------------------------------
# Text normalization and WER
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("Hello, World!", "hello world"),
    ("  MIXED   case\n text ", "mixed case text"),
    ("I don't know; it's fine.", "i don't know it's fine"),
    ("He paid 1,234 pounds.", "he paid one thousand two hundred thirty four pounds"),
    ("It rose 3.5% on the 21st.", "it rose three point five percent on the twenty first"),
    ("Salt & pepper, well-known 42", "salt and pepper well known forty two"),
    ("In 1984 she was 2nd", "in nineteen eighty four she was second"),
    ("\uff28\uff49 caf\u00e9 \u201cquoted\u201d", "hi cafe quoted"),  # NFKC full-width, diacritics
    ("?!", ""),
])
def test_normalize_text(text, expected):
  assert asr.normalize_text(text) == expected
  assert asr.normalize_text(expected) == expected


def test_word_error_rate_hand_computed():
  r = asr.word_error_rate(["the cat sat down"], ["the cat sat up"])
  assert r["wer"] == 0.25 and r["substitutions"] == 1 and r["num_words"] == 4
  assert r["cer"] == 4 / 16  # "down" -> "up": 2 substitutions + 2 deletions, spaces count
  r = asr.word_error_rate(["Hello, World!", "a b"], ["hello world", "a x b"])
  assert (r["wer"], r["insertions"], r["num_words"]) == (0.25, 1, 4)
  assert [u["wer"] for u in r["per_utterance"]] == [0.0, 0.5]
  r = asr.word_error_rate(["one two"], [""])
  assert (r["wer"], r["deletions"], r["cer"]) == (1.0, 2, 1.0)
  with pytest.raises(ValueError, match="reference 1"):
    asr.word_error_rate(["fine", "..."], ["fine", "x"])
  with pytest.raises(ValueError, match="2 references but 1"):
    asr.word_error_rate(["a", "b"], ["a"])


# --------------------------------------------------------------------------------------------
# Whisper
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def whisper_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("jaxtts_cache"))


def test_resolve_whisper_model(whisper_cache, tmp_path):
  path = asr.resolve_whisper_model("base", whisper_cache)
  assert path == os.path.join(whisper_cache, "whisper-base-ct2")
  data_dir = asr._package_data_dir  # pylint: disable=protected-access
  parts = [os.path.join(data_dir(p), f"model.bin.part{i}")
           for i, p in enumerate(asr.WHISPER_BASE_PACKAGES, 1)]
  model_bin = os.path.join(path, "model.bin")
  assert os.path.getsize(model_bin) == sum(os.path.getsize(p) for p in parts)
  with open(model_bin, "rb") as f:
    head = f.read(1 << 20)
  with open(parts[0], "rb") as f:
    assert f.read(1 << 20) == head
  assert sorted(os.listdir(path)) == ["config.json", "model.bin", "tokenizer.json",
                                      "vocabulary.txt"]
  stamp = os.stat(model_bin).st_mtime_ns, os.stat(model_bin).st_ino
  assert asr.resolve_whisper_model("base", whisper_cache) == path
  assert (os.stat(model_bin).st_mtime_ns, os.stat(model_bin).st_ino) == stamp
  assert os.listdir(whisper_cache) == ["whisper-base-ct2"]  # No temporary folders left.
  assert asr.resolve_whisper_model(path) == path  # A local folder is used as is.
  with open(model_bin, "r+b") as f:  # A damaged copy (wrong size) is assembled again.
    f.truncate(1000)
  assert asr.resolve_whisper_model("base", whisper_cache) == path
  assert os.path.getsize(model_bin) == sum(os.path.getsize(p) for p in parts)
  assert os.listdir(whisper_cache) == ["whisper-base-ct2"]
  with pytest.raises(BackendUnavailableError, match="local CTranslate2 model folder"):
    asr.resolve_whisper_model("large-v3", whisper_cache)
  with pytest.raises(BackendUnavailableError, match="missing model.bin, config.json"):
    asr.resolve_whisper_model(str(tmp_path))


@pytest.fixture(scope="module")
def whisper(whisper_cache):
  return asr.WhisperASR("base", cache_dir=whisper_cache)


def test_whisper_transcribes_espeak_speech(whisper, corpus):
  # The valid split and the zero-shot speaker: 6 utterances, 47 words. Whisper-base (int8)
  # scored 11/47 = 0.23 WER here (espeak voices, nonsense sentences), 0.40 on all 12.
  subset = corpus[6:]
  hyps = [whisper.transcribe(ex["audio"], SR) for ex in subset]
  r = asr.word_error_rate([ex["text"] for ex in subset], hyps)
  assert r["num_words"] == 47
  assert r["wer"] < 0.4, (r, hyps)
  assert r["per_utterance"][0]["wer"] < 0.2, hyps[0]


def test_whisper_on_noise_and_silence(whisper, corpus, tmp_path):
  path = str(tmp_path / "noise.wav")
  sf.write(path, _noise(3.0), SR)
  text = corpus[6]["text"]
  noise = asr.word_error_rate([text], [whisper.transcribe(path)])
  silence = asr.word_error_rate([text], [whisper.transcribe(np.zeros(3 * SR, np.int16), SR)])
  assert noise["wer"] >= 0.9 and silence["wer"] >= 0.9, (noise, silence)


# --------------------------------------------------------------------------------------------
# Speaker similarity
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ge2e():
  return speaker.get_speaker_encoder("ge2e")


def test_ge2e_separates_speakers(ge2e, corpus):
  emb = ge2e.embed_many([ex["audio"] for ex in corpus], SR)  # [12, 256]
  assert emb.shape == (12, 256) and emb.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
  assert speaker.speaker_similarity(ge2e, corpus[0]["audio"], corpus[0]["audio"], SR) > 0.999
  ids = np.array([ex["speaker_id"] for ex in corpus])
  sim = emb @ emb.T
  i, j = np.triu_indices(len(corpus), 1)
  same = sim[i, j][ids[i] == ids[j]].mean()
  cross = sim[i, j][ids[i] != ids[j]].mean()
  # Measured: same 0.88, cross 0.58.
  assert same > cross + 0.15, (same, cross)


def test_ge2e_refuses_silence_and_short_clips(ge2e):
  with pytest.raises(ValueError, match="silent"):
    ge2e.embed(np.zeros(SR, np.float32), SR)
  with pytest.raises(ValueError, match="after voice activity trimming"):
    ge2e.embed(_noise(0.2), SR)


def test_wavlm_encoder(tmp_path):
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  config = transformers.WavLMConfig(
      hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
      conv_dim=(32, 32), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
      num_conv_pos_embedding_groups=2, tdnn_dim=(32, 32), tdnn_kernel=(3, 1),
      tdnn_dilation=(1, 1), xvector_output_dim=16, num_buckets=32, max_bucket_distance=100)
  transformers.WavLMForXVector(config).save_pretrained(tmp_path)
  transformers.Wav2Vec2FeatureExtractor(
      feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=True,
      return_attention_mask=True).save_pretrained(tmp_path)
  enc = speaker.get_speaker_encoder("wavlm", str(tmp_path))
  a, b = enc.embed_many([_noise(1.0), _tone(150.0)], SR)
  assert a.shape == (16,) and enc.name == "wavlm"
  np.testing.assert_allclose([np.linalg.norm(a), np.linalg.norm(b)], 1.0, atol=1e-5)
  assert speaker.speaker_similarity(enc, _noise(1.0), _noise(1.0), SR) == pytest.approx(1.0)
  assert float(a @ b) < 0.9999
  with pytest.raises(BackendUnavailableError, match="not found"):
    speaker.get_speaker_encoder("wavlm", str(tmp_path / "nowhere"))
  with pytest.raises(ValueError, match="ge2e"):
    speaker.get_speaker_encoder("ecapa")


# --------------------------------------------------------------------------------------------
# DNSMOS
# --------------------------------------------------------------------------------------------


def test_dnsmos_speech_beats_noise(corpus):
  speech = mos.dnsmos(corpus[6]["audio"], SR)
  noise = mos.dnsmos(_noise(3.0), SR)
  assert set(speech) == set(mos.DNSMOS_KEYS)
  assert all(1.0 <= v <= 5.0 for v in list(speech.values()) + list(noise.values()))
  # Measured: speech OVRL 3.32, white noise 1.10.
  assert speech["ovrl_mos"] > noise["ovrl_mos"] + 1.0, (speech, noise)
  with pytest.raises(ValueError, match="empty"):
    mos.dnsmos(np.zeros(0, np.float32), SR)


# --------------------------------------------------------------------------------------------
# Diversity
# --------------------------------------------------------------------------------------------


def test_f0_contour_of_a_tone():
  f0 = diversity.f0_contour(_tone(150.0), SR)
  assert f0.shape == (101,)
  assert np.all(np.abs(f0[~np.isnan(f0)] - 150.0) < 3.0) and np.mean(np.isnan(f0)) < 0.1
  assert np.all(np.isnan(diversity.f0_contour(np.zeros(SR // 2, np.float32), SR)))


def test_sample_diversity():
  same = diversity.sample_diversity([_tone(120.0)] * 3, SR, durations=[np.array([3, 4, 5])] * 3)
  assert same["f0_mean_std_hz"] == 0.0 and same["f0_contour_distance_hz"] == 0.0
  assert same["duration_cv"] == 0.0 and same["phoneme_duration_std_frames"] == 0.0
  diff = diversity.sample_diversity([_tone(120.0, 1.0), _tone(180.0, 2.0)], SR,
                                    durations=[np.array([2, 4]), np.array([4, 4])])
  assert diff["f0_mean_std_hz"] == pytest.approx(30.0, abs=1.5)  # population std of 120, 180
  assert diff["f0_contour_distance_hz"] == pytest.approx(60.0, abs=3.0)
  assert diff["duration_cv"] == pytest.approx(1 / 3)  # std 0.5 s / mean 1.5 s
  assert diff["phoneme_duration_std_frames"] == pytest.approx(0.5)  # (1 + 0) / 2
  assert diff["num_unvoiced_samples"] == 0
  with pytest.raises(ValueError, match="at least 2"):
    diversity.sample_diversity([_tone(120.0)], SR)
  with pytest.raises(ValueError, match="one length"):
    diversity.sample_diversity([_tone(120.0)] * 2, SR, durations=[np.ones(2), np.ones(3)])
