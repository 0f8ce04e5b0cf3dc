"""ctypes binding to libespeak-ng (the copy shipped in the ``espeakng-loader`` wheel).

Two services, both used by `jaxtts.text` and by the embedded corpus builder
(`data_pipelines.espeak_corpus`) so that training data and inference share one frontend:

* **G2P** (`text_to_phonemes`): ``espeak_TextToPhonemes`` in espeak's ASCII *mnemonic* mode
  (e.g. ``h @ l 'oU``), with stress marks kept on the vowel they belong to. It returns one
  `Clause` per clause espeak reads (espeak splits clauses at punctuation), each a tuple of words
  of phoneme symbols, plus the clause's own slice of the input text.
* **Synthesis** (`synthesize`): ``espeak_Synth`` in ``AUDIO_OUTPUT_SYNCHRONOUS`` mode with
  ``espeakINITIALIZE_PHONEME_EVENTS``; an ``espeak_SetSynthCallback`` callback collects the int16
  samples and the ``espeakEVENT_PHONEME`` / ``espeakEVENT_END`` events (with their ``sample``
  positions), which give per-phoneme timing.

espeak-ng keeps process-global state (current voice, parameters, callback), so every call
takes one re-entrant lock. G2P uses one instance of the library, initialized once per process
(lazily, on first use). Synthesis is a pure function of its arguments: espeak keeps synthesis
state in C statics that no API resets (the glottal-flutter phase, resonator memories ...), so
the same sentence synthesized twice in one process differs by a few samples. `synthesize`
therefore runs each call in a freshly loaded private instance of the library (a copy of the
shared object, ``dlopen``-ed, used, ``espeak_Terminate``-d and ``dlclose``-d; about 5 ms, mostly
re-reading the voice and dictionary) and
reseeds espeak's noise generator (``espeak_ng_SetRandSeed``). ``tests/test_text.py`` checks that
a sentence synthesizes to the same samples whatever was synthesized before it.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import os
import shutil
import sys
import tempfile
import threading
from typing import Sequence

import numpy as np

# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_END = 5
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_PARAM_WORDGAP = 7
# Phoneme separator asked of espeak_TextToPhonemes (bits 8-23 of phonememode). A control character
# never appears in phoneme mnemonics, so splitting on it is unambiguous.
_SEPARATOR = "\x1f"

# Punctuation that ends an espeak clause; used to label a clause by its terminator.
CLAUSE_PUNCTUATION = ".,?!;:"

_LOCK = threading.RLock()


class EspeakError(RuntimeError):
  """espeak-ng returned an error (bad voice name, failed initialization, ...)."""


class _EventId(ctypes.Union):
  _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
  """``espeak_EVENT`` from speak_lib.h."""
  _fields_ = [
      ("type", ctypes.c_int),
      ("unique_identifier", ctypes.c_uint),
      ("text_position", ctypes.c_int),
      ("length", ctypes.c_int),
      ("audio_position", ctypes.c_int),
      ("sample", ctypes.c_int),
      ("user_data", ctypes.c_void_p),
      ("id", _EventId),
  ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclasses.dataclass(frozen=True)
class PhonemeEvent:
  """One ``espeakEVENT_PHONEME``: phoneme ``symbol`` (mnemonic, stress mark attached) starting at
  output sample ``sample``; ``text_position`` is espeak's 1-based character index of its word."""
  symbol: str
  sample: int
  text_position: int


@dataclasses.dataclass(frozen=True)
class Synthesis:
  """Output of `synthesize`.

  audio: int16 [T] at ``sample_rate`` (22050 Hz for espeak-ng).
  events: phoneme events in output order (pauses appear as ``_``, ``_:``, ``_!`` ... symbols).
  clause_ends: output sample of each ``espeakEVENT_END`` (end of a clause or sentence), in order.
  """
  audio: np.ndarray
  sample_rate: int
  events: tuple[PhonemeEvent, ...]
  clause_ends: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Clause:
  """One clause of `text_to_phonemes`: ``words`` is a tuple of words, each a tuple of phoneme
  symbols; ``text`` is the slice of the input text espeak consumed while reading this clause
  (its words and terminating punctuation, plus read-ahead)."""
  words: tuple[tuple[str, ...], ...]
  text: str

  @property
  def terminator(self) -> str:
    """The clause's punctuation mark (the last of `CLAUSE_PUNCTUATION` in ``text``), or "".

    Because of espeak's read-ahead, ``text`` can also hold the first letter of the next
    clause, never its punctuation when every mark is followed by a space and a word (which
    `jaxtts.text.normalize_text` guarantees).
    """
    marks = [c for c in self.text if c in CLAUSE_PUNCTUATION]
    return marks[-1] if marks else ""


class _Engine:
  """The initialized library. Use `_engine()`; hold `_LOCK` around every call."""

  def __init__(self, lib_path: str | None = None):
    import espeakng_loader  # Imported lazily: the wheel is only needed once espeak is used.
    lib_path = lib_path or espeakng_loader.get_library_path()
    data_path = espeakng_loader.get_data_path()
    try:
      lib = ctypes.CDLL(lib_path)
    except OSError as e:
      raise EspeakError(f"cannot load libespeak-ng from {lib_path}: {e}") from e
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_TextToPhonemes.argtypes = [
        ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
        ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.argtypes = []
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None
    lib.espeak_Terminate.argtypes = []
    lib.espeak_Terminate.restype = ctypes.c_int

    # espeak_Initialize takes the directory that *contains* espeak-ng-data.
    root = os.path.dirname(os.path.abspath(data_path)).encode()
    rate = lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, 0, root,
        _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT)
    if rate <= 0:
      raise EspeakError(f"espeak_Initialize failed ({rate}) with data at {data_path}")
    path = ctypes.c_char_p()
    self.version = lib.espeak_Info(ctypes.byref(path)).decode()
    self.data_path = data_path
    self.sample_rate = int(rate)
    self.lib = lib
    self._chunks: list[np.ndarray] = []
    self._events: list[tuple[int, int, int, str]] = []
    self._callback = _SynthCallback(self._on_synth)  # Kept alive as long as the engine.
    lib.espeak_SetSynthCallback(self._callback)
    self._voice: str | None = None

  def _on_synth(self, wav, num_samples, events) -> int:
    if num_samples > 0 and wav:
      self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).astype(np.int16))
    i = 0
    while events[i].type != _EVENT_LIST_TERMINATED:
      ev = events[i]
      if ev.type == _EVENT_PHONEME:
        self._events.append((ev.type, ev.sample, ev.text_position,
                             ev.id.string.decode("utf-8", "replace")))
      elif ev.type == _EVENT_END:
        self._events.append((ev.type, ev.sample, ev.text_position, ""))
      i += 1
    return 0  # 0: continue synthesis.

  def set_voice(self, voice: str) -> None:
    if voice != self._voice:
      self._voice = None
      err = self.lib.espeak_SetVoiceByName(voice.encode())
      if err != 0:
        raise EspeakError(f"espeak-ng has no voice {voice!r} (error {err})")
      self._voice = voice

  def set_parameter(self, param: int, value: int, name: str) -> None:
    err = self.lib.espeak_SetParameter(param, int(value), 0)
    if err != 0:
      raise EspeakError(f"espeak_SetParameter({name}={value}) failed (error {err})")

  def close(self) -> None:
    """Terminates espeak and unloads this instance of the library (no call may follow)."""
    import _ctypes
    self.lib.espeak_Terminate()
    handle = self.lib._handle
    self.lib = None
    _ctypes.dlclose(handle)


@functools.lru_cache(maxsize=1)
def _private_library_path() -> str:
  """A private copy of libespeak-ng for fresh per-call instances (see the module docstring).

  A copy has its own file identity, so dlopen loads it apart from the shared G2P instance and
  dlclose really unloads it. On Linux it lives in an anonymous memfd; elsewhere in a temporary
  directory removed at exit.
  """
  import espeakng_loader
  src = espeakng_loader.get_library_path()
  if hasattr(os, "memfd_create") and sys.platform.startswith("linux"):
    fd = os.memfd_create("libespeak-ng-private", 0)
    with open(src, "rb") as f, os.fdopen(fd, "wb", closefd=False) as out:
      shutil.copyfileobj(f, out)
    return f"/proc/self/fd/{fd}"  # also valid in forked children, which inherit the fd
  tmp = tempfile.mkdtemp(prefix="jaxtts-espeak-")
  import atexit
  atexit.register(shutil.rmtree, tmp, True)
  dst = os.path.join(tmp, os.path.basename(src))
  shutil.copy(src, dst)
  return dst


@functools.lru_cache(maxsize=1)
def _cached_engine() -> _Engine:
  return _Engine()


def _engine() -> _Engine:
  with _LOCK:
    return _cached_engine()


def sample_rate() -> int:
  """The output rate espeak_Initialize reported (Hz)."""
  return _engine().sample_rate


def version() -> str:
  """The libespeak-ng version string, e.g. '1.52.0'."""
  return _engine().version


def data_path() -> str:
  """The espeak-ng-data directory in use."""
  return _engine().data_path


def _check_text(text: str) -> bytes:
  if not isinstance(text, str):
    raise TypeError(f"text must be str, got {type(text).__name__}")
  return text.encode("utf-8")


def text_to_phonemes(text: str, *, voice: str = "en-us") -> list[Clause]:
  """espeak G2P of ``text`` with ``voice``'s language rules (the variant is irrelevant).

  Returns the clauses in order; a clause with no pronounceable words has ``words == ()``.
  Symbols are espeak mnemonics with stress marks (``'`` primary, ``,`` secondary) attached to
  their vowel, e.g. ``[('h', '@', 'l', "'oU"), ('w', "'3:", 'l', 'd')]`` for "hello world".
  """
  data = _check_text(text)
  mode = ord(_SEPARATOR) << 8  # bit 1 clear: mnemonic names, not IPA.
  clauses = []
  with _LOCK:
    eng = _engine()
    eng.set_voice(voice)
    buf = ctypes.create_string_buffer(data)  # NUL-terminated copy that espeak walks through.
    base = ctypes.addressof(buf)
    ptr = ctypes.c_void_p(base)
    start = 0
    # espeak reads ahead (up to the first letter of the next clause), so a clause's ``text``
    # may end a character or two into the next clause; it sets the pointer to NULL only once
    # every buffered character has been translated, so loop until then (bounded, for safety).
    for _ in range(len(data) + 2):
      if ptr.value is None:
        break
      out = eng.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, mode)
      end = len(data) if ptr.value is None else max(start, ptr.value - base)
      words = []
      for word in (out or b"").decode("utf-8").split(" "):
        symbols = tuple(s for s in word.split(_SEPARATOR) if s)
        if symbols:
          words.append(symbols)
      clauses.append(Clause(words=tuple(words), text=data[start:end].decode("utf-8", "replace")))
      start = end
    else:
      raise EspeakError(f"espeak_TextToPhonemes did not reach the end of {text!r}")
  return clauses


def synthesize(text: str, *, voice: str = "en-us", pitch: int = 50, pitch_range: int = 50,
               rate: int = 175, word_gap: int = 0, volume: int = 100,
               seed: int = 0) -> Synthesis:
  """Synthesizes ``text`` with espeak-ng.

  Args:
    text: plain UTF-8 text (not SSML).
    voice: espeak voice name, a language optionally with a variant, e.g. ``"en-us+m3"``.
    pitch: base pitch, 0-99 (espeak's default 50).
    pitch_range: pitch range, 0-99 (0 = monotone; default 50).
    rate: speaking rate in words per minute (80-450).
    word_gap: extra pause between words, in units of 10 ms at the default rate.
    volume: amplitude, 0-200 (default 100).
    seed: seed of espeak's noise generator (for reproducible output).

  Returns:
    `Synthesis` with int16 audio at `sample_rate()` and the phoneme events.
  """
  data = _check_text(text)
  for name, value, lo, hi in (("pitch", pitch, 0, 99), ("pitch_range", pitch_range, 0, 99),
                              ("rate", rate, 80, 450), ("volume", volume, 0, 200),
                              ("word_gap", word_gap, 0, 1000)):
    if not lo <= int(value) <= hi:
      raise ValueError(f"{name}={value} outside [{lo}, {hi}]")
  with _LOCK:
    eng = _Engine(_private_library_path())
    try:
      eng.set_voice(voice)
      eng.set_parameter(_PARAM_RATE, rate, "rate")
      eng.set_parameter(_PARAM_PITCH, pitch, "pitch")
      eng.set_parameter(_PARAM_RANGE, pitch_range, "pitch_range")
      eng.set_parameter(_PARAM_WORDGAP, word_gap, "word_gap")
      eng.set_parameter(_PARAM_VOLUME, volume, "volume")
      eng.lib.espeak_ng_SetRandSeed(int(seed))
      buf = ctypes.create_string_buffer(data)
      err = eng.lib.espeak_Synth(buf, len(data) + 1, 0, _POS_CHARACTER, 0,
                                 _CHARS_UTF8 | _ENDPAUSE, None, None)
      if err != 0:
        raise EspeakError(f"espeak_Synth failed (error {err}) on {text!r}")
      eng.lib.espeak_Synchronize()
      chunks, raw_events, sr = eng._chunks, eng._events, eng.sample_rate
    finally:
      eng.close()
  audio = np.concatenate(chunks) if chunks else np.zeros([0], np.int16)
  events = tuple(PhonemeEvent(symbol=s, sample=int(n), text_position=int(p))
                 for t, n, p, s in raw_events if t == _EVENT_PHONEME)
  ends = tuple(int(n) for t, n, _, _ in raw_events if t == _EVENT_END)
  return Synthesis(audio=audio, sample_rate=sr, events=events, clause_ends=ends)


def is_pause(symbol: str) -> bool:
  """Whether an event symbol is one of espeak's pause pseudo-phonemes (``_``, ``_:``, ``_!``...)."""
  return symbol.startswith("_")


def list_variants() -> list[str]:
  """Names of the voice variants in the wheel's ``espeak-ng-data/voices/!v`` (sorted)."""
  import espeakng_loader
  vdir = os.path.join(espeakng_loader.get_data_path(), "voices", "!v")
  return sorted(os.listdir(vdir))


def phoneme_sequence(clauses: Sequence[Clause]) -> list[str]:
  """All phoneme symbols of ``clauses`` in order (words and clauses concatenated)."""
  return [s for c in clauses for w in c.words for s in w]


def dictionary_words(dictionary: str = "en") -> list[str]:
  """The lower-case alphabetic words listed in espeak's compiled ``<dictionary>_dict``.

  These are espeak's pronunciation exceptions (a few thousand for English, many of them rare,
  foreign or names), used by tests as a hard G2P workload. Format (espeak-ng dictionary.c):
  bytes 0-3 the hash-table size N (1024), 4-7 the offset of the rules, then N chains of
  entries, each ``[length, flags|word_length, word bytes, ...]`` ending with a 0 byte. With
  flag 0x40 the word is packed 6 bits per letter ('a' = 1 ... 'z' = 26).
  """
  path = os.path.join(data_path(), f"{dictionary}_dict")
  with open(path, "rb") as f:
    data = f.read()
  if int.from_bytes(data[0:4], "little") != 1024:
    raise EspeakError(f"{path}: unexpected dictionary format")
  p, words = 8, set()
  for _ in range(1024):
    while data[p] != 0:
      length, wl = data[p], data[p + 1] & 0x7F
      raw = data[p + 2:p + 2 + (wl & 0x3F)]
      if wl & 0x40:
        bits, nbits = int.from_bytes(raw, "big"), 8 * len(raw)
        codes = [(bits >> (nbits - 6 * (k + 1))) & 0x3F for k in range(nbits // 6)]
        word = "".join(chr(0x60 + c) for c in codes if 1 <= c <= 26)
      else:
        word = raw.decode("utf-8", "replace")
      if word.isascii() and word.isalpha() and word.islower():
        words.add(word)
      p += length
    p += 1
  return sorted(words)
