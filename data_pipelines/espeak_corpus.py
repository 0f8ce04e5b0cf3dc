"""The embedded offline corpus: English sentences from a seeded grammar, spoken by espeak-ng.

    jaxtts-corpus --out DIR [--speakers 12] [--zero-shot-speakers 3]
                  [--utterances-per-speaker 40] [--valid-fraction 0.1] [--seed 0]
                  [--shard-size 256] [--workers 1] [--f0] [--overwrite]
    jaxtts-corpus derive f0 --data-dir DIR [--out DIR2] [--workers N]   (data_pipelines.derive)
    jaxtts-corpus librispeech|libritts|librilight --root DIR --out DIR ...  (real_corpus)

Speakers. A speaker is an espeak voice variant (``espeak-ng-data/voices/!v``: m1..m8, f1..f5
and the named human-sounding ones; robotic, whispering and echo voices are left out) with an
accent (``en-us`` or ``en``), a base pitch (0-99), a pitch range (0-99) and a rate (words per
minute). Variants that share formant settings form a *family*. The zero-shot speakers get whole
families of their own, so their timbre is never heard in training; training speakers cycle
through the other families (alternating male and female), then through their variants, with
fresh accent/pitch/rate settings whenever a variant repeats. Everything is drawn from ``--seed``.

Sentences. A seeded grammar (templates over a few hundred words; no copied text) writes raw
sentences with numbers, money, percentages, ordinals, years, times and abbreviations, which
`jaxtts.text.normalize_text` spells out. Every training utterance carries a *focus* noun that
cycles, per accent, through a greedy cover of the phoneme table, so even a small build hears
every phoneme (`coverage_report`).

Labels. Each utterance is phonemized with `jaxtts.text.phonemize_clauses` (the inference
frontend) and synthesized with the phoneme events of espeak; the events (pauses dropped) must
equal the G2P phonemes, else the utterance is skipped and counted (``num_skipped`` per split in
the manifest, and a log line). A phoneme lasts from its event to the next phoneme's; the pause
after a clause belongs to its punctuation token; pauses inside a clause and leading silence go
to the phoneme before / the first phoneme. Audio is resampled 22050 -> 16000 Hz with soxr,
loudness-normalized, zero-padded to a multiple of ``hop_length`` = 200; event times are mapped to
frame boundaries (rounded, then nudged so every token has at least one frame), so that
``durations.sum() == len(audio) // 200``.

F0. ``--f0`` also stores ``f0`` (float32 Hz, 0 when unvoiced) and ``voiced`` (bool) per
200-sample frame, from WORLD DIO + StoneMask (`jaxtts.audio.f0`), and lists them in the
manifest's ``features``. It is off by default: DIO costs ~7 ms per second of audio, about four
times the synthesis itself, so it would make the build several times slower. The same fields
can be added to any existing corpus later with ``jaxtts-corpus derive f0`` (same values).

Determinism. Every random choice is drawn from ``--seed`` (numpy SeedSequences keyed by
speaker and utterance), `jaxtts.text.espeak.synthesize` is a pure function of its arguments
(a fresh library instance per call), and records are written in plan order whatever the number
of ``--workers``: the same arguments give byte-identical files. Output is written to a
temporary directory beside ``--out`` and renamed into place at the end.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import sys
import time
from typing import Sequence

import numpy as np

from jaxtts.audio import f0 as f0_lib
from jaxtts.data import features, records
from jaxtts.data.source import write_speaker_index
from jaxtts.text import espeak, normalize_text, phonemize_clauses
from jaxtts.text import default_phoneme_table
from jaxtts.text.symbols import PhonemeTable

log = logging.getLogger("jaxtts.espeak_corpus")

FORMAT_VERSION = 1
SAMPLE_RATE = 16000
HOP_LENGTH = 200
SPLITS = ("train", "valid", "test_zero_shot")
LANGUAGES = ("en-us", "en")
TASK_SIZE = 32          # utterances per worker task
SYNTH_VOLUME = 60       # espeak amplitude (0-200); leaves headroom, loudness is set afterwards
TARGET_RMS_DBFS = -23.0
PEAK_LIMIT = 0.89       # max |sample| after normalization, as a fraction of full scale

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
# Grammar

# Nouns: "singular" or "singular|plural" (regular plurals are formed by rule).
NOUNS = """
cat dog horse mouse|mice bird fish|fish frog tiger lion zebra giraffe monkey sheep|sheep cow
spider rabbit donkey camel penguin dolphin oyster goose|geese deer|deer bear puppy kitten
house garden kitchen window door table chair sofa mirror cupboard lamp carpet pillow blanket
bottle kettle cup spoon knife|knives basket box bucket ladder rope wire iron clock watch
book letter pencil notebook newspaper picture poster map ticket envelope calendar computer
camera radio guitar violin piano drum trumpet flute
apple orange banana lemon cherry tomato potato|potatoes carrot onion pepper cabbage cucumber
bread butter cheese cereal yogurt sandwich cookie biscuit pizza salad soup sugar chocolate
coffee tea juice water milk honey vegetable
river mountain valley forest desert island ocean lake beach bridge village city|cities
castle tower church museum library theater hospital school market factory airport station
garage office palace harbor lighthouse fountain square stadium
car bus train bicycle boat ship airplane truck tractor rocket
teacher doctor farmer soldier sailor pilot singer writer painter lawyer nurse judge
engineer pioneer tourist stranger neighbor friend child|children woman|women man|men king
queen prince princess wizard dragon giant hero|heroes boy girl baby uncle aunt daughter
father mother
morning evening night|nights autumn summer winter spring year hour week
storm cloud rain|rain snow|snow wind thunder rainbow moon star planet sun
coin jewel diamond pearl crystal treasure toy doll ball kite balloon
idea theory story|stories question answer secret dream voice noise song poem joke
journey career souvenir brochure chandelier cashier career fire tire choir lion diet
jury area hair shoe jacket shirt button ribbon curtain cotton kettle
sewer cartoon harpoon audition auditorium grandma laboratory controversy semicircle avatar
caviar reservoir camouflage guacamole afternoon marshmallow
""".split()

ADJECTIVES = """
big small tiny huge enormous little old young new ancient modern red green blue yellow
purple orange brown black white golden silver wooden bright dark quiet loud happy sad
angry gentle strange curious beautiful heavy light warm cold wet dry clean dirty fresh
smooth rough sharp soft hard clever brave foolish polite friendly mysterious precious
pleasant wonderful terrible ordinary useful familiar severe sincere obscure mature secure
fierce weird cheerful awkward vague famous hungry thirsty lazy busy empty broken frozen
shiny lovely careful quick slow certain natural usual pure sure poor rich royal loyal
quiet square tall short long strong
""".split()

# (base, past)
VERBS = [
    ("open", "opened"), ("close", "closed"), ("carry", "carried"), ("find", "found"),
    ("see", "saw"), ("bring", "brought"), ("buy", "bought"), ("take", "took"),
    ("give", "gave"), ("paint", "painted"), ("build", "built"), ("watch", "watched"),
    ("follow", "followed"), ("measure", "measured"), ("visit", "visited"),
    ("clean", "cleaned"), ("repair", "repaired"), ("borrow", "borrowed"),
    ("choose", "chose"), ("throw", "threw"), ("catch", "caught"), ("draw", "drew"),
    ("push", "pushed"), ("pull", "pulled"), ("lift", "lifted"), ("hide", "hid"),
    ("wash", "washed"), ("sell", "sold"), ("share", "shared"), ("order", "ordered"),
    ("enjoy", "enjoyed"), ("admire", "admired"), ("ignore", "ignored"),
    ("explore", "explored"), ("describe", "described"), ("remember", "remembered"),
    ("discover", "discovered"), ("examine", "examined"), ("deliver", "delivered"),
    ("prepare", "prepared"), ("compare", "compared"), ("decorate", "decorated"),
    ("photograph", "photographed"), ("rescue", "rescued"), ("forget", "forgot"),
    ("leave", "left"), ("hear", "heard"), ("love", "loved"), ("hate", "hated"),
    ("move", "moved"), ("touch", "touched"), ("check", "checked"), ("join", "joined"),
    ("employ", "employed"), ("destroy", "destroyed"), ("measure", "measured"),
    ("treasure", "treasured"), ("judge", "judged"), ("choose", "chose"), ("fix", "fixed"),
    ("hire", "hired"), ("inspire", "inspired"), ("cure", "cured"), ("tour", "toured"),
]
INTRANSITIVE = [
    ("arrive", "arrived"), ("laugh", "laughed"), ("sing", "sang"), ("dance", "danced"),
    ("sleep", "slept"), ("wait", "waited"), ("travel", "traveled"), ("smile", "smiled"),
    ("run", "ran"), ("swim", "swam"), ("work", "worked"), ("rest", "rested"),
    ("listen", "listened"), ("whisper", "whispered"), ("shout", "shouted"), ("fly", "flew"),
]

ADVERBS = """
quickly slowly quietly carefully happily suddenly finally usually rarely always never often
gently loudly proudly nearly actually honestly eagerly patiently already altogether
""".split()

TIMES = [
    "yesterday", "today", "tomorrow", "tonight", "last week", "last year", "every morning",
    "on Monday", "on Friday", "in the evening", "at noon", "after lunch", "before dinner",
    "in the autumn", "during the storm", "all day", "once again", "this afternoon",
]

PREPOSITIONS = """
in on under behind near beside across through over into toward around above below beyond
along inside outside
""".split()

NAMES = """
Anna Ben Clara David Emma Frank Grace Henry Isaac Julia Kevin Laura Martin Nora Oscar Paula
Rachel Simon Tina Victor Wendy Zoe George Judith Thomas Charlotte Joseph Ruth Hugh Ivy Owen
Eugene Maya Theodore Fiona Edgar Irene Arthur Sophia Lily Noah Oliver Amelia Jack Harry
""".split()

SURNAMES = """
Smith Brown Taylor Walker Green Hughes Moore Fisher Parker Young Shaw Foster Wright Bishop
Carter Lloyd Thornton Booth Jones Miller Davis Clark Lewis Turner Cooper
""".split()

PLACES = """
London Paris Boston Chicago Denver Tokyo Berlin Vienna Sydney Dublin Toronto Houston Oregon
Texas Ohio Georgia Norway Brazil Egypt Scotland Iowa Portugal Glasgow Zurich Hawaii Missouri
Europe
""".split()

TITLES = ["Dr.", "Mr.", "Mrs.", "Ms.", "Prof.", "Capt."]
INTERJECTIONS = ["Oh", "Wow", "Look", "Hey", "Well", "Yes", "No", "Please", "Wait", "Sure"]
PRONOUNS = ["He", "She", "They", "We", "I", "You"]
UNITS = ["kg", "lbs", "oz"]


def _plural(noun: str) -> str:
  if noun.endswith(("s", "x", "sh", "ch")):
    return noun + "es"
  if noun.endswith("y") and noun[-2:-1] not in "aeiou":
    return noun[:-1] + "ies"
  return noun + "s"


def _parse_nouns(items: Sequence[str]) -> list[tuple[str, str]]:
  out, seen = [], set()
  for item in items:
    sing, _, plur = item.partition("|")
    if sing not in seen:
      seen.add(sing)
      out.append((sing, plur or _plural(sing)))
  return out


NOUN_FORMS = _parse_nouns(NOUNS)
_AN_EXCEPTIONS = {"uncle", "umbrella", "hour", "honest", "onion", "oyster", "island",
                  "idea", "iron"}


def _article(word: str) -> str:
  w = word.lower()
  if w in _AN_EXCEPTIONS or (w[0] in "aeio" and not w.startswith(("eu", "one"))):
    return "an"
  return "a"


def _decap(clause: str) -> str:
  """Lower-cases a clause's first letter unless it starts with a name (or "I")."""
  first = clause.split(" ", 1)[0]
  if first in NAMES or first == "I":
    return clause
  return clause[:1].lower() + clause[1:]


class Grammar:
  """Seeded sentence templates. `sentence(rng, focus)` returns raw (unnormalized) text whose
  first noun phrase uses the noun ``focus`` when given."""

  def __init__(self, rng: np.random.Generator):
    self.rng = rng

  def pick(self, items):
    return items[int(self.rng.integers(len(items)))]

  def chance(self, p: float) -> bool:
    return bool(self.rng.random() < p)

  def np(self, focus: str | None = None, plural: bool | None = None, det: bool = True) -> str:
    if focus is not None:
      noun, plural = focus, False
    else:
      sing, plur = self.pick(NOUN_FORMS)
      plural = self.chance(0.25) if plural is None else plural
      noun = plur if plural else sing
    adj = self.pick(ADJECTIVES) if self.chance(0.45) else None
    head = f"{adj} {noun}" if adj else noun
    if not det:
      return head
    if plural:
      d = self.pick(["the", "some", "many", "these", "those", "our", "their", "my",
                     str(int(self.rng.integers(2, 13))), "a few"])
    else:
      d = self.pick(["the", "the", "a", "my", "your", "our", "their", "his", "her", "this",
                     "that", "every"])
      if d == "a":
        d = _article(head)
    return f"{d} {head}"

  def subject(self, focus=None) -> str:
    if focus is None and self.chance(0.3):
      return self.pick(NAMES)
    s = self.np(focus)
    return s[0].upper() + s[1:]

  def pp(self) -> str:
    return f"{self.pick(PREPOSITIONS)} {self.np()}"

  def time(self) -> str:
    return self.pick(TIMES)

  def clause(self, focus=None) -> str:
    verb = self.pick(VERBS)[1]
    parts = [self.subject(focus)]
    if self.chance(0.2):
      parts.append(self.pick(ADVERBS))
    parts += [verb, self.np()]
    if self.chance(0.5):
      parts.append(self.pp())
    elif self.chance(0.4):
      parts.append(self.time())
    return " ".join(parts)

  def money(self) -> str:
    cur = self.pick(["$", "$", "$", "£", "€"])
    kind = int(self.rng.integers(4))
    if kind == 0:
      return f"{cur}{int(self.rng.integers(1, 100))}"
    if kind == 1:
      return f"{cur}{int(self.rng.integers(1, 50))}.{int(self.rng.integers(1, 100)):02d}"
    if kind == 2:
      return f"{cur}{int(self.rng.integers(1, 10))},{int(self.rng.integers(0, 1000)):03d}"
    return f"{cur}{int(self.rng.integers(2, 20))} million"

  def ordinal(self) -> str:
    n = int(self.rng.integers(1, 40))
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"

  def sentence(self, focus: str | None = None) -> str:
    g, f = self, focus
    k = int(self.rng.integers(20))
    if k == 0:
      return f"{g.clause(f)}."
    if k == 1:
      return f"{g.pick(NAMES)} {g.pick(VERBS)[1]} {g.np(f)} {g.time()}."
    if k == 2:
      return f"Did {g.np(f)} {g.pick(VERBS)[0]} {g.np()}?"
    if k == 3:
      return (f"{g.pick(['Where', 'Why', 'When', 'How'])} did {g.pick(NAMES)} "
              f"{g.pick(VERBS)[0]} {g.np(f)}?")
    if k == 4:
      return (f"{g.pick(TITLES)} {g.pick(SURNAMES)} {g.pick(VERBS)[1]} {g.np(f)} "
              f"and {int(self.rng.integers(2, 100))} {g.np(plural=True, det=False)}.")
    if k == 5:
      return f"{g.pick(NAMES)} paid {g.money()} for {g.np(f)}."
    if k == 6:
      return f"In {int(self.rng.integers(1850, 2031))}, {_decap(g.clause(f))}."
    if k == 7:
      return (f"The {g.ordinal()} {g.np(f, det=False)} was {g.pick(ADJECTIVES)}, but "
              f"{g.np()} was {g.pick(ADJECTIVES)}.")
    if k == 8:
      pct = (f"{int(self.rng.integers(2, 100))}" if self.chance(0.7)
             else f"{int(self.rng.integers(1, 20))}.{int(self.rng.integers(1, 10))}")
      return (f"About {pct}% of the {g.np(plural=True, det=False)} near {g.np(f)} "
              f"{g.pick(INTRANSITIVE)[1]}.")
    if k == 9:
      return f"{g.pick(INTERJECTIONS)}! {g.subject(f)} is {g.pick(ADJECTIVES)}."
    if k == 10:
      if self.chance(0.25):
        return f"{g.clause(f)}. Furthermore, {_decap(g.clause())}."
      return (f"{g.clause(f)}, {g.pick(['and', 'but', 'so', 'although'])} "
              f"{_decap(g.clause())}.")
    if k == 11:
      h, m = int(self.rng.integers(1, 13)), self.pick(["00", "15", "30", "45", "05", "20"])
      return (f"{g.pick(NAMES)} met {g.np(f)} at {h}:{m} {g.pick(['a.m.', 'p.m.'])} "
              f"{g.pp()}.")
    if k == 12:
      return (f"{g.pick(NAMES)} lives at {int(self.rng.integers(2, 999))} "
              f"{g.pick(SURNAMES)} St. with {g.np(f)}.")
    if k == 13:
      return f"Please {g.pick(VERBS)[0]} {g.np(f)} {g.pp()}!"
    if k == 14:
      return (f"{g.subject(f)} {g.pick(INTRANSITIVE)[1]} {g.pick(ADVERBS)}. "
              f"{g.pick(PRONOUNS)} {g.pick(VERBS)[1]} {g.np()}.")
    if k == 15:
      if self.chance(0.5):
        return f"Is {g.np(f)} {g.pick(ADJECTIVES)}, or is it {g.pick(ADJECTIVES)}?"
      return (f"Are {g.np(plural=True)} {g.pick(ADJECTIVES)}, or are they near "
              f"{g.np(f)}?")
    if k == 16:
      return f"{g.pick(NAMES)} said that {_decap(g.clause(f))}."
    if k == 17:
      return (f"{g.subject(f)} weighs {int(self.rng.integers(2, 90))} {g.pick(UNITS)} "
              f"{g.time()}.")
    if k == 18:
      return (f"It was {g.pick(ADJECTIVES)} {g.time()}, so {g.pick(NAMES)} "
              f"{g.pick(VERBS)[1]} {g.np(f)} in {g.pick(PLACES)}.")
    return (f"{g.pick(NAMES)} and {g.pick(NAMES)} {g.pick(INTRANSITIVE)[1]} {g.pp()} "
            f"with {g.np(f)}.")


def vocabulary() -> list[str]:
  """Every word the grammar can emit (before normalization)."""
  words = set()
  for sing, plur in NOUN_FORMS:
    words |= {sing, plur}
  for base, past in VERBS + INTRANSITIVE:
    words |= {base, past}
  for group in (ADJECTIVES, ADVERBS, PREPOSITIONS, NAMES, SURNAMES, PLACES, INTERJECTIONS,
                PRONOUNS):
    words |= set(group)
  return sorted(words)


@functools.lru_cache(maxsize=None)
def coverage_nouns(language: str, table_json: str) -> tuple[str, ...]:
  """A greedy cover, in `NOUN_FORMS`, of the table symbols those nouns can produce."""
  table = PhonemeTable.from_json(table_json)
  sets = []
  for sing, _ in NOUN_FORMS:
    syms = set(phonemize_clauses(f"the {sing}", language=language, table=table)[0].phonemes)
    sets.append((sing, syms))
  todo = set().union(*(s for _, s in sets))
  chosen = []
  while todo:
    best = max(sets, key=lambda ns: len(ns[1] & todo))  # first of the best: deterministic
    chosen.append(best[0])
    todo -= best[1]
  return tuple(chosen)


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


# ---------------------------------------------------------------------------------------------
# Synthesis and labels


class AlignmentError(ValueError):
  """espeak's phoneme events do not match the G2P phonemes of the text."""


def frame_boundaries(starts: Sequence[int], num_samples_in: int, num_frames: int,
                     sr_in: int, sr_out: int = SAMPLE_RATE, hop: int = HOP_LENGTH
                     ) -> np.ndarray:
  """Token start samples (at ``sr_in``) -> frame boundaries [P+1] at ``sr_out`` / ``hop``.

  Boundaries are rounded to the nearest frame, the first is 0 and the last ``num_frames``;
  then a forward and a backward pass make them strictly increasing (every token >= 1 frame).
  """
  p = len(starts)
  if num_frames < p:
    raise AlignmentError(f"{p} tokens do not fit in {num_frames} frames")
  s = np.asarray(starts, np.int64)
  b = np.empty(p + 1, np.int64)
  b[:p] = (s * sr_out * 2 + sr_in * hop) // (2 * sr_in * hop)  # round(s * sr_out/sr_in / hop)
  b[0], b[p] = 0, num_frames
  b = np.clip(b, 0, num_frames)
  for i in range(1, p + 1):
    b[i] = max(b[i], b[i - 1] + 1) if i < p else b[i]
  for i in range(p - 1, 0, -1):
    b[i] = min(b[i], b[i + 1] - 1)
  assert np.all(np.diff(b) >= 1), b
  return b


def token_starts(clauses, synth: espeak.Synthesis, table: PhonemeTable, text: str) -> list[int]:
  """Start sample of every token of ``clauses`` (phonemes and punctuation tokens).

  Event symbols are mapped with the same `PhonemeTable.canonical` as the G2P; the sequence of
  non-pause events must equal the G2P phonemes.
  """
  events = []  # (canonical symbol or None for a pause, sample)
  for ev in synth.events:
    events.append((table.canonical(ev.symbol, text=text), ev.sample))
  phones = [(k, e) for k, e in enumerate(events) if e[0] is not None]
  g2p = [p for c in clauses for p in c.phonemes]
  got = [e[0] for _, e in phones]
  if got != g2p:
    raise AlignmentError(f"events {' '.join(got)} != G2P {' '.join(g2p)}")
  starts = []
  j = 0  # index into phones
  for c in clauses:
    for _ in c.phonemes:
      starts.append(phones[j][1][1])
      j += 1
    last_event = phones[j - 1][0]
    # The punctuation token starts at the first pause event after the clause's last phoneme.
    nxt = last_event + 1
    if nxt < len(events) and events[nxt][0] is None:
      starts.append(events[nxt][1])
    else:  # no pause: zero length here, frame_boundaries gives it one frame
      starts.append(phones[j][1][1] if j < len(phones) else len(synth.audio))
  starts[0] = 0  # leading silence goes to the first token
  if any(b < a for a, b in zip(starts, starts[1:])):
    raise AlignmentError("event times are not monotonic")
  return starts


def _resample(audio: np.ndarray, sr_in: int) -> np.ndarray:
  import soxr
  x = audio.astype(np.float32) / 32768.0
  if sr_in != SAMPLE_RATE:
    x = soxr.resample(x, sr_in, SAMPLE_RATE, quality="HQ")
  rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
  peak = float(np.max(np.abs(x))) if len(x) else 0.0
  if rms > 0:
    gain = min(10 ** (TARGET_RMS_DBFS / 20) / rms, PEAK_LIMIT / peak)
    x = x * np.float32(gain)
  pad = (-len(x)) % HOP_LENGTH
  x = np.pad(x, (0, pad))
  return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def synthesize_utterance(utt: Utterance, table: PhonemeTable, with_f0: bool = False) -> dict:
  """One record dict (the `jaxtts.data.records` fields, plus ``f0``/``voiced`` if
  ``with_f0``). Raises AlignmentError on mismatch."""
  spk = utt.speaker
  text = normalize_text(utt.raw_text)
  clauses = phonemize_clauses(text, language=spk.language, table=table, normalize=False)
  synth = espeak.synthesize(text, voice=spk.voice, pitch=spk.pitch, pitch_range=spk.pitch_range,
                            rate=spk.rate, volume=SYNTH_VOLUME, seed=0)
  starts = token_starts(clauses, synth, table, text)
  audio = _resample(synth.audio, synth.sample_rate)
  frames = len(audio) // HOP_LENGTH
  bounds = frame_boundaries(starts, len(synth.audio), frames, synth.sample_rate)
  symbols = [s for c in clauses for s in c.symbols]
  example = {
      "id": utt.id,
      "text": text,
      "phonemes": table.encode(symbols, text=text),
      "durations": np.diff(bounds).astype(np.int32),
      "audio": audio,
      "sample_rate": SAMPLE_RATE,
      "speaker_id": spk.id,
      "speaker": spk.name,
  }
  if with_f0:
    example["f0"], example["voiced"] = f0_lib.compute_f0(audio, SAMPLE_RATE, HOP_LENGTH)
  return example


def _run_task(task: tuple[int, list[Utterance], dict, bool]) -> tuple[int, list[tuple]]:
  """Worker: synthesizes a block of utterances -> (task index, results in order)."""
  index, utts, table_json, with_f0 = task
  table = PhonemeTable.from_json(table_json)
  out = []
  for utt in utts:
    try:
      ex = synthesize_utterance(utt, table, with_f0)
    except AlignmentError as e:
      out.append(("skip", utt.split, utt.shard, utt.id, f"{e} (text {utt.raw_text!r})"))
      continue
    out.append(("ok", utt.split, utt.shard, records.encode_example(ex), len(ex["audio"])))
  return index, out


# ---------------------------------------------------------------------------------------------
# Build


def _ordered_results(tasks: list, workers: int):
  """Yields task results in task order (``workers`` processes, at most ~4 x workers tasks in
  flight). Synthesis is a pure function of its arguments, so this order is all that
  determinism needs."""
  if workers == 1:
    for task in tasks:
      yield _run_task(task)[1]
    return
  # spawn: safe whatever threads the parent runs (JAX, tqdm); workers start once.
  ctx = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
    pending: dict[int, concurrent.futures.Future] = {}
    nxt = 0
    for i in range(len(tasks)):
      while nxt < len(tasks) and nxt < i + 4 * workers:
        pending[nxt] = ex.submit(_run_task, tasks[nxt])
        nxt += 1
      yield pending.pop(i).result()[1]


def build(out_dir: str, *, speakers: int = 12, zero_shot_speakers: int = 3,
          utterances_per_speaker: int = 40, valid_fraction: float = 0.1, seed: int = 0,
          shard_size: int = 256, workers: int = 1, overwrite: bool = False,
          progress: bool = True, f0: bool = False) -> dict:
  """Builds the corpus into ``out_dir``; returns the summary dict (also printed by `main`).

  ``f0`` also stores per-frame ``f0`` / ``voiced`` (module docstring).
  """
  from array_record.python.array_record_module import ArrayRecordWriter
  from tqdm import tqdm

  t0 = time.time()
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir) and not overwrite and (not os.path.isdir(out_dir)
                                                    or os.listdir(out_dir)):
    raise FileExistsError(f"{out_dir} exists and is not empty (pass --overwrite)")
  if workers < 1:
    raise ValueError(f"--workers must be >= 1, got {workers}")
  if seed < 0:
    raise ValueError(f"--seed must be >= 0, got {seed}")
  table = default_phoneme_table()
  spks = plan_speakers(speakers, zero_shot_speakers, seed)
  utts = plan_utterances(spks, utterances_per_speaker, valid_fraction, seed, table)
  utts, num_shards = assign_shards(utts, shard_size, seed)
  table_json = table.to_json()
  tasks = [(k, utts[i:i + TASK_SIZE], table_json, bool(f0)) for k, i in
           enumerate(range(0, len(utts), TASK_SIZE))]

  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f".{os.path.basename(out_dir)}.tmp-{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  counts = {s: 0 for s in SPLITS}
  samples = {s: 0 for s in SPLITS}
  skipped = {s: 0 for s in SPLITS}
  try:
    writers = {(s, i): ArrayRecordWriter(os.path.join(tmp, shard_name(s, i, num_shards[s])),
                                         records.WRITER_OPTIONS)
               for s in SPLITS for i in range(num_shards[s])}
    bar = tqdm(total=len(utts), desc="espeak corpus", unit="utt", disable=not progress,
               file=sys.stderr)
    for results in _ordered_results(tasks, workers):
      for r in results:
        if r[0] == "skip":
          _, split, _, uid, reason = r
          skipped[split] += 1
          log.warning("skipped %s: %s", uid, reason)
        else:
          _, split, shard, data, n = r
          writers[(split, shard)].write(data)
          counts[split] += 1
          samples[split] += n
      bar.update(len(results))
    bar.close()
    for w in writers.values():
      w.close()

    speaker_ids = {"train": [s.id for s in spks if s.split == "train"],
                   "valid": [s.id for s in spks if s.split == "train"],
                   "test_zero_shot": [s.id for s in spks if s.split == "test_zero_shot"]}
    manifest = {
        "format_version": FORMAT_VERSION,
        "builder": "espeak",
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "hop_length": HOP_LENGTH,
        "phoneme_table": table_json,
        "speakers": [s.to_json() for s in spks],
        "splits": {s: {"shards": [shard_name(s, i, num_shards[s]) for i in range(num_shards[s])],
                       "num_examples": counts[s],
                       "num_skipped": skipped[s],
                       "hours": round(samples[s] / SAMPLE_RATE / 3600, 6),
                       "speaker_ids": speaker_ids[s]} for s in SPLITS},
        "build_args": {"speakers": speakers, "zero_shot_speakers": zero_shot_speakers,
                       "utterances_per_speaker": utterances_per_speaker,
                       "valid_fraction": valid_fraction, "seed": seed,
                       "shard_size": shard_size, "espeak_ng": espeak.version(),
                       "f0": bool(f0)},
    }
    specs = features.f0_specs(HOP_LENGTH, SAMPLE_RATE, f0_lib.settings()) if f0 else {}
    manifest = features.with_features(manifest, specs)
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
      json.dump(manifest, f, sort_keys=True, indent=1)
      f.write("\n")
    # <split>.speaker_index.npy: class-balanced sampling reads it instead of every record.
    write_speaker_index(tmp, [s for s in SPLITS if counts[s]])  # e.g. no zero-shot speakers
    if os.path.exists(out_dir):
      old = out_dir + f".old-{os.getpid()}"
      os.rename(out_dir, old)
      os.rename(tmp, out_dir)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  total_skipped = sum(skipped.values())
  if total_skipped:
    log.warning("skipped %d utterances whose espeak events did not match the G2P: %s",
                total_skipped, skipped)
  size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
  return {"out": out_dir,
          "examples": counts,
          "hours": {s: round(samples[s] / SAMPLE_RATE / 3600, 4) for s in SPLITS},
          "skipped": skipped,
          "bytes": size,
          "seconds": round(time.time() - t0, 2)}


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


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv[:1] == ["derive"]:  # `jaxtts-corpus derive f0 ...`: add fields to a corpus
    from data_pipelines import derive  # pylint: disable=import-outside-toplevel
    return derive.main(argv[1:])
  if argv[:1] and argv[0] in ("librispeech", "libritts", "librilight"):  # real corpora
    from data_pipelines import real_corpus  # pylint: disable=import-outside-toplevel
    return real_corpus.main(argv)
  p = argparse.ArgumentParser(prog="jaxtts-corpus", description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="jaxtts-corpus derive f0 --data-dir DIR [--out DIR2]: add "
                              "per-frame f0 / voiced to an existing corpus (see "
                              "`jaxtts-corpus derive --help`); jaxtts-corpus "
                              "librispeech|libritts|librilight --root DIR --out DIR ...: a real "
                              "corpus (see `jaxtts-corpus librispeech --help`)")
  p.add_argument("--out", required=True, help="output directory (created atomically)")
  p.add_argument("--speakers", type=int, default=12, help="training speakers (default 12)")
  p.add_argument("--zero-shot-speakers", type=int, default=3,
                 help="held-out speakers for test_zero_shot (default 3)")
  p.add_argument("--utterances-per-speaker", type=int, default=40)
  p.add_argument("--valid-fraction", type=float, default=0.1,
                 help="fraction of each training speaker's utterances that go to valid")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--shard-size", type=int, default=256, help="records per shard")
  p.add_argument("--workers", type=int, default=1, help="processes (output does not depend "
                 "on it)")
  p.add_argument("--f0", action="store_true", help="also store per-frame f0 / voiced (WORLD "
                 "DIO + StoneMask; adds ~7 ms per second of audio)")
  p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  summary = build(args.out, speakers=args.speakers, zero_shot_speakers=args.zero_shot_speakers,
                  utterances_per_speaker=args.utterances_per_speaker,
                  valid_fraction=args.valid_fraction, seed=args.seed,
                  shard_size=args.shard_size, workers=args.workers, overwrite=args.overwrite,
                  progress=not args.no_progress, f0=args.f0)
  print(json.dumps(summary, sort_keys=True))
  return 0


if __name__ == "__main__":
  sys.exit(main())
