"""Sentences of the embedded espeak corpus: a seeded English grammar (no copied text).

Templates over a few hundred words (`NOUNS`, `ADJECTIVES`, `VERBS`, ...) write raw sentences
with numbers, money, percentages, ordinals, years, times and abbreviations, which
`jaxtts.text.normalize_text` spells out (`Grammar.sentence`). `coverage_nouns` is a greedy
cover of the phoneme table by the grammar's nouns: every training utterance of
`data_pipelines.espeak_plan.plan_utterances` uses one as its *focus* noun, cycling per accent,
so even a small build hears every phoneme (`data_pipelines.espeak_plan.coverage_report`).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from jaxtts.text import phonemize_clauses
from jaxtts.text.symbols import PhonemeTable

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
