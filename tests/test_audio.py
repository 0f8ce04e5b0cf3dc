"""Audio I/O, STFT / mel against librosa, and DAC's multi-scale mel loss."""

import functools
import os

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import soundfile as sf

from jaxtts.audio import io as audio_io
from jaxtts.audio import spectral

SR = 16000
# Measured on CPU (float32): max |JAX - librosa| / max |librosa| is ~1.3e-7 for the STFT and
# ~2e-7 for the mel spectrogram; asserted with margin.
STFT_RTOL = 1e-5
MEL_RTOL = 1e-5


def _noise(shape, seed=0, scale=0.3):
  return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


@pytest.mark.parametrize("n_fft, hop, win", [
    (512, 128, 512), (400, 160, 400), (1024, 256, 800), (32, 8, 32), (2048, 512, 2048),
    (300, 70, 256),  # hop does not divide n_fft: the gather framing path
])
def test_stft_matches_librosa(n_fft, hop, win):
  x = _noise((2, 4001))
  got = np.asarray(jax.jit(functools.partial(
      spectral.stft, n_fft=n_fft, hop_length=hop, win_length=win))(x))
  want = librosa.stft(x, n_fft=n_fft, hop_length=hop, win_length=win, center=True,
                      pad_mode="reflect").swapaxes(-1, -2)
  assert got.shape == want.shape == (2, spectral.num_frames(4001, hop), n_fft // 2 + 1)
  assert np.abs(got - want).max() <= STFT_RTOL * np.abs(want).max()


@pytest.mark.parametrize("n_fft, hop, win, length", [
    (800, 200, None, None), (512, 128, 400, None), (300, 120, None, None),  # shifted adds
    (300, 70, 256, None),  # hop does not divide n_fft: the scatter-add path
    (512, 128, None, 4001), (512, 128, None, 3000),  # librosa's length: pad, then trim
])
def test_istft_matches_librosa(n_fft, hop, win, length):
  """The inverse of random complex spectra (not only of STFTs) equals librosa.istft; the
  imaginary parts of the DC and Nyquist bins are ignored by both."""
  rng = np.random.default_rng(3)
  spec = (rng.standard_normal((2, 30, n_fft // 2 + 1))
          + 1j * rng.standard_normal((2, 30, n_fft // 2 + 1))).astype(np.complex64)
  got = np.asarray(jax.jit(functools.partial(
      spectral.istft, n_fft=n_fft, hop_length=hop, win_length=win, length=length))(spec))
  want = librosa.istft(spec.swapaxes(-1, -2), n_fft=n_fft, hop_length=hop, win_length=win,
                       center=True, length=length)
  assert got.shape == want.shape == (2, length or 29 * hop)
  assert np.abs(got - want).max() <= STFT_RTOL * np.abs(want).max()


@pytest.mark.parametrize("n_fft, hop", [(800, 200), (300, 70)])
def test_istft_inverts_stft(n_fft, hop):
  """Perfect reconstruction: stft then istft gives the signal back, with centred frames over
  the whole signal and with Vocos' 'same' frames (frame i starts at i*hop - (n_fft-hop)//2;
  the analysis zero-pads the signal by that much) over N * hop samples."""
  x = _noise((2, 40 * hop), seed=4)
  back = np.asarray(spectral.istft(spectral.stft(x, n_fft, hop), n_fft, hop, length=x.shape[1]))
  np.testing.assert_allclose(back, x, atol=2e-6)
  pad = (n_fft - hop) // 2
  padded = np.pad(x, ((0, 0), (pad, n_fft)))
  frames = spectral.stft(padded, n_fft, hop, center=False)[:, :40]  # N = 40 frames
  same = np.asarray(spectral.istft(frames, n_fft, hop, padding="same"))
  assert same.shape == x.shape
  np.testing.assert_allclose(same, x, atol=2e-6)


def test_istft_rejects_bad_input():
  with pytest.raises(ValueError, match="expects"):
    spectral.istft(jnp.zeros((1, 4, 10), jnp.complex64), 32, 8)
  with pytest.raises(ValueError, match="padding"):
    spectral.istft(jnp.zeros((1, 4, 17), jnp.complex64), 32, 8, padding="valid")


@pytest.mark.parametrize("n_fft, hop, win, n_mels, fmax", [
    (1024, 256, 1024, 80, None), (400, 160, 400, 40, 7600.0), (256, 64, 256, 20, None),
])
def test_mel_matches_librosa(n_fft, hop, win, n_mels, fmax):
  x = _noise((2, 3000), seed=1)
  kwargs = dict(sample_rate=SR, n_fft=n_fft, hop_length=hop, win_length=win, n_mels=n_mels,
                fmax=fmax)
  got = np.asarray(jax.jit(functools.partial(spectral.mel_spectrogram, **kwargs))(x))
  want = librosa.feature.melspectrogram(
      y=x, sr=SR, n_fft=n_fft, hop_length=hop, win_length=win, n_mels=n_mels, fmax=fmax,
      center=True, pad_mode="reflect", power=1.0).swapaxes(-1, -2)
  assert got.shape == want.shape
  assert np.abs(got - want).max() <= MEL_RTOL * np.abs(want).max()
  log_got = np.asarray(spectral.log_mel_spectrogram(x, **kwargs))
  np.testing.assert_allclose(log_got, np.log(np.maximum(want, 1e-5)), atol=1e-4)
  np.testing.assert_array_equal(
      spectral.mel_filterbank(SR, n_fft, n_mels, 0.0, fmax),
      librosa.filters.mel(sr=SR, n_fft=n_fft, n_mels=n_mels, fmax=fmax).T)


def test_mel_config_and_bf16_input():
  cfg = spectral.MelConfig(sample_rate=SR, n_fft=512, hop_length=128, n_mels=40)
  x = _noise((1, 2048), seed=2)
  x16 = jnp.asarray(x, jnp.bfloat16)
  got = jax.jit(cfg.log_mel)(x16)  # bound method of a frozen dataclass: jittable
  assert got.dtype == jnp.float32 and got.shape == (1, cfg.num_frames(2048), 40)
  want = spectral.log_mel_spectrogram(np.asarray(x16, np.float32), **cfg.kwargs())
  np.testing.assert_allclose(got, want, atol=1e-5)  # bf16 values, float32 arithmetic


def _dac_mel_loss_reference(pred, target, window_lengths, n_mels):
  """descript-audio-codec MelSpectrogramLoss (log10 term, pow 1) with librosa spectrograms."""
  total = 0.0
  for w, m in zip(window_lengths, n_mels):
    mels = [librosa.feature.melspectrogram(y=s, sr=SR, n_fft=w, hop_length=w // 4,
                                           win_length=w, n_mels=m, center=True,
                                           pad_mode="reflect", power=1.0)
            for s in (pred, target)]
    logs = [np.log10(np.maximum(mel, 1e-5)) for mel in mels]
    total += np.mean(np.abs(logs[0] - logs[1]))
  return total


WINDOWS, N_MELS = (32, 128, 512, 2048), (5, 20, 80, 320)
# One jitted loss shared by the tests below (static configuration closed over).
_LOSS = jax.jit(functools.partial(spectral.multiscale_mel_loss, sample_rate=SR,
                                  window_lengths=WINDOWS, n_mels=N_MELS))


def test_multiscale_mel_loss():
  target = _noise((2, 6000), seed=3)
  pred = target + _noise((2, 6000), seed=4, scale=0.05)
  assert float(_LOSS(target, target)) == 0.0
  loss = float(_LOSS(pred, target))
  assert loss > 0.0
  np.testing.assert_allclose(loss, _dac_mel_loss_reference(pred, target, WINDOWS, N_MELS),
                             rtol=1e-4)
  # bf16 inputs are accepted (computed in float32).
  assert np.isfinite(float(_LOSS(pred.astype(jnp.bfloat16), target.astype(jnp.bfloat16))))


def test_multiscale_mel_loss_mask_ignores_padding_and_grads_are_finite():
  length, valid = 6000, np.array([6000, 3500])
  mask = (np.arange(length)[None, :] < valid[:, None]).astype(np.float32)
  target = _noise((2, length), seed=5)
  pred = target + _noise((2, length), seed=6, scale=0.05)
  garbage = _noise((2, length), seed=7, scale=1.0)
  pad = 1.0 - mask
  base = float(_LOSS(pred * mask, target * mask, mask=mask))
  noisy = float(_LOSS(pred * mask + garbage * pad, target * mask - garbage * pad, mask=mask))
  assert base > 0
  np.testing.assert_allclose(noisy, base, rtol=1e-6)
  unmasked = float(_LOSS(pred * mask + garbage * pad, target * mask - garbage * pad))
  assert abs(unmasked - base) > 1e-3  # without the mask the padding does count
  # The masked mean only covers frames centred on valid samples.
  fm = spectral.frame_mask_from_sample_mask(mask, 128)
  assert fm.shape == (2, 1 + length // 128)
  np.testing.assert_array_equal(fm.sum(-1), [-(-6000 // 128), -(-3500 // 128)])
  # The padded tail is all zeros, so |STFT| = 0 there: gradients must stay finite.
  grad = jax.jit(jax.grad(lambda p: _LOSS(p, target * mask, mask=mask)))(pred * mask)
  assert np.all(np.isfinite(grad)) and float(jnp.abs(grad).sum()) > 0
  np.testing.assert_array_equal(np.asarray(grad)[1, 3500:], 0.0)


def test_save_load_round_trip(tmp_path):
  t = np.arange(SR // 2) / SR
  wav = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
  wav[:4] = [-1.0, 0.9999, 1.5, -2.0]  # clipping
  path = tmp_path / "sub" / "a.wav"
  audio_io.save_wav(path, wav, SR)
  info = sf.info(str(path))
  assert info.subtype == "PCM_16" and info.samplerate == SR and info.channels == 1
  assert audio_io.wav_sample_rate(path) == SR
  back = audio_io.load_wav(path, SR)
  assert back.dtype == np.float32 and back.shape == wav.shape
  ref = np.clip(wav, -1.0, 32767 / 32768)
  assert np.abs(back - ref).max() <= 0.5 / 32768 + 1e-9
  np.testing.assert_array_equal(audio_io.load_wav(path), back)


def test_load_wav_wrong_rate_and_resampling(tmp_path):
  sr = 22050
  t = np.arange(sr) / sr
  wav = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
  path = tmp_path / "b.wav"
  audio_io.save_wav(path, wav, sr)
  with pytest.raises(ValueError) as err:
    audio_io.load_wav(path, SR, resample=False)
  msg = str(err.value)
  assert os.fspath(path) in msg and "22050" in msg and "16000" in msg
  out = audio_io.load_wav(path, SR)
  assert out.dtype == np.float32 and out.shape == (SR,)
  ref = 0.5 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)
  np.testing.assert_allclose(out[500:-500], ref[500:-500], atol=2e-3)
  np.testing.assert_array_equal(audio_io.resample(wav, sr, sr), wav)
  assert audio_io.resample(wav, sr, 8000).shape == (8000,)


def test_load_wav_stereo_to_mono(tmp_path):
  left, right = _noise(1000, seed=8, scale=0.2), _noise(1000, seed=9, scale=0.2)
  path = tmp_path / "c.wav"
  sf.write(str(path), np.stack([left, right], axis=1), SR, subtype="FLOAT")
  np.testing.assert_allclose(audio_io.load_wav(path), (left + right) / 2, atol=1e-7)
