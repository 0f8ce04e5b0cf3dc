"""Speaker similarity (SIM): cosine of speaker embeddings of a generated and a reference clip.

Zero-shot TTS papers report SIM between the generated speech and the speaker's prompt
(SIM-o: original prompt; SIM-r: the prompt reconstructed by the codec) with a
speaker-verification model: VALL-E and NaturalSpeech 2/3 a WavLM-large + ECAPA-TDNN, the GMM-LM
paper (Lin & He 2025, §4) a WeSpeaker model trained on VoxCeleb.
Two encoders are offered:

* ``"ge2e"`` (`GE2EEncoder`, default, offline): Resemblyzer's GE2E d-vector (an LSTM trained
  with the generalized end-to-end loss on LibriSpeech/VoxCeleb, weights shipped in the wheel).
  It is *not* the papers' models: its cosines sit in a different, higher range (on the
  espeak test corpus: 0.88 on average between clips of one voice, 0.58 between different
  voices, up to 0.74), so absolute values are not comparable with the papers' tables; only
  comparisons between systems scored with it are meaningful.
* ``"wavlm"`` (`WavLMEncoder`): a HuggingFace ``WavLMForXVector`` checkpoint folder that the
  user downloaded (e.g. ``microsoft/wavlm-base-plus-sv``); needs ``pip install transformers``.
  Closer to the papers' model family, still not their exact fine-tuned WavLM-large checkpoint.

Embeddings are float32 ``[E]`` with unit L2 norm, so the similarity is their dot product, in
[-1, 1] (higher: more alike). All audio is brought to 16 kHz mono first (`load_audio`).
"""

from __future__ import annotations

import abc
import os
import warnings
from typing import Optional, Sequence

import numpy as np

from jaxtts.eval.backends import (AudioLike, BackendUnavailableError, EVAL_SAMPLE_RATE,
                                  import_backend, load_audio)

SILENCE_PEAK = 1e-5  # Below one 16-bit step: nothing to embed.
GE2E_MIN_SECONDS = 0.5  # Speech left after Resemblyzer's silence trimming.


def _unit(v) -> np.ndarray:
  v = np.asarray(v, dtype=np.float32).reshape(-1)
  norm = float(np.linalg.norm(v))
  if not np.isfinite(norm) or norm == 0.0:
    raise ValueError("speaker embedding is zero or not finite")
  return v / norm


def _speech(audio: AudioLike, sample_rate: Optional[int]) -> np.ndarray:
  wav = load_audio(audio, sample_rate, EVAL_SAMPLE_RATE)
  if wav.size == 0 or float(np.max(np.abs(wav))) < SILENCE_PEAK:
    raise ValueError(f"cannot embed a silent or empty clip ({wav.size / EVAL_SAMPLE_RATE:.2f} s "
                     f"at 16 kHz, peak < {SILENCE_PEAK})")
  return wav


class SpeakerEncoder(abc.ABC):
  """Maps a clip to a unit-norm speaker embedding ``[E]`` float32 (`GE2EEncoder`,
  `WavLMEncoder`)."""

  name: str = ""

  @abc.abstractmethod
  def embed(self, audio: AudioLike, sample_rate: Optional[int] = None) -> np.ndarray:
    """Embedding ``[E]`` of ``audio`` (path, or array [T] with its ``sample_rate``)."""

  def embed_many(self, audios: Sequence[AudioLike],
                 sample_rate: Optional[int] = None) -> np.ndarray:
    """``[N, E]``: `embed` of each clip, in order."""
    return np.stack([self.embed(a, sample_rate) for a in audios])


class GE2EEncoder(SpeakerEncoder):
  """Resemblyzer's GE2E d-vector (256-d) on CPU; see the module docstring for its caveats.

  Each clip goes through ``resemblyzer.preprocess_wav`` (volume normalization to -30 dBFS,
  WebRTC-VAD trimming of long silences) and ``VoiceEncoder.embed_utterance`` (mean of 1.6 s
  partial embeddings, renormalized).
  """

  name = "ge2e"

  def __init__(self):
    with warnings.catch_warnings():  # webrtcvad imports the deprecated pkg_resources.
      warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
      resemblyzer = import_backend("resemblyzer", "resemblyzer 'setuptools<81'")
    self._preprocess = resemblyzer.preprocess_wav
    self._encoder = resemblyzer.VoiceEncoder(device="cpu", verbose=False)

  def embed(self, audio: AudioLike, sample_rate: Optional[int] = None) -> np.ndarray:
    wav = self._preprocess(_speech(audio, sample_rate), source_sr=None)
    if len(wav) < GE2E_MIN_SECONDS * EVAL_SAMPLE_RATE:
      raise ValueError(f"only {len(wav) / EVAL_SAMPLE_RATE:.2f} s of speech left after voice "
                       f"activity trimming; GE2E needs at least {GE2E_MIN_SECONDS} s")
    return _unit(self._encoder.embed_utterance(wav))


class WavLMEncoder(SpeakerEncoder):
  """x-vector of a local HuggingFace ``WavLMForXVector`` folder (CPU, eval mode).

  Args:
    path: folder with ``config.json``, the weights and ``preprocessor_config.json`` (what
      ``save_pretrained`` / a hub download of e.g. microsoft/wavlm-base-plus-sv holds).
  """

  name = "wavlm"

  def __init__(self, path: str):
    if not path or not os.path.isfile(os.path.join(os.fspath(path), "config.json")):
      raise BackendUnavailableError(
          f"WavLM speaker model folder {path!r} not found (needs config.json); download one, "
          "e.g. `hf download microsoft/wavlm-base-plus-sv --local-dir DIR`, and pass DIR")
    self._torch = import_backend("torch", "torch")
    transformers = import_backend("transformers", "transformers")
    self._extractor = transformers.AutoFeatureExtractor.from_pretrained(
        path, local_files_only=True)
    self._model = transformers.WavLMForXVector.from_pretrained(path, local_files_only=True)
    self._model.eval()

  def embed(self, audio: AudioLike, sample_rate: Optional[int] = None) -> np.ndarray:
    wav = _speech(audio, sample_rate)
    inputs = self._extractor(wav, sampling_rate=EVAL_SAMPLE_RATE, return_tensors="pt")
    with self._torch.no_grad():
      emb = self._model(**inputs).embeddings[0]
    return _unit(emb.numpy())


SPEAKER_ENCODERS = ("ge2e", "wavlm")


def get_speaker_encoder(name: str = "ge2e", path: Optional[str] = None) -> SpeakerEncoder:
  """The encoder called ``name`` (one of `SPEAKER_ENCODERS`); ``path`` is WavLM's folder."""
  if name == "ge2e":
    return GE2EEncoder()
  if name == "wavlm":
    return WavLMEncoder(path)
  raise ValueError(f"unknown speaker encoder {name!r}; choose one of {SPEAKER_ENCODERS}")


def cosine_similarity(u, v) -> float:
  """Cosine of two embeddings ``[E]``, clipped to [-1, 1].

  The dot product of two float32 unit vectors can land a few ulps outside [-1, 1] (a clip
  compared with itself gave 1.000000238); the clip keeps the metric in its range.
  """
  u, v = _unit(u), _unit(v)
  return float(np.clip(np.dot(u.astype(np.float64), v.astype(np.float64)), -1.0, 1.0))


def speaker_similarity(encoder: SpeakerEncoder, a: AudioLike, b: AudioLike,
                       sample_rate: Optional[int] = None) -> float:
  """Cosine similarity in [-1, 1] of the embeddings of clips ``a`` and ``b``."""
  return cosine_similarity(encoder.embed(a, sample_rate), encoder.embed(b, sample_rate))
