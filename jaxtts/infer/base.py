"""The interface every zero-shot generator implements (`jaxtts-synthesize`, `jaxtts-eval
zero-shot` and the notebooks talk only to this).

A generator turns requests into speech::

    prepared = generator.prepare(SynthesisRequest(text=..., prompt_audio=..., prompt_text=...))
    results = generator.synthesize_batch([prepared, ...], seed=0, **options)

Each result is a dict with at least ``wav`` float32 [T], ``sample_rate`` and ``timings``
(``{..., "rtf"}``), and optionally ``durations`` (frames per target phoneme), ``phonemes``
(target symbols), ``alignment`` (phoneme index per frame, prompt frames first),
``prompt_frames``, ``prompt_phonemes``, ``frames`` and ``stopped_by``.

A generator may span several workdirs (``components``: a code model plus its codec, or a
duration/prosody model, a code model and a codec for NaturalSpeech 3) or none beyond its own
(CLONE is end to end): no caller assumes a codec. `Generator.resynthesize` is the codec round
trip where there is one (evaluation's ``codec_resynthesis`` row), else None.

Bad requests raise `SynthesisInputError` (a ``ValueError``) naming the generator and the
field: a prompt transcript for a model that takes none, an option it does not know, a sample
rate it cannot produce.
"""

from __future__ import annotations

import abc
import dataclasses
import os
import time
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from jaxtts.audio import io
from jaxtts.plots import save_image
from jaxtts.text import EmptyTextError, UnknownPhonemeError, text_to_ids

AudioInput = Union[str, os.PathLike, np.ndarray]
REQUEST_FIELDS = ("text", "prompt_audio", "prompt_text", "prompt_phonemes", "target_phonemes",
                  "prompt_durations", "prosody_reference_audio", "prosody_reference_durations",
                  "prompt_sample_rate", "sample_rate", "max_seconds", "id")


class SynthesisInputError(ValueError):
  """A bad synthesis request; ``field`` names the input (``text``, ``prompt_audio``, ...)."""

  def __init__(self, field: str, message: str):
    self.field = field
    super().__init__(f"{field}: {message}")


class InputFileNotFoundError(SynthesisInputError, FileNotFoundError):
  """A file named by a request does not exist."""


@dataclasses.dataclass
class SynthesisRequest:
  """One utterance to synthesize.

  ``text``: what to say (or ``target_phonemes``, ids of the training table). ``prompt_audio``:
  a path or a mono array ``[T]`` (float in [-1, 1], or int16) at ``prompt_sample_rate``
  (default: the generator's rate; another rate is resampled). ``prompt_text`` or
  ``prompt_phonemes``: the prompt's transcript, for generators that condition on it.
  ``prompt_durations``: frames (at the generator's frame rate) per prompt phoneme, for
  generators that take them (NaturalSpeech 3; without them it aligns the transcript itself).
  ``prosody_reference_audio``: another reading of the target text whose prosody to transfer
  (CLONE's ``prosody=reference``; a path, or an array at ``prompt_sample_rate``), with
  ``prosody_reference_durations``, its frames per target phoneme, where the generator cannot
  align it itself. ``sample_rate``: the output rate the caller needs (an error if the
  generator makes another). ``max_seconds``: the longest output. ``id``: the caller's name for it.
  """
  text: Optional[str] = None
  prompt_audio: Optional[AudioInput] = None
  prompt_text: Optional[str] = None
  prompt_phonemes: Any = None
  target_phonemes: Any = None
  prompt_durations: Any = None
  prosody_reference_audio: Optional[AudioInput] = None
  prosody_reference_durations: Any = None
  prompt_sample_rate: Optional[int] = None
  sample_rate: Optional[int] = None
  max_seconds: Optional[float] = None
  id: Optional[str] = None

  @classmethod
  def of(cls, request: Union["SynthesisRequest", Mapping[str, Any]]) -> "SynthesisRequest":
    """A request from itself or a dict of its fields (an unknown key is an error)."""
    if isinstance(request, SynthesisRequest):
      return request
    if not isinstance(request, Mapping):
      raise SynthesisInputError("request", f"expected a SynthesisRequest or a dict, got "
                                           f"{type(request).__name__}")
    unknown = sorted(set(request) - set(REQUEST_FIELDS))
    if unknown:
      raise SynthesisInputError(unknown[0], f"not a request field (fields: "
                                            f"{', '.join(REQUEST_FIELDS)})")
    return cls(**request)


def sidecar_transcript(path: AudioInput) -> Optional[str]:
  """The transcript in ``<prompt without extension>.txt`` beside a prompt file, or None."""
  if isinstance(path, np.ndarray) or path is None:
    return None
  txt = os.path.splitext(os.fspath(path))[0] + ".txt"
  if not os.path.isfile(txt):
    return None
  with open(txt, encoding="utf-8") as f:
    return f.read().strip()


class Generator(abc.ABC):
  """Base of every generator: request checks and prompt loading; subclasses set the class
  attributes and implement `_prepare` and `synthesize_batch`.

  ``task``: the registry name. ``request_fields``: the `SynthesisRequest` fields it uses
  (others must be left None). ``option_names``: the keyword options of `synthesize_batch`.
  Instances set ``sample_rate``, ``workdirs`` ({role: path}) and ``corpus_dir`` (the corpus
  it was trained on, the default of evaluations; None when unknown).
  """

  task: str = ""
  request_fields: tuple[str, ...] = ("text", "prompt_audio", "max_seconds", "id",
                                     "prompt_sample_rate", "sample_rate")
  option_names: tuple[str, ...] = ("max_seconds",)
  sample_rate: int
  workdirs: dict[str, str]
  corpus_dir: Optional[str] = None

  # ------------------------------------------------------------------ to implement
  @abc.abstractmethod
  def _prepare(self, request: SynthesisRequest) -> Any:
    """A checked request (`check_request` has run), ready for `synthesize_batch`."""

  @abc.abstractmethod
  def synthesize_batch(self, prepared: Sequence[Any], *, seed: int = 0,
                       **options) -> list[dict[str, Any]]:
    """Results (module docstring) of ``prepared`` items (or requests, prepared on the fly)."""

  def resynthesize(self, audio: np.ndarray) -> Optional[np.ndarray]:
    """The codec round trip of ``audio [T]`` where the generator has a codec, else None."""
    del audio
    return None

  # ------------------------------------------------------------------ shared
  def prepare(self, request: Union[SynthesisRequest, Mapping[str, Any]]) -> Any:
    return self._prepare(self.check_request(SynthesisRequest.of(request)))

  def synthesize(self, request: Union[SynthesisRequest, Mapping[str, Any], None] = None, *,
                 seed: int = 0, options: Optional[Mapping[str, Any]] = None,
                 **fields) -> dict[str, Any]:
    """One utterance: a request, or its fields as keywords (``text=..., prompt_audio=...``);
    ``options`` go to `synthesize_batch`."""
    if request is None:
      request = SynthesisRequest.of(fields)
    elif fields:
      raise SynthesisInputError(sorted(fields)[0], "give a request or fields, not both")
    options = dict(options or {})
    request = SynthesisRequest.of(request)
    if request.max_seconds is not None:
      options.setdefault("max_seconds", request.max_seconds)
    return self.synthesize_batch([self.prepare(request)], seed=seed, **options)[0]

  def check_request(self, request: SynthesisRequest) -> SynthesisRequest:
    """Refuses fields this generator does not take and output rates it cannot make."""
    for name in REQUEST_FIELDS:
      if getattr(request, name) is not None and name not in self.request_fields:
        raise SynthesisInputError(name, f"the {self.task} generator takes no {name} (it "
                                        f"takes {', '.join(self.request_fields)})")
    if request.sample_rate is not None and int(request.sample_rate) != int(self.sample_rate):
      raise SynthesisInputError("sample_rate", f"the {self.task} generator makes "
                                               f"{self.sample_rate} Hz audio, not "
                                               f"{request.sample_rate} Hz (resample its output)")
    return request

  def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options that are set (not None); an unknown name is an error naming it."""
    unknown = sorted(k for k, v in options.items()
                     if v is not None and k not in self.option_names)
    if unknown:
      raise SynthesisInputError(unknown[0], f"not an option of the {self.task} generator "
                                            f"(options: {', '.join(self.option_names)})")
    return {k: v for k, v in options.items() if v is not None}

  def load_prompt(self, request: SynthesisRequest) -> np.ndarray:
    """The prompt as float32 ``[T]`` at `sample_rate` (a path is resampled, and so is an
    array at another ``prompt_sample_rate``)."""
    if request.prompt_audio is None:
      raise SynthesisInputError("prompt_audio", f"the {self.task} generator needs a prompt")
    return self.load_audio(request, "prompt_audio")

  def load_audio(self, request: SynthesisRequest, field: str) -> np.ndarray:
    """The request's audio ``field`` (a path or an array at ``prompt_sample_rate``) as
    float32 ``[T]`` at `sample_rate`; errors name ``field``."""
    audio = getattr(request, field)
    if isinstance(audio, np.ndarray):
      wav = audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else audio
      if wav.ndim != 1 or not len(wav):
        raise SynthesisInputError(field, f"expected mono audio [T], got shape {wav.shape}")
      rate = request.prompt_sample_rate
      if rate is not None and int(rate) != int(self.sample_rate):
        if int(rate) <= 0:
          raise SynthesisInputError("prompt_sample_rate", f"must be positive, got {rate}")
        wav = io.resample(np.asarray(wav, np.float32), int(rate), int(self.sample_rate))
      return np.asarray(wav, np.float32)
    if request.prompt_sample_rate is not None and field == "prompt_audio":
      raise SynthesisInputError("prompt_sample_rate", "only for array prompts (a file's rate "
                                                      "is read from the file)")
    path = os.fspath(audio)
    if not os.path.isfile(path):
      raise InputFileNotFoundError(field, f"no such file {path!r}")
    try:
      return io.load_wav(path, int(self.sample_rate), resample=True)
    except Exception as e:  # pylint: disable=broad-except  (soundfile raises its own types)
      raise SynthesisInputError(field, f"cannot read {path!r} ({e})") from e

  # ------------------------------------------------------------------ phonemes
  # For generators that read text through the corpus' phoneme table (``self.table``, a
  # `jaxtts.text.PhonemeTable`): the request's target and prompt phoneme ids.
  def phonemize(self, text: Any, field: str = "text") -> np.ndarray:
    """Text -> ids [J] in the training table; errors name ``field``."""
    if not isinstance(text, str):
      raise SynthesisInputError(field, f"expected a string, got {type(text).__name__}")
    try:
      return text_to_ids(text, self.table)
    except (EmptyTextError, UnknownPhonemeError) as e:
      raise SynthesisInputError(field, str(e)) from e

  def phoneme_ids(self, ids: Any, field: str) -> np.ndarray:
    """Given phoneme ids, checked against the table: int32 [J]."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or not len(ids) or not np.issubdtype(ids.dtype, np.integer):
      raise SynthesisInputError(field, f"expected a non-empty list of phoneme ids, got "
                                       f"shape {ids.shape} dtype {ids.dtype}")
    if ids.min() < 1 or ids.max() >= len(self.table):
      raise SynthesisInputError(field, f"ids must lie in [1, {len(self.table)}) (table "
                                       f"{self.table.version}), got {ids.min()}..{ids.max()}")
    return ids.astype(np.int32)

  def target_ids(self, r: SynthesisRequest) -> np.ndarray:
    """The ids to say: ``target_phonemes``, else ``text`` through the frontend."""
    if r.target_phonemes is not None:
      return self.phoneme_ids(r.target_phonemes, "target_phonemes")
    return self.phonemize(r.text if r.text is not None else "", "text")

  def prompt_ids(self, r: SynthesisRequest) -> np.ndarray:
    """The prompt transcript's ids: ``prompt_phonemes``, else ``prompt_text`` (or the
    ``<prompt>.txt`` beside a prompt file) through the frontend; there is no ASR here."""
    if r.prompt_phonemes is not None:
      return self.phoneme_ids(r.prompt_phonemes, "prompt_phonemes")
    prompt_text = r.prompt_text if r.prompt_text is not None else sidecar_transcript(
        r.prompt_audio)
    if prompt_text is None:
      raise SynthesisInputError(
          "prompt_text", "the prompt's transcript is required (there is no ASR here): pass "
          "prompt_text / --prompt-text, or put it in a .txt file beside the prompt audio")
    return self.phonemize(prompt_text, "prompt_text")

  def describe(self) -> dict[str, Any]:
    return {"generator": self.task, "sample_rate": int(self.sample_rate),
            "workdirs": dict(self.workdirs), "corpus_dir": self.corpus_dir}


def finish_timings(results: list[dict[str, Any]], generate_s: float) -> None:
  """Adds ``rtf`` to every result: the batch's total time over its total audio."""
  total = sum(len(x["wav"]) / x["sample_rate"] for x in results)
  spent = generate_s + sum(x["timings"].get("encode_s", 0.0) + x["timings"].get("decode_s", 0.0)
                           for x in results)
  for x in results:
    x["timings"]["rtf"] = spent / max(total, 1e-9)


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
  t0 = time.perf_counter()
  out = fn(*args, **kwargs)
  return out, time.perf_counter() - t0


def alignment_matrix(result: Mapping[str, Any]) -> np.ndarray:
  """One-hot alignment ``[P + F, Jp + Jt]`` of a result with an ``alignment``: 1 on generated
  frames, 0.5 on the prompt's frames (so the prompt/generation boundary shows)."""
  alignment = np.asarray(result["alignment"])
  num = len(result.get("prompt_phonemes", ())) + len(result["phonemes"])
  out = np.zeros((len(alignment), num), np.float32)
  out[np.arange(len(alignment)), np.clip(alignment, 0, num - 1)] = 1.0
  out[:int(result.get("prompt_frames", 0))] *= 0.5
  return out


def save_alignment_image(path: str, result: Mapping[str, Any], title: str = "") -> bool:
  """PNG of `alignment_matrix` (frames horizontal, phonemes vertical); False (nothing
  written) for a result without an alignment."""
  if result.get("alignment") is None:
    return False
  save_image(path, alignment_matrix(result), title=title or "alignment (prompt at 0.5)",
             xlabel="frame", ylabel="phoneme (prompt, then text)")
  return True
