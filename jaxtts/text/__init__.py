"""Text frontend: English normalization, espeak-ng G2P, phoneme symbol table.

    text --normalize_text--> plain English --espeak G2P--> phoneme symbols --table--> int32 ids

The embedded corpus (`data_pipelines.espeak_corpus`) labels its audio with `phonemize_clauses`,
and inference phonemizes with `phonemize`/`text_to_ids`: one code path, so training data and
inference always agree.

A phoneme sequence is, for each clause espeak reads, the clause's phonemes followed by one
punctuation token (``<,> <.> <?> <!>``, from the clause's final mark; a final clause without
one gets ``<.>``). See `jaxtts.text.symbols` for the symbols.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxtts.text import espeak
from jaxtts.text.normalize import EmptyTextError, normalize_text
from jaxtts.text.symbols import (
    DEFAULT_VERSION, PAD, PUNCTUATION_TOKENS, PhonemeTable, UnknownPhonemeError,
    default_phoneme_table)

__all__ = [
    "DEFAULT_LANGUAGE", "LANGUAGES", "ClausePhonemes", "EmptyTextError", "PAD",
    "PhonemeTable", "UnknownPhonemeError", "UnpronounceableTextError", "DEFAULT_VERSION",
    "default_phoneme_table", "normalize_text", "phonemize", "phonemize_clauses", "text_to_ids",
]

DEFAULT_LANGUAGE = "en-us"
LANGUAGES = ("en-us", "en")  # the accents the default table covers


class UnpronounceableTextError(EmptyTextError):
  """Normalized text in which espeak finds no phoneme."""


@dataclasses.dataclass(frozen=True)
class ClausePhonemes:
  """One clause: its phoneme symbols and the punctuation token that closes it."""
  phonemes: tuple[str, ...]
  punctuation: str

  @property
  def symbols(self) -> tuple[str, ...]:
    return self.phonemes + (self.punctuation,)


def _language(language: str) -> str:
  return language.split("+", 1)[0]  # "en-us+m3" -> "en-us": the variant does not change G2P.


def phonemize_clauses(text: str, *, language: str = DEFAULT_LANGUAGE,
                      table: PhonemeTable | None = None,
                      normalize: bool = True) -> list[ClausePhonemes]:
  """G2P by clause. Clauses without phonemes are left out.

  Args:
    text: English text (normalized first unless ``normalize=False``).
    language: espeak language, ``"en-us"`` or ``"en"`` (a ``+variant`` suffix is ignored).
    table: symbol table (default: `default_phoneme_table()`); raw espeak symbols are mapped
      into it with `PhonemeTable.canonical`.
    normalize: run `normalize_text` first (it is idempotent).

  Raises:
    EmptyTextError: empty text; UnpronounceableTextError: no phoneme at all;
    UnknownPhonemeError: an espeak symbol outside the table (names the symbol and the text).
  """
  table = table or default_phoneme_table()
  norm = normalize_text(text) if normalize else text
  if not norm.strip():
    raise EmptyTextError(text, "is empty")
  clauses = espeak.text_to_phonemes(norm, voice=_language(language))
  out = []
  for k, clause in enumerate(clauses):
    phones = []
    for word in clause.words:
      for raw in word:
        sym = table.canonical(raw, text=text)
        if sym is not None:
          phones.append(sym)
    if not phones:
      continue
    mark = clause.terminator
    if not mark:
      mark = "." if k == len(clauses) - 1 else ","
    out.append(ClausePhonemes(tuple(phones), PUNCTUATION_TOKENS[mark]))
  if not out:
    raise UnpronounceableTextError(text, "has no pronounceable content (espeak gave no phoneme)")
  for c in out:
    table.encode(c.symbols, text=text)  # Punctuation tokens must be in the table too.
  return out


def phonemize(text: str, *, language: str = DEFAULT_LANGUAGE, table: PhonemeTable | None = None,
              normalize: bool = True) -> list[str]:
  """Text -> phoneme symbols, e.g. "Hello world." -> ['h', '@', 'l', "'oU", 'w', "'3:", 'l',
  'd', '<.>']. See `phonemize_clauses` for the arguments and errors."""
  return [s for c in phonemize_clauses(text, language=language, table=table, normalize=normalize)
          for s in c.symbols]


def text_to_ids(text: str, table: PhonemeTable | None = None, *,
                language: str = DEFAULT_LANGUAGE, normalize: bool = True) -> np.ndarray:
  """Text -> int32 phoneme ids [P] in ``table`` (default table if None)."""
  table = table or default_phoneme_table()
  return table.encode(phonemize(text, language=language, table=table, normalize=normalize),
                      text=text)
