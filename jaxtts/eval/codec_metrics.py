"""Codec reconstruction metrics: mel / STFT distances, SI-SDR, PESQ, STOI, ViSQOL, MCD.

Every metric compares an ``estimate`` (e.g. a codec reconstruction) with its ``reference``
(the original recording). Inputs are host-side 1-D float arrays (NumPy, JAX or lists) with
values in ``[-1, 1]`` and the same length; otherwise a ``ValueError`` says what is wrong
(integer PCM such as int16 is refused: divide by 32768 first). Every function returns a
Python ``float``.

Which way is better:

===========================  ===========  ==================================================
metric                       better       identical signals
===========================  ===========  ==================================================
``mel_distance``             lower        0.0
``multi_resolution_stft_..`` lower        0.0
``si_sdr`` (dB)              higher       ~10*log10(||r||^2 / 1e-8), > 60 dB for real audio
``pesq_wb`` (MOS-LQO)        higher       4.644 (the top of the P.862.2 mapping)
``stoi``                     higher       1.0
``visqol`` (MOS-LQO)         higher       ~4.55 with the lattice mapper (C++ v3.3 default),
                                          5.0 with the exponential mapper
``mcd`` (dB)                 lower        0.0
===========================  ===========  ==================================================

Silence. A signal is *silent* when its peak ``|x|`` is below ``SILENCE_PEAK`` (1e-5, under
one 16-bit step). No metric returns NaN:

* ``mel_distance`` / ``multi_resolution_stft_distance``: spectra are floored at 1e-5 before
  the log, so both silent gives 0.0 and one silent gives a finite (large) distance.
* ``si_sdr``: both energies carry ``eps = 1e-8``; both silent gives 0 dB, a silent estimate
  gives 0 dB, a silent reference with a non-silent estimate gives a large negative value
  ``10*log10(eps / (||e||^2 + eps))``.
* ``pesq_wb``, ``stoi``, ``visqol`` are judgements of the estimate relative to the speech in
  the reference and are undefined without it: a silent reference raises ``ValueError``
  (P.862 itself reports "no utterances detected"). A silent estimate of a non-silent
  reference gets the bottom of each scale: PESQ 1.0, STOI 0.0, ViSQOL 1.0 (the libraries
  themselves crash or return NaN there).

PESQ and ViSQOL (speech mode) run at 16 kHz: other rates are resampled with
``jaxtts.audio.io.resample`` (soxr HQ). STOI is given the native rate (``pystoi`` resamples
to 10 kHz itself). The mel and STFT distances use the native rate, as DAC does at 44.1 kHz,
so they are comparable only between systems evaluated at the same rate.

MCD (mel-cepstral distortion, dB) is the ``mel-cepstral-distance`` package's
``compare_audio_files`` (Kominek et al. 2008's formula over MFCCs 1-15 of a 20-band mel
spectrum, 32 ms windows, 8 ms hop, peak-normalised signals) with ``aligning="pad"``: a
reconstruction is frame-aligned with its reference, so no DTW. NaturalSpeech 3 reports MCD
(Table 3) without naming an implementation; figures from different implementations differ.

The third-party metrics need the ``eval`` extra (``pip install 'jaxtts[eval]'``): ``pesq``,
``pystoi`` and ``visqol-python[lattice]`` (pure-Python ViSQOL v3.3 port, import name
``visqol``; the ``lattice`` extra brings ``ai-edge-litert`` for the speech-mode lattice
mapper). They are imported lazily; a missing one raises ``ImportError`` naming the package.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from typing import Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxtts.audio import spectral
from jaxtts.audio.io import resample

SILENCE_PEAK = 1e-5
SI_SDR_EPS = 1e-8
PESQ_SAMPLE_RATE = 16000
VISQOL_SAMPLE_RATE = 16000
STFT_WINDOW_LENGTHS = (2048, 512)

ALL_METRICS = ("mel_distance", "stft_distance", "si_sdr", "pesq_wb", "stoi", "visqol", "mcd")

_EVAL_EXTRA = "pip install 'jaxtts[eval]'"


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _as_signal(x, name: str) -> np.ndarray:
  arr = np.asarray(x)
  if arr.ndim != 1:
    raise ValueError(f"{name} must be a 1-D waveform, got shape {arr.shape}")
  if arr.size == 0:
    raise ValueError(f"{name} is empty")
  if not np.issubdtype(arr.dtype, np.floating):
    raise ValueError(f"{name} must be a float waveform in [-1, 1], got dtype {arr.dtype} "
                     "(for int16 PCM divide by 32768)")
  arr = arr.astype(np.float64)
  if not np.all(np.isfinite(arr)):
    raise ValueError(f"{name} contains NaN or infinite samples")
  peak = float(np.max(np.abs(arr)))
  if peak > 1.0:
    raise ValueError(f"{name} must lie in [-1, 1], but its peak is {peak:.4g} "
                     "(clip or normalise it first)")
  return arr


def _check_pair(estimate, reference):
  est = _as_signal(estimate, "estimate")
  ref = _as_signal(reference, "reference")
  if est.shape != ref.shape:
    raise ValueError(f"estimate and reference lengths differ: {est.shape[0]} vs "
                     f"{ref.shape[0]} samples (trim or pad them to the same length)")
  return est, ref


def _check_rate(sample_rate) -> int:
  if int(sample_rate) != sample_rate or int(sample_rate) <= 0:
    raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
  return int(sample_rate)


def is_silent(x) -> bool:
  """``True`` when the peak ``|x|`` is below ``SILENCE_PEAK`` (1e-5)."""
  return float(np.max(np.abs(np.asarray(x, np.float64)))) < SILENCE_PEAK


def _require_speech_reference(ref: np.ndarray, metric: str) -> None:
  if is_silent(ref):
    raise ValueError(f"{metric} is undefined for a silent reference (peak |x| < "
                     f"{SILENCE_PEAK:g}): it rates the estimate against the speech in it")


def _to_rate(x: np.ndarray, sample_rate: int, target: int) -> np.ndarray:
  return np.asarray(resample(x, sample_rate, target), np.float64)


# --------------------------------------------------------------------------------------------
# Spectral distances (JAX)
# --------------------------------------------------------------------------------------------


def mel_distance(estimate, reference, sample_rate: int, *,
                 window_lengths: Sequence[int] = spectral.DAC_WINDOW_LENGTHS,
                 n_mels: Sequence[int] = spectral.DAC_N_MELS) -> float:
  """DAC's "mel distance": its ``MelSpectrogramLoss`` used as a metric (lower is better).

  For each scale ``s`` with window ``w_s`` in (32, 64, 128, 256, 512, 1024, 2048) and
  ``m_s`` in (5, 10, 20, 40, 80, 160, 320) mel bins (descript-audio-codec ``conf/base.yml``:
  ``mag_weight=0``, ``log_weight=1``, ``pow=1``, ``clamp_eps=1e-5``, mel band 0..Nyquist):

    M_s(x) = mel filterbank (Slaney, librosa) of |STFT(x)|, n_fft = win = w_s, hop = w_s // 4,
             periodic Hann window, reflect-padded centred frames
    D = sum_s mean_{frames, bins} |log10(max(M_s(e), 1e-5)) - log10(max(M_s(r), 1e-5))|

  computed by ``jaxtts.audio.spectral.multiscale_mel_loss`` at ``sample_rate`` (no
  resampling; DAC reports it at 44.1 kHz). Identical signals give 0; both silent give 0.
  Needs more than ``max(window_lengths) // 2`` samples (the reflect padding).
  """
  est, ref = _check_pair(estimate, reference)
  sample_rate = _check_rate(sample_rate)
  _check_min_length(est.shape[0], window_lengths, "mel_distance")
  value = _mel_distance_jit(
      jnp.asarray(est[None], jnp.float32), jnp.asarray(ref[None], jnp.float32),
      sample_rate=sample_rate, window_lengths=tuple(int(w) for w in window_lengths),
      n_mels=tuple(int(m) for m in n_mels))
  return float(value)


# Compiled once per (signal length, configuration): about 1.5 s on CPU for a new length, then
# milliseconds (eager dispatch would recompile every op for every new length: ~10 s).
_mel_distance_jit = jax.jit(spectral.multiscale_mel_loss,
                            static_argnames=("sample_rate", "window_lengths", "n_mels"))


def _check_min_length(length: int, window_lengths: Sequence[int], metric: str) -> None:
  need = max(window_lengths) // 2 + 1
  if length < need:
    raise ValueError(f"{metric} needs at least {need} samples for windows up to "
                     f"{max(window_lengths)}, got {length}")


def multi_resolution_stft_distance(estimate, reference, *,
                                   window_lengths: Sequence[int] = STFT_WINDOW_LENGTHS,
                                   clamp_eps: float = 1e-5, power: float = 2.0,
                                   log_weight: float = 1.0, mag_weight: float = 1.0) -> float:
  """DAC's ``MultiScaleSTFTLoss`` as a metric (lower is better).

  For each window ``w`` in (2048, 512): ``S(x) = |STFT(x)|`` with n_fft = win = w,
  hop = w // 4, periodic Hann window, centred reflect-padded frames (audiotools defaults,
  ``match_stride=False``), and

    D = sum_w [ log_weight * mean |log10(max(S(e), eps)^p) - log10(max(S(r), eps)^p)|
              + mag_weight * mean |S(e) - S(r)| ]

  with DAC's defaults ``eps = 1e-5``, ``p = 2`` (``pow``; the log term is therefore twice
  the L1 of log10 magnitudes), ``log_weight = mag_weight = 1``; means over frames and
  frequency bins. Sample-rate independent (no mel scale). Identical or both-silent signals
  give 0. Needs more than ``max(window_lengths) // 2`` samples.
  """
  est, ref = _check_pair(estimate, reference)
  _check_min_length(est.shape[0], window_lengths, "multi_resolution_stft_distance")
  both = jnp.asarray(np.stack([est, ref]), jnp.float32)
  return float(_stft_distance_jit(both, tuple(int(w) for w in window_lengths), float(clamp_eps),
                                  float(power), float(log_weight), float(mag_weight)))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _stft_distance_jit(both, window_lengths, clamp_eps, power, log_weight, mag_weight):
  """``both`` = stacked ``[estimate, reference]`` ``[2, T]``; see the public function."""
  total = jnp.zeros((), jnp.float32)
  for w in window_lengths:
    spec = spectral.stft(both, n_fft=w, hop_length=w // 4, win_length=w)
    mag = jnp.abs(spec)
    log_mag = power * jnp.log10(jnp.maximum(mag, clamp_eps))
    total += log_weight * jnp.mean(jnp.abs(log_mag[0] - log_mag[1]))
    total += mag_weight * jnp.mean(jnp.abs(mag[0] - mag[1]))
  return total


# --------------------------------------------------------------------------------------------
# SI-SDR (NumPy, float64)
# --------------------------------------------------------------------------------------------


def si_sdr(estimate, reference, *, eps: float = SI_SDR_EPS) -> float:
  """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., ICASSP 2019).

  Both signals are made zero-mean, then with ``alpha = <e, r> / (||r||^2 + eps)``:

    target = alpha * r,   residual = e - target,
    SI-SDR = 10 * log10((||target||^2 + eps) / (||residual||^2 + eps))

  Scale invariant: ``si_sdr(c * e, r) == si_sdr(e, r)`` for any ``c != 0`` (either sign),
  and likewise for rescaling the reference, up to the ``eps`` terms. Higher is better. Identical signals give
  ``10*log10(||r||^2 / eps)``-ish (> 60 dB for any audible signal); see the module
  docstring for silence.
  """
  est, ref = _check_pair(estimate, reference)
  est = est - est.mean()
  ref = ref - ref.mean()
  alpha = np.dot(est, ref) / (np.dot(ref, ref) + eps)
  target = alpha * ref
  residual = est - target
  return float(10.0 * np.log10((np.dot(target, target) + eps) /
                               (np.dot(residual, residual) + eps)))


# --------------------------------------------------------------------------------------------
# Perceptual metrics (third-party packages)
# --------------------------------------------------------------------------------------------


def _import(module: str, package: str):
  try:
    return __import__(module, fromlist=["_"])
  except ImportError as exc:
    raise ImportError(f"this metric needs the '{package}' package (import name '{module}'); "
                      f"install it with {_EVAL_EXTRA} or pip install '{package}'") from exc


def pesq_wb(estimate, reference, sample_rate: int) -> float:
  """Wideband PESQ (ITU-T P.862.2, MOS-LQO in about [1.04, 4.64]; higher is better).

  Uses the ``pesq`` package (``pesq.pesq(16000, ref, deg, "wb")``); signals at other rates
  are resampled to 16 kHz first. Raises ``ValueError`` for a silent reference; a silent
  estimate of a non-silent reference scores 1.0.
  """
  est, ref = _check_pair(estimate, reference)
  sample_rate = _check_rate(sample_rate)
  pesq_mod = _import("pesq", "pesq")
  _require_speech_reference(ref, "PESQ")
  if is_silent(est):
    return 1.0
  if sample_rate != PESQ_SAMPLE_RATE:
    est = _to_rate(est, sample_rate, PESQ_SAMPLE_RATE)
    ref = _to_rate(ref, sample_rate, PESQ_SAMPLE_RATE)
  try:
    return float(pesq_mod.pesq(PESQ_SAMPLE_RATE, ref, est, "wb"))
  except pesq_mod.NoUtterancesError as exc:
    raise ValueError("PESQ found no utterances in the reference (too quiet or too short "
                     "for P.862's voice activity detection)") from exc


def stoi(estimate, reference, sample_rate: int, *, extended: bool = False) -> float:
  """Short-time objective intelligibility (Taal et al. 2011); higher is better.

  STOI is a mean of correlation coefficients, so its range is [-1, 1] (about 0.2-1 for
  speech); pystoi computes it in float64 and cannot leave that range, so it is not clipped.

  Uses ``pystoi.stoi(ref, est, sample_rate, extended)`` (it resamples to 10 kHz and drops
  silent frames of the reference itself). ``extended=True`` gives ESTOI. Raises
  ``ValueError`` for a silent reference; a silent estimate scores 0.0.
  """
  est, ref = _check_pair(estimate, reference)
  sample_rate = _check_rate(sample_rate)
  pystoi = _import("pystoi", "pystoi")
  _require_speech_reference(ref, "STOI")
  if is_silent(est):
    return 0.0
  value = float(pystoi.stoi(ref, est, sample_rate, extended=extended))
  if not math.isfinite(value):
    raise RuntimeError(f"pystoi returned {value} (signal too short?)")
  return value


@functools.lru_cache(maxsize=2)
def _visqol_api(mapping: str):
  """A speech-mode ``visqol.VisqolApi`` (cached: the lattice model load is not free)."""
  visqol = _import("visqol", "visqol-python")
  if mapping == "lattice":
    try:
      import ai_edge_litert.interpreter  # noqa: F401  (the lattice mapper's runtime)
    except ImportError as exc:
      raise ImportError("ViSQOL's speech-mode lattice mapper needs 'ai-edge-litert'; install "
                        f"it with {_EVAL_EXTRA} or pip install 'visqol-python[lattice]' "
                        "(or pass mapping='exponential')") from exc
  api = visqol.VisqolApi()
  api.create(mode="speech", use_lattice_model=(mapping == "lattice"))
  return api


def visqol(estimate, reference, sample_rate: int, *, mapping: str = "lattice") -> float:
  """ViSQOL v3 in speech mode (MOS-LQO in [1, 5]; higher is better).

  Uses ``visqol-python`` (import name ``visqol``; a pure-Python port of Google's ViSQOL
  v3.3.3): ``VisqolApi().create(mode="speech", use_lattice_model=...)`` and
  ``measure_from_arrays(ref, est, 16000)``; signals are resampled to 16 kHz first. Speech
  mode: 21 gammatone bands, VAD-selected patches, NSIM similarity mapped to MOS by

  * ``mapping="lattice"`` (default, the C++ v3.3 default): the deep-lattice TFLite model
    (needs ``ai-edge-litert``). Identical speech scores about 4.55.
  * ``mapping="exponential"``: the older exponential fit scaled to a maximum of 5.0 (the
    C++ ``--use_lattice_model=false``); identical speech scores 5.0.

  Raises ``ValueError`` for a silent reference; a silent estimate scores 1.0.
  """
  if mapping not in ("lattice", "exponential"):
    raise ValueError(f"mapping must be 'lattice' or 'exponential', got {mapping!r}")
  est, ref = _check_pair(estimate, reference)
  sample_rate = _check_rate(sample_rate)
  api = _visqol_api(mapping)
  _require_speech_reference(ref, "ViSQOL")
  if is_silent(est):
    return 1.0
  if sample_rate != VISQOL_SAMPLE_RATE:
    est = _to_rate(est, sample_rate, VISQOL_SAMPLE_RATE)
    ref = _to_rate(ref, sample_rate, VISQOL_SAMPLE_RATE)
  # visqol logs a warning for every non-48 kHz input in speech mode too; keep it quiet.
  logger = logging.getLogger("visqol")
  level = logger.level
  logger.setLevel(max(level, logging.ERROR))
  try:
    value = float(api.measure_from_arrays(ref, est, VISQOL_SAMPLE_RATE).moslqo)
  except IndexError as e:  # visqol finds no patch in a signal shorter than its patch size
    raise ValueError(f"ViSQOL: the reference ({len(ref) / sample_rate:.2f} s) is too short "
                     f"for one comparison patch") from e
  finally:
    logger.setLevel(level)
  if not math.isfinite(value):
    raise RuntimeError(f"ViSQOL returned {value} (signal too short or degenerate?)")
  # MOS-LQO is defined on [1, 5]; the C++ ViSQOL clamps its mapped score there, the port's
  # lattice mapper does not promise it. Clipped here, where computed.
  return float(np.clip(value, 1.0, 5.0))


def mcd(estimate, reference, sample_rate: int) -> float:
  """Mel-cepstral distortion in dB (module docstring; lower is better). Raises
  ``ValueError`` for a silent reference or estimate (the MFCCs of silence are undefined)."""
  import tempfile  # pylint: disable=import-outside-toplevel
  import soundfile as sf  # pylint: disable=import-outside-toplevel
  est, ref = _check_pair(estimate, reference)
  sample_rate = _check_rate(sample_rate)
  lib = _import("mel_cepstral_distance", "mel-cepstral-distance")
  _require_speech_reference(ref, "MCD")
  if is_silent(est):
    raise ValueError("MCD of a silent estimate is undefined (its cepstrum is -inf)")
  with tempfile.TemporaryDirectory() as tmp:
    paths = [os.path.join(tmp, f"{n}.wav") for n in ("reference", "estimate")]
    for path, x in zip(paths, (ref, est)):
      sf.write(path, x, sample_rate, subtype="PCM_24")  # float WAVs carry a chunk scipy warns on
    value, _ = lib.compare_audio_files(paths[0], paths[1], sample_rate=sample_rate,
                                       aligning="pad")
  value = float(value)
  if not math.isfinite(value):
    raise ValueError(f"MCD is {value} (too short or near-silent frames)")
  return value


# --------------------------------------------------------------------------------------------
# All at once
# --------------------------------------------------------------------------------------------


def compute_all(estimate, reference, sample_rate: int,
                metrics: Sequence[str] = ALL_METRICS) -> Dict[str, float]:
  """``{name: value}`` for each requested metric, in the order asked.

  Names: ``mel_distance``, ``stft_distance`` (``multi_resolution_stft_distance``),
  ``si_sdr``, ``pesq_wb``, ``stoi``, ``visqol``, ``mcd``. Nothing is skipped: every requested metric
  is computed or its error (``ImportError`` for a missing package, ``ValueError`` for bad or
  silent-reference input) propagates. Unknown names raise ``ValueError`` before any work.
  """
  if isinstance(metrics, str):
    metrics = (metrics,)
  unknown = [m for m in metrics if m not in ALL_METRICS]
  if unknown:
    raise ValueError(f"unknown metrics {unknown}; choose from {ALL_METRICS}")
  est, ref = _check_pair(estimate, reference)
  sample_rate = _check_rate(sample_rate)
  fns = {
      "mel_distance": lambda: mel_distance(est, ref, sample_rate),
      "stft_distance": lambda: multi_resolution_stft_distance(est, ref),
      "si_sdr": lambda: si_sdr(est, ref),
      "pesq_wb": lambda: pesq_wb(est, ref, sample_rate),
      "stoi": lambda: stoi(est, ref, sample_rate),
      "visqol": lambda: visqol(est, ref, sample_rate),
      "mcd": lambda: mcd(est, ref, sample_rate),
  }
  return {name: fns[name]() for name in metrics}
