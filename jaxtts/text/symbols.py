"""The versioned phoneme symbol table shared by every corpus, model and inference run.

Symbols are espeak-ng's ASCII phoneme mnemonics for English (``en`` and ``en-us``), with the
stress mark of a syllable attached to its vowel (``'`` primary, ``,`` secondary, nothing for
unstressed), e.g. ``"'oU"``, ``",E"``, ``"@"``. Clause punctuation is kept as one token per
clause, ``<,> <.> <?> <!>``; it also carries the pause that follows the clause. Id 0 is
``<pad>``. Word boundaries are not tokens (every token is a sound or a pause and gets at
least one frame in the corpus durations).

Raw espeak symbols map to table symbols through `PhonemeTable.canonical`:

* espeak's pauses (``_``, ``_:``, ``_!`` ...), stress-only and boundary marks are dropped;
* a few rare or foreign phonemes (French nasal vowels, German/Scottish fricatives, ...) and
  rare stress/vowel combinations map to their nearest English table symbol (`ALIASES`,
  `BASE_ALIASES`, then the same vowel at another stress level);
* anything else raises `UnknownPhonemeError`, naming the symbol and the text.

`DEFAULT_SYMBOLS` is exactly the set the embedded corpus grammar produces for ``en`` and
``en-us`` (``tests/test_corpus.py`` checks both directions), and every word of espeak's English
dictionary phonemizes into it (``tests/test_text.py``).
"""

from __future__ import annotations

import json
from typing import Iterable, Mapping, Sequence

import numpy as np

PAD = "<pad>"
# Clause punctuation tokens: espeak clause terminator -> token.
PUNCTUATION_TOKENS = {",": "<,>", ".": "<.>", "?": "<?>", "!": "<!>", ";": "<,>", ":": "<,>"}

DEFAULT_VERSION = "en-espeak-1"

_CONSONANTS = (
    "p", "b", "t", "d", "k", "g", "f", "v", "T", "D", "s", "z", "S", "Z", "h", "tS", "dZ",
    "m", "n", "N", "l", "r", "w", "j",
    "t#", "t2", "?", "n-", "r-", ";",
)
# Vowels by stress level; filled in from the grammar inventory (see module docstring).
_VOWELS = (
    # unstressed
    "@", "@-", "@2", "@L", "3", "3:", "0", "A:", "A@", "E", "I", "I#", "I2", "O:", "O@",
    "U", "U@", "V", "a", "a#", "aI", "aI@", "aU", "e@", "eI", "i", "i:", "i@", "i@3", "o@",
    "oU", "u:",
    # primary stress
    "'0", "'3:", "'A:", "'A@", "'E", "'I", "'O2", "'O:", "'O@", "'OI", "'U", "'U@", "'V",
    "'a", "'aI", "'aI3", "'aI@", "'aU", "'aa", "'e@", "'eI", "'i:", "'i@", "'i@3", "'o@",
    "'oU", "'u:",
    # secondary stress
    ",0", ",3:", ",A:", ",A@", ",E", ",I", ",O2", ",O:", ",V", ",a", ",aI", ",aU", ",aa",
    ",e@", ",eI", ",i:", ",i@3", ",o@", ",oU", ",u:",
)
DEFAULT_SYMBOLS: tuple[str, ...] = (
    PAD, "<,>", "<.>", "<?>", "<!>", *_CONSONANTS, *_VOWELS)

# Whole-symbol aliases, tried first.
ALIASES: Mapping[str, str] = {
    "'3": "'3:",    # stressed r-coloured schwa (modernity)
    "'@": "'V",     # stressed schwa (ahem)
    "'I2": "'I", ",I2": ",I",
}
# Vowel/consonant aliases (stress kept), tried after the symbol itself.
BASE_ALIASES: Mapping[str, str] = {
    "A~": "A:", "O~": "O:",  # French nasal vowels (croissant, frisson)
    "O": "O:",               # (utah, chorizo)
    "e": "eI",               # (atelier)
    "u": "u:",               # (unary)
    "i::": "i:",             # (wii)
    "C": "h",                # ich-laut (utrecht)
    "x": "k",                # ach-laut (loch)
    "l#": "l",               # Welsh ll
}
_STRESS_MARKS = ("'", ",")
_STRESS_FALLBACK = {"'": ("'", ",", ""), ",": (",", "'", ""), "": ("", ",", "'")}
# espeak output that is not a sound of its own: pauses (all start with "_"), stress marks,
# syllable and word boundaries.
_DROPPED = frozenset({"'", ",", "%", "%%", "=", "''", "'!", ",,", "||", "|", "-", ":"})


class UnknownPhonemeError(ValueError):
  """A phoneme symbol outside the table; names the symbol and the text it came from."""

  def __init__(self, symbol: str, text: str | None = None, version: str | None = None):
    self.symbol = symbol
    self.text = text
    where = f" in text {text!r}" if text is not None else ""
    table = f" (table {version})" if version else ""
    super().__init__(f"unknown phoneme symbol {symbol!r}{where}{table}")


def split_stress(symbol: str) -> tuple[str, str]:
  """``"'oU"`` -> ``("'", "oU")``; ``"p"`` -> ``("", "p")``."""
  if len(symbol) > 1 and symbol[0] in _STRESS_MARKS:
    return symbol[0], symbol[1:]
  return "", symbol


class PhonemeTable:
  """An immutable, versioned list of phoneme symbols; id ``i`` is ``symbols[i]``, 0 is pad."""

  def __init__(self, symbols: Sequence[str], version: str):
    symbols = tuple(str(s) for s in symbols)
    if not symbols or symbols[0] != PAD:
      raise ValueError(f"symbol 0 must be {PAD!r}, got {symbols[:1]}")
    if len(set(symbols)) != len(symbols):
      dup = sorted({s for s in symbols if symbols.count(s) > 1})
      raise ValueError(f"duplicate symbols {dup}")
    self._symbols = symbols
    self._version = str(version)
    self._index = {s: i for i, s in enumerate(symbols)}

  @property
  def version(self) -> str:
    return self._version

  @property
  def symbols(self) -> tuple[str, ...]:
    return self._symbols

  @property
  def pad_id(self) -> int:
    return 0

  def __len__(self) -> int:
    return len(self._symbols)

  def __contains__(self, symbol: str) -> bool:
    return symbol in self._index

  def __eq__(self, other) -> bool:
    return (isinstance(other, PhonemeTable) and self._symbols == other._symbols
            and self._version == other._version)

  def __hash__(self) -> int:
    return hash((self._symbols, self._version))

  def __repr__(self) -> str:
    return f"PhonemeTable(version={self._version!r}, {len(self)} symbols)"

  def id(self, symbol: str, *, text: str | None = None) -> int:
    try:
      return self._index[symbol]
    except KeyError:
      raise UnknownPhonemeError(symbol, text, self._version) from None

  def encode(self, symbols: Iterable[str], *, text: str | None = None) -> np.ndarray:
    """Symbols -> int32 ids [P]; ``text`` (the source text) is named in errors."""
    return np.asarray([self.id(s, text=text) for s in symbols], dtype=np.int32)

  def decode(self, ids: Iterable[int] | np.ndarray, *, strip_pad: bool = True) -> list[str]:
    """int ids [P] -> symbols (pads dropped unless ``strip_pad=False``)."""
    out = []
    for i in np.asarray(ids).reshape(-1).tolist():
      if not 0 <= i < len(self._symbols):
        raise ValueError(f"phoneme id {i} outside table {self._version} of {len(self)} symbols")
      if i == 0 and strip_pad:
        continue
      out.append(self._symbols[i])
    return out

  def canonical(self, raw: str, *, text: str | None = None) -> str | None:
    """Maps a raw espeak symbol to a table symbol, or None for pauses and marks (dropped).

    Raises UnknownPhonemeError (naming ``text``) when no mapping exists.
    """
    if not raw or raw.startswith("_") or raw in _DROPPED:
      return None
    if raw in self._index:
      return raw
    alias = ALIASES.get(raw)
    if alias is not None and alias in self._index:
      return alias
    stress, base = split_stress(raw)
    for b in (base, BASE_ALIASES.get(base)):
      if b is None:
        continue
      for st in _STRESS_FALLBACK[stress]:
        if st + b in self._index:
          return st + b
    raise UnknownPhonemeError(raw, text, self._version)

  def to_json(self) -> dict:
    """``{"version": ..., "symbols": [...]}`` (the manifest's ``phoneme_table``)."""
    return {"version": self._version, "symbols": list(self._symbols)}

  @classmethod
  def from_json(cls, data: Mapping | str) -> "PhonemeTable":
    """Inverse of `to_json`; accepts the dict or its JSON string."""
    if isinstance(data, str):
      data = json.loads(data)
    try:
      return cls(data["symbols"], data["version"])
    except (KeyError, TypeError) as e:
      raise ValueError(f"not a phoneme table: {str(data)[:200]!r}") from e


def default_phoneme_table() -> PhonemeTable:
  """The English espeak table, version `DEFAULT_VERSION`."""
  return PhonemeTable(DEFAULT_SYMBOLS, DEFAULT_VERSION)
