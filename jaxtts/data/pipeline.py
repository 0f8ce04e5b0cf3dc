"""The Grain input pipeline: corpus split -> fixed-shape host batches (CONTRACTS.md).

Chain (index-level stages are lazy `grain.MapDataset` transforms, so a record is only read
when its element is requested)::

  range(N records)                              CorpusSource: manifest + shards checked
  -> SpeakerBalancedMapDataset (train, opt.)    class-balanced speaker sampling
  -> EpochShuffleMapDataset (train)             a new permutation every epoch
  -> repeat(num_epochs)                         train: forever unless data.num_epochs
  -> map_with_index(_LoadExample)               read + decode + check; crop mode: random crop
                                                  from (seed, global stream index)
  -> [process_index::process_count]             host sharding, before any batching
  -> to_iter_dataset(read threads)
  -> batch (crop) | BucketBatchIterDataset (bucket: filter + bucket + pad + batch)
  -> mp_prefetch (data.worker_count > 0)
  -> ThreadPrefetchIterDataset (data.prefetch_buffer_size > 0)

Every random choice is a function of ``seed`` and an element's index in the global stream,
so batches are reproducible, independent of thread timing, and each host's crops do not
depend on the number of hosts. The iterator state (`grain.DatasetIterator.get_state`) is a
small JSON-serializable dict; `grain.checkpoint.CheckpointSave` stores it through Orbax.

Host batches (numpy, B = global_batch_size // process_count):

* crop mode (codec): ``audio`` float32 [B, S] in [-1, 1], ``audio_len`` int32 [B],
  ``speaker_id`` int32 [B]; S = ``data.segment_samples``.
* bucket mode (TTS): ``audio`` float32 [B, Tb], ``audio_len`` int32 [B], ``phonemes`` int32
  [B, P], ``phoneme_len`` int32 [B], ``durations`` int32 [B, P], ``speaker_id`` int32 [B];
  Tb one of ``data.bucket_samples``, P = ``data.max_phonemes``. ``durations`` is absent when the
  corpus stores none (built without aligner output); a corpus without ``phonemes`` (no
  transcripts) is refused in bucket mode.
* bucket mode with ``data.features='latents'`` (stage 2, on `jaxtts-codec encode-dataset`
  shards): ``latents`` float32 [B, Tb // hop, D] and ``latent_len`` int32 [B] instead of the
  audio fields (hop and D from the manifest's ``latents`` entry); the rest as above.
  ``data.features='codes'`` likewise: ``codes`` int32 [B, Tb // hop, Q] and ``code_len``.

Extra features (``data.extra_features``, both modes): every name must be a feature the
manifest lists (`jaxtts.data.features`; a missing one is an error naming it and the manifest)
or one of the derived labels ``phone_labels`` / ``phone_index`` (int32, from ``durations``).
A frame-level feature at hop ``h`` comes as [B, S // h, ...] (crop) or [B, Tb // h, ...]
(bucket): in crop mode the crop then starts on a multiple of every requested hop, so frame
``j`` of the crop is frame ``start // h + j`` of the utterance, and ``S`` must be a multiple
of each hop. A per-utterance feature (``timbre``) comes as [B, *shape]; a phoneme-level one
(``phone_prosody_codes``; bucket mode only) as [B, P, *shape] beside ``phonemes``. Dtypes:
integer features int32, float ones float32, ``voiced`` bool. Valid frames of a row: ``ceil(len / h)``
with ``len`` the row's ``audio_len`` (or primary length x its hop).

Rows past ``audio_len`` / ``phoneme_len`` are zero (frame features past the row's frames too).
With ``drop_remainder=False`` a finite pipeline's last batch (per bucket) is padded to B with
empty rows (all lengths 0).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
from typing import Any, Sequence

import grain
import ml_collections
from absl import flags
import numpy as np
from ml_collections import config_dict

from jaxtts.data import features as features_lib
from jaxtts.data.source import MANIFEST, CorpusSource, RecordLocation, open_source

log = logging.getLogger(__name__)

MODES = ("crop", "bucket")
FEATURES = ("audio", "latents", "codes")
# Primary feature -> its length field in batches.
_LENGTH_KEY = {"audio": "audio_len", "latents": "latent_len", "codes": "code_len"}
# Keys of the bucket iterator's state that count filtered utterances.
FILTER_KEYS = ("filtered_audio_too_long", "filtered_too_many_phonemes")


def default_data_config() -> ml_collections.ConfigDict:
  """The ``data`` block of every task config (copy it, then override fields).

  Fields:
    dir: corpus directory (``manifest.json`` + shards); required with the default source.
    source: ``'array_record'`` (``data.dir``) or ``'tfds'``: the TFDS dataset
      ``tfds_name`` prepared in ``tfds_data_dir`` (None: TFDS's default) by
      ``data_pipelines/tfds_builders.py`` (`jaxtts.data.tfds_source`); same batches.
    train_split / eval_split: split names for training and evaluation.
    sample_rate: Hz the model expects; a corpus or record at another rate is an error.
    mode: ``'crop'`` (codec: fixed random audio segments) or ``'bucket'`` (TTS: whole
      utterances padded to the smallest fitting length bucket, with phonemes/durations).
    features: bucket mode: ``'audio'`` (waveforms), ``'latents'`` (codec latents from
      `jaxtts-codec encode-dataset` shards) or ``'codes'`` (discrete codec codes); buckets
      still count samples.
    extra_features: more fields per row, aligned with the audio (module docstring):
      stored features the manifest lists (``f0``, ``voiced``, ``codes``, ``timbre``, ...)
      and the derived ``phone_labels`` / ``phone_index``.
    segment_samples: crop length in samples (crop mode); shorter utterances are zero-padded
      and ``audio_len`` says how much is real.
    bucket_samples: increasing padded audio lengths (bucket mode), multiples of the corpus
      hop_length; longer utterances are filtered and counted.
    max_phonemes: phoneme padding length P (bucket mode); utterances with more phonemes are
      filtered and counted.
    speaker_balanced: train only: draw every speaker equally often (class-balanced
      sampling; GMM-LM paper) instead of every utterance once per epoch.
    shuffle: train only: shuffle globally with a new order every epoch.
    num_epochs: None repeats training data forever (and reads eval data once); an int
      stops after that many epochs.
    drop_remainder: drop a finite pipeline's partial last batch (True) or pad it with
      empty rows (False).
    read_threads / read_buffer_size: threads and look-ahead (elements) that read and decode
      records (`grain.ReadOptions`).
    worker_count: >0 runs the pipeline in that many processes (`mp_prefetch`); batches then
      come from the workers in turn (deterministic for a given worker_count).
    worker_buffer_size: batches each worker process keeps ready.
    prefetch_buffer_size: batches a background thread keeps ready in the main process
      (0 disables).
    tune_malloc: fix glibc's mmap / trim thresholds (`tune_malloc`) in the processes that
      run the pipeline, so per-element record buffers are not page-faulted in afresh.
  """
  return ml_collections.ConfigDict({
      "dir": config_dict.placeholder(str),
      "source": "array_record",
      "tfds_name": config_dict.placeholder(str),
      "tfds_data_dir": config_dict.placeholder(str),
      "train_split": "train",
      "eval_split": "valid",
      "sample_rate": 16000,
      "mode": "crop",
      "features": "audio",
      "extra_features": (),
      "segment_samples": 16000,
      "bucket_samples": (32000, 64000, 96000, 160000, 240000),
      "max_phonemes": 256,
      "speaker_balanced": False,
      "shuffle": True,
      "num_epochs": config_dict.placeholder(int),
      "drop_remainder": True,
      "read_threads": 4,
      "read_buffer_size": 64,
      "worker_count": 0,
      "worker_buffer_size": 2,
      "prefetch_buffer_size": 2,
      "tune_malloc": True,
  })


# glibc malloc settings of `tune_malloc`.
MALLOC_MMAP_THRESHOLD = 32 << 20
MALLOC_TRIM_THRESHOLD = 128 << 20
_malloc_tuned: bool | None = None


def tune_malloc() -> bool:
  """Keeps the buffers the read path frees in the heap instead of handing them back (glibc).

  Every element allocates and frees buffers the size of its record (ArrayRecord's chunk, the
  record's bytes, decoded arrays): 0.3-1.4 MB for the paper presets. With glibc's defaults
  those come from mmap (>= 128 KiB, until the per-process dynamic threshold catches up) or
  from a heap top that is trimmed back to the OS as soon as twice that is free, so the next
  element faults its pages in again: 40-120 page faults per element at 2-3 us each in this
  project's VM (ns3:paper: ~0.2 ms of system time per element, a third of its CPU time).
  Fixing M_MMAP_THRESHOLD at 32 MiB (glibc's ceiling for its dynamic threshold; batches
  larger than that still get their own zeroed mapping) and M_TRIM_THRESHOLD at 128 MiB keeps
  them mapped; the cost: up to 128 MiB of freed main-heap memory stays in RSS (thread heaps are
  at most 64 MiB each). Fixing one threshold turns glibc's dynamic adjustment off, so both are
  set together.

  Runs once per process (`make_dataset`; Grain worker processes through ``worker_init_fn``).
  Does nothing when ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` are set (the
  environment's choice wins), with ``data.tune_malloc=False``, or where there is no glibc
  ``mallopt``. Returns whether the settings are in place.
  """
  global _malloc_tuned
  if _malloc_tuned is not None:
    return _malloc_tuned
  _malloc_tuned = False
  if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
    return False
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return False
  m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
  _malloc_tuned = bool(mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD)
                       and mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD))
  return _malloc_tuned


def _worker_init(worker_index: int, worker_count: int) -> None:
  """``mp_prefetch`` worker start-up: `tune_malloc` in the worker process."""
  del worker_index, worker_count
  tune_malloc()


def _mix64(*words: int) -> int:
  """64 well-mixed bits from integers (splitmix64 chain); stable across processes and runs."""
  x = 0x9E3779B97F4A7C15
  mask = (1 << 64) - 1
  for w in words:
    x = (x ^ (int(w) & mask)) & mask
    x = (x + 0x9E3779B97F4A7C15) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    x ^= x >> 31
  return x


def _mix(*words: int) -> int:
  """A 32-bit seed from integers (the low bits of `_mix64`)."""
  return _mix64(*words) & 0xFFFFFFFF


# Seed stream tags.
_SHUFFLE, _BALANCE, _CROP = 1, 2, 3


class SpeakerBalancedMapDataset(grain.MapDataset):
  """Class-balanced speaker sampling as an index-level transform.

  Position ``j`` of epoch ``e`` (``N`` positions per epoch, ``K`` speakers) belongs to
  speaker ``j % K``; that speaker's ``k``-th draw (``k = e * ceil(N / K) + j // K``) walks a
  per-cycle permutation of the speaker's utterances (a new permutation, from ``seed``, each
  time they are used up). Each speaker thus appears ``N / K`` times per epoch (+-1) however
  many utterances it has, rare speakers are repeated, frequent ones subsampled without
  repetition inside a cycle. Apply `shuffle` afterwards to mix the speakers.

  Elements are ``parent[i]`` for the chosen parent index ``i``.

  The cycle's permutation is a NumPy permutation from ``(seed, speaker, cycle)``, kept per
  speaker until its next cycle (memory: one int per record). Grain's ``index_shuffle`` would
  need no memory, but it cycle-walks a domain of at least 2**16 indices, so one call costs
  ~50 ms / group size (3.6 ms for a speaker with 14 utterances, 0.23 ms for 150, measured on
  this project's CPU), more than reading and decoding the record.
  """

  def __init__(self, parent: grain.MapDataset, speaker_of_index: np.ndarray, *, seed: int):
    super().__init__(parent)
    ids = np.asarray(speaker_of_index)
    if ids.shape != (len(parent),):
      raise ValueError(f"speaker_of_index has shape {ids.shape}, parent has {len(parent)} "
                       "elements")
    self._groups = [np.flatnonzero(ids == s) for s in np.unique(ids)]
    self._length = len(parent)
    self._per_epoch = math.ceil(self._length / len(self._groups))
    self._seed = int(seed)
    self._cycles: dict[int, tuple[int, np.ndarray]] = {}  # speaker -> (cycle, permutation)

  def __len__(self) -> int:
    return self._length

  def __str__(self) -> str:
    return f"SpeakerBalancedMapDataset(speakers={len(self._groups)})"

  def _permutation(self, s: int, cycle: int) -> np.ndarray:
    """Speaker ``s``'s utterance order in ``cycle``: a permutation of its group positions."""
    cached = self._cycles.get(s)
    if cached is not None and cached[0] == cycle:
      return cached[1]
    perm = np.random.default_rng(_mix(self._seed, s, cycle)).permutation(len(self._groups[s]))
    self._cycles[s] = (cycle, perm)  # Atomic under the read threads; a race recomputes.
    return perm

  def parent_index(self, index: int) -> int:
    """The parent index drawn for element ``index`` (any non-negative int)."""
    epoch, j = divmod(int(index), self._length)
    s = j % len(self._groups)
    group = self._groups[s]
    k = epoch * self._per_epoch + j // len(self._groups)
    cycle, pos = divmod(k, len(group))
    if len(group) > 1:
      pos = int(self._permutation(s, cycle)[pos])
    return int(group[pos])

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self.parent_index(index)]


class EpochShuffleMapDataset(grain.MapDataset):
  """Global shuffle with a new order every epoch, from one NumPy permutation per epoch.

  Element ``e * N + i`` (``N`` parent elements, epoch ``e``) is ``parent[e * N + perm_e[i]]``
  with ``perm_e = default_rng(_mix(seed, e)).permutation(N)``: the contract of Grain's
  ``MapDataset.shuffle`` (a pure function of ``seed`` and the index, a different order each
  epoch, any index reachable at once, so the iterator state stays Grain's element position),
  at O(1) per element instead of one ``index_shuffle`` call each. ``index_shuffle`` needs no
  memory but cycle-walks a domain of at least 2**16 indices, ~50 ms / N per call (0.25 ms
  per element on a 112-record corpus, more than reading and decoding the record).

  The permutation of an epoch is computed on its first element (one ``permutation(N)``:
  ~50 ms per 1e6 records on this project's CPU) and kept with the previous epoch's (read
  threads straddle an epoch boundary); memory: 4 bytes per record per kept epoch, in each
  process (32 MiB at most). Above ``max_cached_records`` (2**22) records the order is Grain's
  ``index_shuffle`` per element instead (a different order; ~7 us per call at that size, no
  memory).
  """

  max_cached_records = 1 << 22

  def __init__(self, parent: grain.MapDataset, *, seed: int):
    super().__init__(parent)
    self._seed = int(seed)
    self._length = len(parent)
    self._epochs: dict[int, np.ndarray] = {}
    self._fallback = None
    if self._length > self.max_cached_records:
      self._fallback = parent.shuffle(seed=self._seed & 0xFFFFFFFF)

  def __len__(self) -> int:
    return self._length

  def __str__(self) -> str:
    return f"EpochShuffleMapDataset(seed={self._seed})"

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_epochs"] = {}  # Worker processes recompute what they use.
    return state

  def permutation(self, epoch: int) -> np.ndarray:
    """Epoch ``epoch``'s order: ``perm[i]`` is the parent position of element ``i``."""
    perm = self._epochs.get(epoch)
    if perm is None:
      perm = np.random.default_rng(_mix(self._seed, epoch)).permutation(
          self._length).astype(np.int32)
      # Keep this epoch and the one before; dict updates are atomic under the read threads
      # (a race recomputes the same permutation).
      self._epochs = {e: p for e, p in self._epochs.items() if e == epoch - 1} | {epoch: perm}
    return perm

  def parent_index(self, index: int) -> int:
    """The parent index of element ``index`` (any non-negative int)."""
    if self._fallback is not None:
      return self._fallback._shuffled_index(int(index))  # pylint: disable=protected-access
    epoch, i = divmod(int(index), self._length)
    return epoch * self._length + int(self.permutation(epoch)[i])

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self.parent_index(index)]


@dataclasses.dataclass(frozen=True)
class _Field:
  """One batch field besides the fixed ones: where it comes from and its per-row geometry.

  ``hop`` 0 means per-utterance (``inner`` is its whole shape) or, with ``per_phoneme``, one
  row per phoneme (padded to ``data.max_phonemes``); ``derived`` fields are computed from
  ``phonemes`` / ``durations``; ``spec`` is the manifest's (None when derived).
  """
  name: str
  hop: int
  inner: tuple[int, ...]
  dtype: str
  derived: bool = False
  spec: dict | None = None
  per_phoneme: bool = False


def _batch_dtype(dtype: str) -> str:
  kind = np.dtype(dtype).kind
  return "bool" if kind == "b" else "int32" if kind in "iu" else "float32"


def _plan_fields(source: CorpusSource, names: Sequence[str],
                 flag: str = "data.extra_features") -> tuple[_Field, ...]:
  """The `_Field` of each name; a name the manifest lacks is an error naming it."""
  path = os.path.join(source.corpus_dir, MANIFEST)
  specs = features_lib.require(source.manifest, names, path, flag)
  out = []
  for name in names:
    if name in features_lib.DERIVED:
      out.append(_Field(name, source.hop_length, (), "int32", derived=True))
      continue
    spec = specs[name]
    if spec["level"] not in ("frame", "utterance", "phoneme") or name in features_lib.BASE_FIELDS:
      raise ValueError(f"{flag}: {name!r} is a {spec['level']}-level base field ({path}); "
                       "extra features are frame-, phoneme- or utterance-level stored fields")
    hop = int(spec["hop_length"]) if spec["level"] == "frame" else 0
    out.append(_Field(name, hop, tuple(int(d) for d in spec.get("inner_shape", ())),
                      _batch_dtype(spec["dtype"]), spec=dict(spec),
                      per_phoneme=spec["level"] == "phoneme"))
  return tuple(out)


# int16 PCM -> float32 in [-1, 1).
_PCM_SCALE = np.float32(1.0 / 32768.0)


def _frame_window(field: _Field, ex: dict, first: int, stop: int) -> np.ndarray:
  """Frames ``[first, stop)`` of a frame-level ``field`` (fewer past the utterance's end), as
  stored (a view) or, for the derived labels, computed for those frames only; equal to
  ``_full_value(field, ex)[first:stop]`` up to the dtype cast."""
  if not field.derived:
    return np.asarray(ex[field.name])[first:stop]
  durations = np.asarray(ex["durations"], np.int64)
  ends = np.cumsum(durations)
  total = int(ends[-1]) if len(ends) else 0
  frames = np.arange(min(first, total), min(stop, total))
  # The phoneme covering frame j: the first whose end is past j (as np.repeat lays them out).
  pos = np.searchsorted(ends, frames, side="right")
  if field.name == "phone_labels":
    return np.asarray(ex["phonemes"], np.int32)[pos]
  return pos.astype(np.int32)


def _full_value(field: _Field, ex: dict) -> np.ndarray:
  """The utterance's whole array of ``field`` in its batch dtype."""
  if field.name == "phone_labels":
    return features_lib.phone_labels(ex["phonemes"], ex["durations"])
  if field.name == "phone_index":
    return features_lib.phone_index(ex["durations"])
  return np.asarray(ex[field.name]).astype(field.dtype, copy=False)


class _LoadExample:
  """``map_with_index`` transform: record index -> decoded (and in crop mode cropped) dict.

  Picklable (worker processes). The crop's randomness comes from ``(seed, index)`` where
  ``index`` is the element's position in the global (pre host-sharding) stream. With
  frame-level extra fields the crop start is a multiple of the lcm of their hops.
  """

  def __init__(self, source: CorpusSource, mode: str, segment_samples: int, seed: int,
               features: str = "audio", extras: Sequence[_Field] = ()):
    self.source = source
    self.features = features
    self.mode = mode
    self.segment_samples = int(segment_samples)
    self.seed = int(seed)
    self.extras = tuple(extras)
    self.durations = features_lib.has(source.manifest, "durations")
    self.stored = {f.name: f.spec for f in self.extras if not f.derived}
    if features != "audio":
      self.stored[features] = features_lib.manifest_features(source.manifest)[features]
    hops = [f.hop for f in self.extras if f.hop]
    self.crop_step = math.lcm(*hops) if hops else 1
    phone_level = [f.name for f in self.extras if f.per_phoneme]
    if mode == "crop" and phone_level:
      raise ValueError(f"config.data.extra_features: {phone_level} are phoneme-level fields; "
                       "a crop cuts phonemes, so they are read in bucket mode only")

  def crop_start(self, index: int, length: int) -> int:
    """The crop's first sample in an utterance of ``length`` samples, for stream element
    ``index``: uniform over the multiples of ``crop_step`` that leave a whole segment (0 when
    the utterance is not longer than the segment). 64 bits of `_mix64` (seed, index) scaled to
    the choices (bias < choices / 2**64); no per-element NumPy generator (~17 us each)."""
    if length <= self.segment_samples:
      return 0
    choices = (length - self.segment_samples) // self.crop_step + 1
    return self.crop_step * ((_mix64(self.seed, _CROP, index) * choices) >> 64)

  def __call__(self, index: int, record_index: int) -> dict[str, Any]:
    ex = self.source.example(record_index)
    if self.stored:
      features_lib.check_record(ex, self.stored, RecordLocation(self.source, record_index))
    audio = np.asarray(ex["audio"])
    if self.mode == "crop":
      size = self.segment_samples
      start = self.crop_start(index, len(audio))
      audio = audio[start:start + size]
      n = len(audio)
      out = np.empty((size,), np.float32) if n == size else np.zeros((size,), np.float32)
      np.multiply(audio, _PCM_SCALE, out=out[:n])  # int16 -> float32 in one pass
      element = {"audio": out, "audio_len": np.int32(n),
                 "speaker_id": np.int32(ex["speaker_id"])}
      for f in self.extras:
        if not f.hop:
          element[f.name] = _full_value(f, ex)
          continue
        frames = size // f.hop
        first = start // f.hop
        crop = np.zeros((frames,) + f.inner, f.dtype)
        part = _frame_window(f, ex, first, first + frames)
        crop[:len(part)] = part  # casts to the batch dtype
        element[f.name] = crop
      return element
    if self.features == "audio":
      # int16 PCM as stored: `_pad_bucket` scales it into the batch (one pass, no float
      # copy of the whole utterance here).
      out = {"audio": audio}
    else:
      dtype = _batch_dtype(self.stored[self.features]["dtype"])
      out = {self.features: np.asarray(ex[self.features]).astype(dtype, copy=False)}
    return {
        "id": ex["id"],
        **out,
        **{f.name: _full_value(f, ex) for f in self.extras},
        "phonemes": np.asarray(ex["phonemes"], np.int32),
        **({"durations": np.asarray(ex["durations"], np.int32)} if self.durations else {}),
        "speaker_id": np.int32(ex["speaker_id"]),
    }


class _StackCrops:
  """Batch function for crop mode: stacks, and pads a short last batch with empty rows."""

  def __init__(self, batch_size: int):
    self.batch_size = batch_size

  def __call__(self, elements: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    batch = {k: np.stack([e[k] for e in elements]) for k in elements[0]}
    missing = self.batch_size - len(elements)
    if missing > 0:
      batch = {k: np.concatenate([v, np.zeros((missing,) + v.shape[1:], v.dtype)])
               for k, v in batch.items()}
    return batch


def _pad_bucket(elements: Sequence[dict[str, Any]], batch_size: int, samples: int,
                max_phonemes: int, latent_hop: int = 0, latent_dim: int = 0,
                primary: _Field | None = None, extras: Sequence[_Field] = (),
                durations: bool = True) -> dict[str, np.ndarray]:
  """Bucket-mode batch of ``batch_size`` rows padded to ``samples`` / ``max_phonemes``
  (``durations`` only when the corpus stores them).

  The primary field is ``audio`` [B, samples] (float32; elements may carry it as float32 or
  as int16 PCM, scaled here), or ``primary`` (latents / codes) [B, samples
  // hop, *inner] (``latent_hop``/``latent_dim``: the latents, kept for callers of the old
  signature); frame-level ``extras`` [B, samples // hop, *inner], per-utterance ones
  [B, *inner].
  """
  if primary is None and latent_hop:
    primary = _Field("latents", latent_hop, (latent_dim,), "float32")
  if primary is not None:
    key, length_key = primary.name, _LENGTH_KEY[primary.name]
    batch = {key: np.zeros((batch_size, samples // primary.hop) + primary.inner, primary.dtype)}
  else:
    key, length_key = "audio", "audio_len"
    batch = {"audio": np.zeros((batch_size, samples), np.float32)}
  batch[length_key] = np.zeros((batch_size,), np.int32)
  for f in extras:
    rows = (samples // f.hop,) if f.hop else (max_phonemes,) if f.per_phoneme else ()
    batch[f.name] = np.zeros((batch_size,) + rows + f.inner, f.dtype)
  batch.update({
      "phonemes": np.zeros((batch_size, max_phonemes), np.int32),
      "phoneme_len": np.zeros((batch_size,), np.int32),
      **({"durations": np.zeros((batch_size, max_phonemes), np.int32)} if durations else {}),
      "speaker_id": np.zeros((batch_size,), np.int32),
  })
  for b, e in enumerate(elements):
    t, p = len(e[key]), len(e["phonemes"])
    value = e[key]
    if key == "audio" and value.dtype == np.int16:  # PCM as stored (`_LoadExample`)
      np.multiply(value, _PCM_SCALE, out=batch[key][b, :t])
    else:
      batch[key][b, :t] = value
    batch[length_key][b] = t
    for f in extras:
      if f.hop or f.per_phoneme:
        batch[f.name][b, :len(e[f.name])] = e[f.name]
      else:
        batch[f.name][b] = e[f.name]
    batch["phonemes"][b, :p] = e["phonemes"]
    if durations:
      batch["durations"][b, :p] = e["durations"]
    batch["phoneme_len"][b] = p
    batch["speaker_id"][b] = e["speaker_id"]
  return batch


class BucketBatchIterDataset(grain.IterDataset):
  """Filters too-long utterances, then batches within length buckets (one buffer each).

  An element goes to the smallest bucket ``Tb >= len(audio)``; a bucket emits a padded batch
  when it holds ``batch_size`` elements. Elements longer than the largest bucket or with more
  than ``max_phonemes`` phonemes are dropped, counted in the iterator state
  (`FILTER_KEYS`, read them with `filtered_counts`) and logged with the running count
  (at counts 1, 2, 4, 8, ...). When the parent ends, the non-empty buckets are flushed in
  bucket order: padded with empty rows, or dropped if ``drop_remainder``.

  Checkpointing: the state stores the parent's state from just before the oldest buffered
  element and the ordinals of the buffered elements; `set_state` replays the parent from
  there and keeps exactly those elements, so a restored iterator continues bit-identically.
  The replay reads the elements that arrived since the oldest buffered one (a few batches'
  worth unless a bucket is very rare).
  """

  def __init__(self, parent: grain.IterDataset, *, bucket_samples: Sequence[int],
               batch_size: int, max_phonemes: int, drop_remainder: bool,
               latent_hop: int = 0, latent_dim: int = 0, primary: _Field | None = None,
               extras: Sequence[_Field] = (), durations: bool = True):
    super().__init__(parent)
    self.durations = bool(durations)  # whether elements (and batches) carry durations
    if primary is None and latent_hop:
      primary = _Field("latents", int(latent_hop), (int(latent_dim),), "float32")
    self.primary = primary  # None: audio.
    self.extras = tuple(extras)
    self.bucket_samples = tuple(int(b) for b in bucket_samples)
    if not self.bucket_samples or list(self.bucket_samples) != sorted(set(self.bucket_samples)):
      raise ValueError(f"bucket_samples must be strictly increasing, got {bucket_samples}")
    self.batch_size = int(batch_size)
    self.max_phonemes = int(max_phonemes)
    self.drop_remainder = bool(drop_remainder)

  def __str__(self) -> str:
    return f"BucketBatchIterDataset(buckets={self.bucket_samples}, batch={self.batch_size})"

  def __iter__(self) -> grain.DatasetIterator:
    return _BucketBatchIterator(self._parent.__iter__(), self)


class _BucketBatchIterator(grain.DatasetIterator):
  """Iterator of `BucketBatchIterDataset` (state documented there)."""

  def __init__(self, parent: grain.DatasetIterator, spec: BucketBatchIterDataset):
    super().__init__(parent)
    self._spec = spec
    self._reset_buffers()
    self._filtered = {k: 0 for k in FILTER_KEYS}
    self._next_ordinal = 0  # Elements pulled from the parent so far.
    self._parent_exhausted = False

  def _reset_buffers(self):
    # Per bucket: list of (ordinal, parent state before the element, element).
    self._buffers: list[list[tuple[int, Any, dict]]] = [[] for _ in self._spec.bucket_samples]

  def _samples_of(self, element: dict) -> int:
    """Length in audio samples: of the waveform, or of the latents / codes (frames x hop)."""
    primary = self._spec.primary
    return (len(element[primary.name]) * primary.hop if primary is not None
            else len(element["audio"]))

  def _bucket_of(self, element: dict) -> int | None:
    """Bucket index, or None after counting a filtered element."""
    p = len(element["phonemes"])
    t = self._samples_of(element)
    key = None
    if t > self._spec.bucket_samples[-1]:
      key = "filtered_audio_too_long"
      why = f"{t} samples > largest bucket {self._spec.bucket_samples[-1]}"
    elif p > self._spec.max_phonemes:
      key = "filtered_too_many_phonemes"
      why = f"{p} phonemes > max_phonemes {self._spec.max_phonemes}"
    if key is None:
      return int(np.searchsorted(self._spec.bucket_samples, t, side="left"))
    self._filtered[key] += 1
    n = self._filtered[key]
    if n & (n - 1) == 0:  # Powers of two: a running count without flooding the log.
      log.warning("bucket batching filtered utterance %r (%s); %s so far: %d",
                  element.get("id", "?"), why, key, n)
    return None

  def _emit(self, bucket: int, items: list[tuple[int, Any, dict]]) -> dict[str, np.ndarray]:
    return _pad_bucket([e for _, _, e in items], self._spec.batch_size,
                       self._spec.bucket_samples[bucket], self._spec.max_phonemes,
                       primary=self._spec.primary, extras=self._spec.extras,
                       durations=self._spec.durations)

  def __next__(self) -> dict[str, np.ndarray]:
    self._assert_not_closed()
    size = self._spec.batch_size
    while not self._parent_exhausted:
      state_before = copy.deepcopy(self._parent.get_state())
      try:
        element = next(self._parent)
      except StopIteration:
        self._parent_exhausted = True
        break
      ordinal = self._next_ordinal
      self._next_ordinal += 1
      bucket = self._bucket_of(element)
      if bucket is None:
        continue
      buf = self._buffers[bucket]
      buf.append((ordinal, state_before, element))
      if len(buf) == size:
        self._buffers[bucket] = []
        return self._emit(bucket, buf)
    # Parent exhausted: flush the remaining buckets in bucket order.
    for bucket, buf in enumerate(self._buffers):
      if buf:
        self._buffers[bucket] = []
        if not self._spec.drop_remainder:
          return self._emit(bucket, buf)
    raise StopIteration

  def get_state(self) -> dict[str, Any]:
    buffered = [item for buf in self._buffers for item in buf]
    if buffered:
      oldest = min(buffered, key=lambda item: item[0])
      parent_state, replay_from = oldest[1], oldest[0]
    else:
      parent_state, replay_from = self._parent.get_state(), self._next_ordinal
    return {
        "parent": copy.deepcopy(parent_state),
        "replay_from": replay_from,
        "next_ordinal": self._next_ordinal,
        "buffered": [[o for o, _, _ in buf] for buf in self._buffers],
        "parent_exhausted": self._parent_exhausted,
        **self._filtered,
    }

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._reset_buffers()
    self._filtered = {k: int(state[k]) for k in FILTER_KEYS}
    wanted = {int(o): b for b, ords in enumerate(state["buffered"]) for o in ords}
    ordinal = int(state["replay_from"])
    end = int(state["next_ordinal"])
    while ordinal < end:
      state_before = copy.deepcopy(self._parent.get_state())
      element = next(self._parent)
      if ordinal in wanted:
        bucket = int(np.searchsorted(self._spec.bucket_samples, self._samples_of(element),
                                     side="left"))
        if bucket != wanted[ordinal]:
          raise ValueError(f"iterator state does not match the data: element {ordinal} "
                           f"replays into bucket {bucket}, the state says {wanted[ordinal]}")
        self._buffers[bucket].append((ordinal, state_before, element))
      ordinal += 1
    self._next_ordinal = end
    self._parent_exhausted = bool(state.get("parent_exhausted", False))

  def __str__(self) -> str:
    return f"_BucketBatchIterator(buckets={self._spec.bucket_samples})"


def filtered_counts(state_or_iterator: Any) -> dict[str, int]:
  """Utterances filtered so far by bucket batching, summed over worker processes.

  Args:
    state_or_iterator: an iterator from `make_iterator` or its ``get_state()``.

  Returns:
    ``{"filtered_audio_too_long": n, "filtered_too_many_phonemes": m}`` (zeros in crop mode).
  """
  state = (state_or_iterator.get_state() if hasattr(state_or_iterator, "get_state")
           else state_or_iterator)
  totals = {k: 0 for k in FILTER_KEYS}
  stack = [state]
  while stack:
    node = stack.pop()
    if isinstance(node, dict):
      for k, v in node.items():
        if k in totals and isinstance(v, (int, np.integer)):
          totals[k] += int(v)
        else:
          stack.append(v)
    elif isinstance(node, (list, tuple)):
      stack.extend(node)
  return totals


def batch_shapes(data_cfg: ml_collections.ConfigDict, batch_size: int,
                 source: CorpusSource | None = None
                 ) -> list[dict[str, tuple[tuple[int, ...], np.dtype]]]:
  """Every ``{field: (shape, dtype)}`` the pipeline can emit for a per-process batch.

  ``source`` (the split's `CorpusSource`) is needed for the geometry of latents, codes and
  extra features; without it only the audio fields are known.
  """
  b = int(batch_size)
  if source is None:
    if _extra_names(data_cfg) or data_cfg.features != "audio":
      raise ValueError("batch_shapes: data.features / data.extra_features need the corpus: "
                       "pass source=CorpusSource(data.dir, split)")
    primary, extras = None, ()
  else:
    primary, extras = _layout(data_cfg, source)

  def extra_shapes(samples: int) -> dict:
    return {f.name: ((b,) + ((samples // f.hop,) if f.hop else ()) + f.inner, np.dtype(f.dtype))
            for f in extras}

  if data_cfg.mode == "crop":
    s = int(data_cfg.segment_samples)
    return [{"audio": ((b, s), np.dtype(np.float32)),
             "audio_len": ((b,), np.dtype(np.int32)),
             "speaker_id": ((b,), np.dtype(np.int32)), **extra_shapes(s)}]
  p = int(data_cfg.max_phonemes)
  out = []
  for t in data_cfg.bucket_samples:
    t = int(t)
    if primary is None:
      main = {"audio": ((b, t), np.dtype(np.float32)), "audio_len": ((b,), np.dtype(np.int32))}
    else:
      main = {primary.name: ((b, t // primary.hop) + primary.inner, np.dtype(primary.dtype)),
              _LENGTH_KEY[primary.name]: ((b,), np.dtype(np.int32))}
    durations = source is None or features_lib.has(source.manifest, "durations")
    out.append({**main, **extra_shapes(t),
                "phonemes": ((b, p), np.dtype(np.int32)),
                "phoneme_len": ((b,), np.dtype(np.int32)),
                **({"durations": ((b, p), np.dtype(np.int32))} if durations else {}),
                "speaker_id": ((b,), np.dtype(np.int32))})
  return out


def _allow_unparsed_grain_flags() -> None:
  """Lets `mp_prefetch` run outside an absl app (tests, notebooks, plain scripts).

  Grain 0.2.18's worker startup reads the absl flag
  ``--grain_enable_multiprocess_worker_profiling`` directly, which raises
  ``UnparsedFlagAccessError`` when absl flags were never parsed. Marking that one flag as
  present keeps its default (False) and changes nothing else; under an absl app (the
  trainer) flags are parsed and this is a no-op.
  """
  name = "grain_enable_multiprocess_worker_profiling"
  if not flags.FLAGS.is_parsed() and name in flags.FLAGS:
    flags.FLAGS[name].present = True


def latent_geometry(source: CorpusSource) -> tuple[int, int]:
  """``(hop_length, dim)`` of a latent corpus (its manifest's ``latents`` entry)."""
  info = source.manifest.get("latents")
  if not info:
    raise ValueError(f"data.features='latents' but {source.corpus_dir}/manifest.json has no "
                     f"'latents' entry: point data.dir at the output of "
                     f"`jaxtts-codec encode-dataset`")
  return int(info["hop_length"]), int(info["dim"])


def _extra_names(cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
  """``data.extra_features`` as a tuple (absent in configs written before it existed)."""
  names = cfg.get("extra_features", ()) or ()
  if isinstance(names, str):
    names = (names,) if names else ()
  return tuple(str(n) for n in names)


def _layout(cfg: ml_collections.ConfigDict, source: CorpusSource
            ) -> tuple[_Field | None, tuple[_Field, ...]]:
  """The primary field (None: audio) and the extra fields of ``cfg`` on ``source``."""
  primary = None
  if cfg.features == "latents":
    hop, dim = latent_geometry(source)
    primary = _Field("latents", hop, (dim,), "float32")
  elif cfg.features == "codes":
    primary = _plan_fields(source, ("codes",), flag="data.features")[0]
  names = _extra_names(cfg)
  if cfg.features in names:
    raise ValueError(f"data.extra_features lists {cfg.features!r}, which data.features "
                     "already makes the primary field")
  if len(set(names)) != len(names):
    raise ValueError(f"data.extra_features has repeated names: {names}")
  extras = _plan_fields(source, names)
  if cfg.mode != "crop" and not features_lib.has(source.manifest, "phonemes"):
    raise features_lib.FeatureError(
        f"{source.corpus_dir}/{MANIFEST}: data.mode={cfg.mode!r} reads phonemes, and this "
        "corpus has no transcripts (its 'features' lists no 'phonemes'); train a codec on it "
        "(data.mode='crop')")
  if cfg.mode == "crop":
    bad = [f"{f.name} (hop {f.hop})" for f in extras if f.hop and int(cfg.segment_samples) % f.hop]
    if bad:
      raise ValueError(f"data.segment_samples {cfg.segment_samples} is not a whole number of "
                       f"frames of {', '.join(bad)}")
  else:
    for f in ((primary,) if primary else ()) + extras:
      bad = [int(t) for t in cfg.bucket_samples if f.hop and int(t) % f.hop]
      if bad:
        raise ValueError(f"data.bucket_samples {bad} must be multiples of the hop {f.hop} of "
                         f"{f.name!r} ({source.corpus_dir}/manifest.json)")
  return primary, extras


def _check_config(cfg: ml_collections.ConfigDict, hop_length: int) -> None:
  if cfg.mode not in MODES:
    raise ValueError(f"data.mode must be one of {MODES}, got {cfg.mode!r}")
  if cfg.features not in FEATURES:
    raise ValueError(f"data.features must be one of {FEATURES}, got {cfg.features!r}")
  if cfg.features != "audio" and cfg.mode != "bucket":
    raise ValueError(f"data.features={cfg.features!r} needs data.mode='bucket' (crop mode "
                     "crops audio; add latents / codes to data.extra_features instead)")
  if cfg.mode == "crop" and not int(cfg.segment_samples) > 0:
    raise ValueError(f"data.segment_samples must be positive, got {cfg.segment_samples}")
  if cfg.mode == "bucket":
    buckets = [int(b) for b in cfg.bucket_samples]
    if not buckets or buckets != sorted(set(buckets)) or buckets[0] <= 0:
      raise ValueError(f"data.bucket_samples must be strictly increasing positive lengths, "
                       f"got {tuple(cfg.bucket_samples)}")
    bad = [b for b in buckets if b % hop_length]
    if bad:
      raise ValueError(f"data.bucket_samples {bad} are not multiples of the corpus "
                       f"hop_length {hop_length}")
    if not int(cfg.max_phonemes) > 0:
      raise ValueError(f"data.max_phonemes must be positive, got {cfg.max_phonemes}")


def index_dataset(data_cfg: ml_collections.ConfigDict, source: Any, *, seed: int,
                  train: bool) -> grain.MapDataset:
  """The index stage: record indices in stream order (balanced, shuffled, repeated).

  ``range(N)`` -> `SpeakerBalancedMapDataset` (train, ``data.speaker_balanced``) ->
  `EpochShuffleMapDataset` (train, ``data.shuffle``) -> ``repeat(num_epochs)`` (train:
  forever unless ``data.num_epochs``; eval: once). Element ``i`` is the record index the
  ``i``-th element of the global stream reads.
  """
  ds = grain.MapDataset.range(len(source))
  if train and data_cfg.speaker_balanced:
    ds = SpeakerBalancedMapDataset(ds, source.record_speaker_ids(), seed=_mix(seed, _BALANCE))
  if train and data_cfg.shuffle:
    ds = EpochShuffleMapDataset(ds, seed=_mix(seed, _SHUFFLE))
  num_epochs = data_cfg.num_epochs
  if num_epochs is None and not train:
    num_epochs = 1
  return ds.repeat(num_epochs)


def make_dataset(
    data_cfg: ml_collections.ConfigDict,
    split: str,
    *,
    global_batch_size: int,
    seed: int,
    train: bool,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.IterDataset:
  """The host-local dataset of fixed-shape batches for ``split`` (see module docstring).

  Args:
    data_cfg: a `default_data_config()`-shaped ConfigDict.
    split: corpus split name (e.g. ``data_cfg.train_split``).
    global_batch_size: batch size over all processes; must divide by ``process_count``.
    seed: the only source of randomness (shuffle, speaker balancing, crops).
    train: shuffle / balance (as configured) and repeat forever unless ``num_epochs``;
      otherwise read the split in order, once unless ``num_epochs``.
    process_index: this host's index (default ``jax.process_index()``).
    process_count: number of hosts (default ``jax.process_count()``).

  Returns:
    A `grain.IterDataset` of numpy batch dicts.
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  if global_batch_size % process_count:
    raise ValueError(f"global_batch_size {global_batch_size} does not divide over "
                     f"{process_count} processes")
  batch_size = global_batch_size // process_count
  if batch_size <= 0:
    raise ValueError(f"global_batch_size must be positive, got {global_batch_size}")
  tune = bool(data_cfg.get("tune_malloc", True))
  if tune:
    tune_malloc()
  source = open_source(data_cfg, split)  # data.source: CorpusSource or TfdsSource.
  _check_config(data_cfg, source.hop_length)
  primary, extras = _layout(data_cfg, source)

  ds = index_dataset(data_cfg, source, seed=seed, train=train)
  ds = ds.map_with_index(
      _LoadExample(source, data_cfg.mode, data_cfg.segment_samples, seed, data_cfg.features,
                   extras))
  ds = ds[process_index::process_count]
  read_threads = int(data_cfg.read_threads)
  it = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=read_threads,
      prefetch_buffer_size=max(int(data_cfg.read_buffer_size), read_threads)
      if read_threads > 0 else 0))
  if data_cfg.mode == "crop":
    it = it.batch(batch_size, drop_remainder=bool(data_cfg.drop_remainder),
                  batch_fn=_StackCrops(batch_size))
  else:
    it = BucketBatchIterDataset(it, bucket_samples=data_cfg.bucket_samples,
                                batch_size=batch_size, max_phonemes=data_cfg.max_phonemes,
                                drop_remainder=bool(data_cfg.drop_remainder),
                                primary=primary, extras=extras,
                                durations=features_lib.has(source.manifest, "durations"))
  if int(data_cfg.worker_count) > 0:
    _allow_unparsed_grain_flags()
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=int(data_cfg.worker_count),
        per_worker_buffer_size=int(data_cfg.worker_buffer_size)),
        worker_init_fn=_worker_init if tune else None)
  if int(data_cfg.prefetch_buffer_size) > 0:
    it = grain.experimental.ThreadPrefetchIterDataset(
        it, prefetch_buffer_size=int(data_cfg.prefetch_buffer_size))
  return it


def make_iterator(
    data_cfg: ml_collections.ConfigDict,
    split: str,
    *,
    global_batch_size: int,
    seed: int,
    train: bool,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.DatasetIterator:
  """``iter(make_dataset(...))``: the checkpointable iterator the trainer saves.

  Save with ``ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it), ...)`` and
  restore into a fresh `make_iterator` with ``grain.checkpoint.CheckpointRestore(it)``.
  Close it (``it.close()``) when done if ``data.worker_count > 0``.
  """
  return iter(make_dataset(data_cfg, split, global_batch_size=global_batch_size, seed=seed,
                           train=train, process_index=process_index,
                           process_count=process_count))
