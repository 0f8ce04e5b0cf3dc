"""Tests of jaxtts.eval.codec_metrics against real pesq / pystoi / visqol-python and NumPy."""

import sys

import librosa
import numpy as np
import pytest

from jaxtts.audio.io import resample
from jaxtts.eval import codec_metrics as cm
from jaxtts.text.espeak import synthesize

SR = 16000


@pytest.fixture(scope="module")
def speech_22k():
  """One espeak-ng sentence at its native 22.05 kHz, float in [-1, 1] (peak 0.5)."""
  syn = synthesize("The quick brown fox jumps over the lazy dog near the river bank.", seed=0)
  wav = np.asarray(syn.audio, np.float64)
  if np.issubdtype(np.asarray(syn.audio).dtype, np.integer):
    wav = wav / 32768.0
  return 0.5 * wav / np.max(np.abs(wav)), syn.sample_rate


@pytest.fixture(scope="module")
def speech(speech_22k):
  wav, rate = speech_22k
  out = np.asarray(resample(wav, rate, SR), np.float64)
  return np.clip(out, -1.0, 1.0)


@pytest.fixture(scope="module")
def noise(speech):
  rng = np.random.default_rng(0)
  n = rng.standard_normal(speech.shape[0])
  return 0.5 * n / np.max(np.abs(n))


@pytest.fixture(scope="module")
def noisy20(speech):
  """``speech`` plus white noise at an SNR of 20 dB."""
  rng = np.random.default_rng(1)
  n = rng.standard_normal(speech.shape[0])
  n *= np.sqrt(np.sum(speech ** 2) / np.sum(n ** 2) / 10 ** (20 / 10))
  return speech + n


# ------------------------------------------------------------------------------- SI-SDR


def _si_sdr_reference(e, r):
  """Le Roux et al. 2019, eq. (4)-(6), float64, no eps."""
  e = e - e.mean()
  r = r - r.mean()
  target = (e @ r) / (r @ r) * r
  return 10 * np.log10((target @ target) / ((e - target) @ (e - target)))


def test_si_sdr_analytic_value():
  rng = np.random.default_rng(2)
  r = rng.uniform(-0.5, 0.5, 8000)
  r -= r.mean()
  n = rng.standard_normal(8000)
  n -= n.mean()
  n -= (n @ r) / (r @ r) * r  # orthogonal to r, so the projection of a*r + n onto r is a*r
  n *= 0.01
  a = 0.7
  expected = 10 * np.log10(a ** 2 * (r @ r) / (n @ n))
  assert cm.si_sdr(a * r + n, r) == pytest.approx(expected, abs=1e-6)
  # A DC offset changes nothing (zero-mean definition).
  assert cm.si_sdr(a * r + n + 0.1, r - 0.05) == pytest.approx(expected, abs=1e-6)


def test_si_sdr_matches_numpy_reference_and_is_scale_invariant():
  rng = np.random.default_rng(3)
  r = rng.uniform(-0.5, 0.5, 4000)
  e = 0.3 * r + 0.05 * rng.standard_normal(4000)
  value = cm.si_sdr(e, r)
  assert value == pytest.approx(_si_sdr_reference(e, r), abs=1e-6)
  for c in (0.01, 0.5, -1.0, -2.0 / np.max(np.abs(e)) * 0.4):
    assert cm.si_sdr(c * e, r) == pytest.approx(value, abs=1e-3)  # up to the eps terms
  assert cm.si_sdr(e, 0.1 * r) == pytest.approx(value, abs=1e-5)


def test_si_sdr_identical_and_noisy(speech, noisy20, noise):
  assert cm.si_sdr(speech, speech) > 60
  assert cm.si_sdr(noisy20, speech) == pytest.approx(20.0, abs=0.5)
  assert cm.si_sdr(noise, speech) < -10


# ------------------------------------------------------------------------------- spectral


def test_mel_distance_matches_librosa_reference():
  rng = np.random.default_rng(4)
  sr = 22050
  r = 0.3 * np.sin(2 * np.pi * 220 * np.arange(6000) / sr) + 0.05 * rng.standard_normal(6000)
  e = r + 0.02 * rng.standard_normal(6000)
  expected = 0.0
  for w, m in zip(cm.spectral.DAC_WINDOW_LENGTHS, cm.spectral.DAC_N_MELS):
    kw = dict(sr=sr, n_fft=w, hop_length=w // 4, n_mels=m, power=1.0, center=True,
              pad_mode="reflect")
    me = librosa.feature.melspectrogram(y=e, **kw)
    mr = librosa.feature.melspectrogram(y=r, **kw)
    expected += np.mean(np.abs(np.log10(np.maximum(me, 1e-5)) - np.log10(np.maximum(mr, 1e-5))))
  assert cm.mel_distance(e, r, sr) == pytest.approx(expected, rel=2e-3)


def test_stft_distance_matches_librosa_reference():
  rng = np.random.default_rng(5)
  r = rng.uniform(-0.5, 0.5, 5000)
  e = 0.8 * r + 0.05 * rng.standard_normal(5000)
  expected = 0.0
  for w in (2048, 512):
    se = np.abs(librosa.stft(e, n_fft=w, hop_length=w // 4, center=True, pad_mode="reflect"))
    sr_ = np.abs(librosa.stft(r, n_fft=w, hop_length=w // 4, center=True, pad_mode="reflect"))
    expected += np.mean(np.abs(np.log10(np.maximum(se, 1e-5) ** 2) -
                               np.log10(np.maximum(sr_, 1e-5) ** 2)))
    expected += np.mean(np.abs(se - sr_))
  assert cm.multi_resolution_stft_distance(e, r) == pytest.approx(expected, rel=2e-3)


def test_spectral_distances_order(speech, noisy20, noise):
  assert cm.mel_distance(speech, speech, SR) == 0.0
  assert cm.multi_resolution_stft_distance(speech, speech) == 0.0
  mel20 = cm.mel_distance(noisy20, speech, SR)
  mel_noise = cm.mel_distance(noise, speech, SR)
  assert 0.0 < mel20 < mel_noise
  assert 0.0 < cm.multi_resolution_stft_distance(noisy20, speech) < \
      cm.multi_resolution_stft_distance(noise, speech)


# ------------------------------------------------------------------------------- perceptual


def test_perceptual_identical(speech):
  assert cm.pesq_wb(speech, speech, SR) > 4.4
  assert cm.stoi(speech, speech, SR) > 0.99
  assert cm.visqol(speech, speech, SR) > 4.5
  assert cm.visqol(speech, speech, SR, mapping="exponential") > 4.5


def test_perceptual_noise_low_and_snr20_in_between(speech, noisy20, noise):
  p_same, p20, p_noise = (cm.pesq_wb(x, speech, SR) for x in (speech, noisy20, noise))
  s_same, s20, s_noise = (cm.stoi(x, speech, SR) for x in (speech, noisy20, noise))
  v_same, v20, v_noise = (cm.visqol(x, speech, SR) for x in (speech, noisy20, noise))
  assert p_noise < 2.0 and s_noise < 0.5 and v_noise < 2.0
  assert p_noise < p20 < p_same
  assert s_noise < s20 < s_same
  assert v_noise < v20 < v_same


def test_resampled_rates(speech_22k):
  wav, rate = speech_22k
  assert rate != SR
  assert cm.pesq_wb(wav, wav, rate) > 4.4
  assert cm.visqol(wav, wav, rate) > 4.4
  assert cm.stoi(wav, wav, rate) > 0.99


# ------------------------------------------------------------------------------- silence, input


def test_silence(speech):
  z = np.zeros_like(speech)
  assert cm.mel_distance(z, z, SR) == 0.0
  assert cm.multi_resolution_stft_distance(z, z) == 0.0
  assert cm.si_sdr(z, z) == 0.0
  assert cm.si_sdr(z, speech) == 0.0
  assert np.isfinite(cm.si_sdr(speech, z)) and cm.si_sdr(speech, z) < -60
  assert np.isfinite(cm.mel_distance(z, speech, SR)) and cm.mel_distance(z, speech, SR) > 1
  assert np.isfinite(cm.multi_resolution_stft_distance(speech, z))
  for fn in (cm.pesq_wb, cm.stoi, cm.visqol):
    with pytest.raises(ValueError, match="silent reference"):
      fn(z, z, SR)
    with pytest.raises(ValueError, match="silent reference"):
      fn(speech, z, SR)
  assert cm.pesq_wb(z, speech, SR) == 1.0
  assert cm.stoi(z, speech, SR) == 0.0
  assert cm.visqol(z, speech, SR) == 1.0


def test_input_validation(speech):
  with pytest.raises(ValueError, match="lengths differ"):
    cm.si_sdr(speech[:-1], speech)
  with pytest.raises(ValueError, match="lengths differ"):
    cm.compute_all(speech, speech[:100], SR)
  with pytest.raises(ValueError, match="int16"):
    cm.pesq_wb((speech * 32767).astype(np.int16), speech, SR)
  with pytest.raises(ValueError, match="1-D"):
    cm.stoi(speech[None], speech[None], SR)
  with pytest.raises(ValueError, match=r"\[-1, 1\]"):
    cm.mel_distance(2 * speech / np.max(np.abs(speech)), speech, SR)
  bad = speech.copy()
  bad[3] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    cm.si_sdr(bad, speech)
  with pytest.raises(ValueError, match="at least"):
    cm.mel_distance(speech[:500], speech[:500], SR)


# ------------------------------------------------------------------------------- compute_all


def test_mcd_orders_noise_levels_and_ignores_gain(speech, noisy20):
  """MCD (mel-cepstral-distance, pad alignment): 0 for identical signals, larger for more
  noise, unchanged by a gain (the package peak-normalises), undefined for silence."""
  rng = np.random.default_rng(2)
  n = rng.standard_normal(speech.shape[0])
  noisy5 = speech + n * np.sqrt(np.sum(speech ** 2) / np.sum(n ** 2) / 10 ** 0.5)
  assert cm.mcd(speech, speech, SR) == pytest.approx(0.0, abs=1e-6)
  d20, d5 = cm.mcd(noisy20, speech, SR), cm.mcd(np.clip(noisy5, -1, 1), speech, SR)
  assert 0.5 < d20 < d5
  assert cm.mcd(0.5 * noisy20, speech, SR) == pytest.approx(d20, rel=1e-3)
  with pytest.raises(ValueError, match="silent"):
    cm.mcd(np.zeros_like(speech), speech, SR)


def test_compute_all(speech, noisy20):
  out = cm.compute_all(noisy20, speech, SR)
  assert list(out) == list(cm.ALL_METRICS)
  assert all(isinstance(v, float) and np.isfinite(v) for v in out.values())
  assert out["si_sdr"] == pytest.approx(cm.si_sdr(noisy20, speech))
  assert cm.compute_all(noisy20, speech, SR, metrics=("stoi",)) == {
      "stoi": cm.stoi(noisy20, speech, SR)}
  with pytest.raises(ValueError, match="unknown metrics"):
    cm.compute_all(speech, speech, SR, metrics=("si_sdr", "mos"))


def test_missing_package_raises_import_error(speech, monkeypatch):
  cm._visqol_api.cache_clear()
  monkeypatch.setitem(sys.modules, "visqol", None)  # makes `import visqol` fail
  try:
    with pytest.raises(ImportError, match=r"visqol-python.*jaxtts\[eval\]"):
      cm.visqol(speech, speech, SR)
    with pytest.raises(ImportError, match="visqol-python"):
      cm.compute_all(speech, speech, SR, metrics=("si_sdr", "visqol"))
  finally:
    cm._visqol_api.cache_clear()


def test_visqol_too_short_is_a_clear_error():
  rng = np.random.default_rng(0)
  t = np.arange(1600) / 16000.0
  ref = (0.3 * np.sin(2 * np.pi * 150 * t) + 0.01 * rng.standard_normal(1600)).astype(np.float32)
  with pytest.raises(ValueError, match="too short"):
    cm.visqol(ref, ref, 16000)
