"""The plan of the embedded espeak corpus: its speakers, utterances, splits and shards.

Speakers. A speaker is an espeak voice variant (``espeak-ng-data/voices/!v``: m1..m8, f1..f5
and the named human-sounding ones; robotic, whispering and echo voices are left out) with an
accent (``en-us`` or ``en``), a base pitch (0-99), a pitch range (0-99) and a rate (words per
minute). Variants that share formant settings form a *family*. The zero-shot speakers get whole
families of their own, so their timbre is never heard in training; training speakers cycle
through the other families (alternating male and female), then through their variants, with
fresh accent/pitch/rate settings whenever a variant repeats (`plan_speakers`).

Utterances. Each speaker's last ``valid_fraction`` of utterances go to ``valid`` (zero-shot
speakers' to ``test_zero_shot``); each one's raw text is a `data_pipelines.espeak_grammar`
sentence whose focus noun, for training utterances, cycles per accent through
`data_pipelines.espeak_grammar.coverage_nouns` (`plan_utterances`; `coverage_report` checks
the cover without synthesizing). `assign_shards` spreads each split over seeded shards.
Everything is drawn from the seed (numpy SeedSequences keyed by speaker and utterance).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Sequence

import numpy as np

from data_pipelines.espeak_grammar import NOUN_FORMS, Grammar, coverage_nouns
from jaxtts.text import default_phoneme_table, phonemize_clauses
from jaxtts.text.symbols import PhonemeTable

SPLITS = ("train", "valid", "test_zero_shot")
LANGUAGES = ("en-us", "en")

# ---------------------------------------------------------------------------------------------
# Voices

# Families of espeak voice variants that share formant settings (so sound alike).
MALE_FAMILIES: tuple[tuple[str, ...], ...] = (
    ("m1",), ("m2",), ("m3",), ("m4",), ("m5",), ("m6",), ("m7", "m8"), ("Alex",), ("Mike",),
    ("Andy", "Lee"), ("Denis",), ("Diogo", "Henrique", "Hugo", "michel", "miguel"), ("Gene",),
    ("Mario", "Michael", "gustave", "marcelo"), ("adam", "benjamin"), ("antonio",), ("boris",),
    ("david",), ("edward",), ("iven",), ("max",), ("mike2",), ("norbert",), ("paul",),
    ("pedro",), ("rob", "robert", "quincy"), ("travis",), ("victor",), ("Reed",),
    ("grandpa",), ("john",),
)
FEMALE_FAMILIES: tuple[tuple[str, ...], ...] = (
    ("f1",), ("f2",), ("f3",), ("f4", "aunty"), ("f5",), ("Alicia",), ("Andrea",), ("Annie",),
    ("anika",), ("belinda", "linda"), ("grandma",), ("shelby",), ("steph", "steph2", "steph3"),
    ("zac",),
)
PITCH_RANGE = (25, 75)        # espeak pitch 0-99 (position inside the variant's own range)
PITCH_RANGE_RANGE = (25, 80)  # espeak pitch range 0-99
RATE_RANGE = (140, 200)       # words per minute


@dataclasses.dataclass(frozen=True)
class Speaker:
  id: int
  name: str
  split: str          # "train" or "test_zero_shot"
  variant: str
  family: str
  gender: str
  language: str
  pitch: int
  pitch_range: int
  rate: int

  @property
  def voice(self) -> str:
    return f"{self.language}+{self.variant}"

  def to_json(self) -> dict:
    d = dataclasses.asdict(self)
    d["voice"] = self.voice
    return d


def _rng(*key: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def plan_speakers(num_train: int, num_zero_shot: int, seed: int) -> list[Speaker]:
  """Deterministic speakers: ids 0..num_train-1 train, then the zero-shot ones."""
  if num_train < 1 or num_zero_shot < 0:
    raise ValueError(f"need >= 1 training speaker and >= 0 zero-shot speakers, got "
                     f"{num_train}, {num_zero_shot}")
  rng = _rng(seed, 101)
  male = [MALE_FAMILIES[i] for i in rng.permutation(len(MALE_FAMILIES))]
  female = [FEMALE_FAMILIES[i] for i in rng.permutation(len(FEMALE_FAMILIES))]
  # Held-out families for zero-shot speakers: alternate female/male.
  held: list[tuple[tuple[str, ...], str]] = []
  for k in range(num_zero_shot):
    pool, gender = (female, "female") if k % 2 == 0 else (male, "male")
    if len(pool) < 2:
      raise ValueError(f"too many zero-shot speakers ({num_zero_shot}): not enough {gender} "
                       "voice families left for training")
    held.append((pool.pop(0), gender))
  # Training: alternate male/female, cycling through families, then variants inside them.
  queues = {"male": [(f, v) for r in range(5) for f in male if r < len(f) for v in [f[r]]],
            "female": [(f, v) for r in range(5) for f in female if r < len(f) for v in [f[r]]]}
  speakers: list[Speaker] = []
  used: set[tuple] = set()

  def settings(gen: np.random.Generator, k: int) -> tuple[str, int, int, int]:
    return (LANGUAGES[k % 2], int(gen.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
            int(gen.integers(PITCH_RANGE_RANGE[0], PITCH_RANGE_RANGE[1] + 1)),
            int(gen.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)))

  for i in range(num_train):
    gender = "male" if i % 2 == 0 else "female"
    q = queues[gender]
    family, variant = q[(i // 2) % len(q)]
    gen = _rng(seed, 102, i)
    while True:
      lang, pitch, prange, rate = settings(gen, i // 2 + (i // 2) // len(q))
      if (variant, lang, pitch, prange, rate) not in used:
        break
    used.add((variant, lang, pitch, prange, rate))
    speakers.append(Speaker(i, "", "train", variant, family[0], gender, lang, pitch, prange,
                            rate))
  for k, (family, gender) in enumerate(held):
    gen = _rng(seed, 103, k)
    variant = family[int(gen.integers(len(family)))]
    lang, pitch, prange, rate = settings(gen, k // 2)
    speakers.append(Speaker(num_train + k, "", "test_zero_shot", variant, family[0], gender,
                            lang, pitch, prange, rate))
  named = []
  for s in speakers:
    name = f"{s.id:03d}-{s.variant.lower()}-{s.language}-p{s.pitch}r{s.pitch_range}w{s.rate}"
    named.append(dataclasses.replace(s, name=name))
  return named


# ---------------------------------------------------------------------------------------------
# Plan


@dataclasses.dataclass(frozen=True)
class Utterance:
  speaker: Speaker
  index: int
  split: str
  raw_text: str
  shard: int = 0

  @property
  def id(self) -> str:
    return f"{self.speaker.name}-{self.index:05d}"


def plan_utterances(speakers: Sequence[Speaker], per_speaker: int, valid_fraction: float,
                    seed: int, table: PhonemeTable) -> list[Utterance]:
  """Every utterance of the build, in speaker then index order (shards not yet assigned)."""
  if per_speaker < 1:
    raise ValueError(f"--utterances-per-speaker must be >= 1, got {per_speaker}")
  if not 0.0 <= valid_fraction < 1.0:
    raise ValueError(f"--valid-fraction must be in [0, 1), got {valid_fraction}")
  n_valid = int(round(valid_fraction * per_speaker))
  if valid_fraction > 0 and per_speaker >= 2:
    n_valid = min(max(n_valid, 1), per_speaker - 1)
  cover = {lang: coverage_nouns(lang, json.dumps(table.to_json())) for lang in LANGUAGES}
  counters = {lang: 0 for lang in LANGUAGES}
  out = []
  for spk in speakers:
    for i in range(per_speaker):
      if spk.split == "train":
        split = "valid" if i >= per_speaker - n_valid else "train"
      else:
        split = "test_zero_shot"
      rng = _rng(seed, 200, spk.id, i)
      if split == "train":
        nouns = cover[spk.language]
        focus = nouns[counters[spk.language] % len(nouns)]
        counters[spk.language] += 1
      else:
        focus = NOUN_FORMS[int(rng.integers(len(NOUN_FORMS)))][0]
      out.append(Utterance(spk, i, split, Grammar(rng).sentence(focus)))
  return out


def assign_shards(utts: Sequence[Utterance], shard_size: int, seed: int
                  ) -> tuple[list[Utterance], dict[str, int]]:
  """Spreads each split over ceil(n / shard_size) shards, speakers mixed (seeded)."""
  if shard_size < 1:
    raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
  num_shards, out = {}, list(utts)
  for s_ix, split in enumerate(SPLITS):
    idx = [k for k, u in enumerate(out) if u.split == split]
    n = max(1, math.ceil(len(idx) / shard_size))
    num_shards[split] = n
    perm = _rng(seed, 300, s_ix).permutation(len(idx))
    for pos, k in zip(perm.tolist(), idx):
      out[k] = dataclasses.replace(out[k], shard=pos % n)
  return out, num_shards


def shard_name(split: str, i: int, n: int) -> str:
  return f"{split}-{i:05d}-of-{n:05d}.array_record"


def coverage_report(speakers: int = 12, zero_shot_speakers: int = 3,
                    utterances_per_speaker: int = 40, valid_fraction: float = 0.1,
                    seed: int = 0, split: str = "train") -> dict:
  """Which table symbols the planned sentences of a build (one split) cover, without
  synthesizing: ``{"covered": [...], "missing": [...], "extra": [...]}``."""
  table = default_phoneme_table()
  spks = plan_speakers(speakers, zero_shot_speakers, seed)
  utts = plan_utterances(spks, utterances_per_speaker, valid_fraction, seed, table)
  seen = set()
  for u in utts:
    if u.split == split:
      for c in phonemize_clauses(u.raw_text, language=u.speaker.language, table=table):
        seen.update(c.symbols)
  want = set(table.symbols[1:])
  return {"covered": sorted(seen & want), "missing": sorted(want - seen),
          "extra": sorted(seen - want)}
