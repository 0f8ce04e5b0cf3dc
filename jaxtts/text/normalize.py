"""English text normalization: the first stage of the text frontend.

`normalize_text` turns raw English text into the plain form that espeak-ng phonemizes and that
corpus records store as ``text``: numbers, currency, percentages, ordinals, years, times and
common abbreviations are spelled out in words; punctuation is reduced to the clause marks
``, . ? !`` (each followed by one space); other symbols are dropped; letters with diacritics are
folded to ASCII; whitespace is collapsed; the result always ends with ``.``, ``?`` or ``!``.

Examples::

  "Dr. Smith paid $21.50 on Jan. 3rd, 1984."  ->
  "Doctor Smith paid twenty one dollars and fifty cents on January third, nineteen eighty four."

Normalization is idempotent: ``normalize_text(normalize_text(t)) == normalize_text(t)``.
"""

from __future__ import annotations

import re
import unicodedata


class EmptyTextError(ValueError):
  """The text is empty or has nothing left to say after normalization."""

  def __init__(self, text: str, reason: str = "is empty after normalization"):
    self.text = text
    super().__init__(f"text {text!r} {reason}")


_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = [(10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand")]
_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "four": "fourth", "five": "fifth",
    "six": "sixth", "seven": "seventh", "eight": "eighth", "nine": "ninth", "ten": "tenth",
    "eleven": "eleventh", "twelve": "twelfth", "thirteen": "thirteenth",
    "fourteen": "fourteenth", "fifteen": "fifteenth", "sixteen": "sixteenth",
    "seventeen": "seventeenth", "eighteen": "eighteenth", "nineteen": "nineteenth",
    "twenty": "twentieth", "thirty": "thirtieth", "forty": "fortieth", "fifty": "fiftieth",
    "sixty": "sixtieth", "seventy": "seventieth", "eighty": "eightieth", "ninety": "ninetieth",
    "hundred": "hundredth", "thousand": "thousandth", "million": "millionth",
    "billion": "billionth", "trillion": "trillionth", "zero": "zeroth",
}


def _below_thousand(n: int) -> list[str]:
  words = []
  if n >= 100:
    words += [_ONES[n // 100], "hundred"]
    n %= 100
  if n >= 20:
    words.append(_TENS[n // 10])
    n %= 10
    if n:
      words.append(_ONES[n])
  elif n or not words:
    words.append(_ONES[n])
  return words


def cardinal(n: int) -> str:
  """Spells a non-negative integer: 1234 -> 'one thousand two hundred thirty four'."""
  if n < 0:
    return "minus " + cardinal(-n)
  if n >= 10**15:  # Too long to read as a number: read the digits.
    return digits(str(n))
  words = []
  for value, name in _SCALES:
    if n >= value:
      words += _below_thousand(n // value) + [name]
      n %= value
  if n or not words:
    words += _below_thousand(n)
  return " ".join(words)


def ordinal(n: int) -> str:
  """1 -> 'first', 21 -> 'twenty first', 100 -> 'one hundredth'."""
  words = cardinal(n).split(" ")
  words[-1] = _ORDINAL_WORDS.get(words[-1], words[-1] + "th")
  return " ".join(words)


def digits(s: str) -> str:
  """Reads a digit string one digit at a time: '305' -> 'three zero five'."""
  return " ".join(_ONES[int(c)] for c in s if c.isdigit())


def year(n: int) -> str:
  """Reads a year: 1984 -> 'nineteen eighty four', 2005 -> 'two thousand five',
  1900 -> 'nineteen hundred', 2020 -> 'twenty twenty', 1805 -> 'eighteen oh five'."""
  if n % 1000 < 10 and n // 1000 in (1, 2) and n % 100 < 10 and n // 100 % 10 == 0:
    return cardinal(n)  # 1000-1009, 2000-2009
  hi, lo = divmod(n, 100)
  if lo == 0:
    return cardinal(hi) + " hundred"
  if lo < 10:
    return cardinal(hi) + " oh " + _ONES[lo]
  return cardinal(hi) + " " + cardinal(lo)


def _decimal(int_part: str, frac: str) -> str:
  return cardinal(int(int_part or "0")) + " point " + digits(frac)


def _number(s: str) -> str:
  """A plain number token (digits, optional thousands commas, optional decimal part)."""
  s = s.replace(",", "")
  if "." in s:
    i, f = s.split(".", 1)
    return _decimal(i, f)
  if len(s) > 1 and s.startswith("0"):
    return digits(s)  # '007', zip codes
  return cardinal(int(s))


_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"),
               "£": ("pound", "pounds", "penny", "pence"),
               "€": ("euro", "euros", "cent", "cents"),
               "¥": ("yen", "yen", "", "")}

_NUM = r"\d{1,3}(?:,\d{3})+|\d+"  # 1,234,567 or 1234567


def _currency(m: re.Match) -> str:
  sym, whole, frac, scale = m.group(1), m.group(2), m.group(3), m.group(4)
  one, many, sub_one, sub_many = _CURRENCIES[sym]
  whole_n = int(whole.replace(",", ""))
  if scale:  # $2.5 million -> two point five million dollars
    amount = _decimal(whole, frac) if frac else cardinal(whole_n)
    return f"{amount} {scale.lower()} {many}"
  parts = []
  frac_n = int((frac + "0")[:2]) if frac else 0
  if whole_n or not frac_n or not sub_one:
    parts.append(f"{cardinal(whole_n)} {one if whole_n == 1 else many}")
  if frac_n and sub_one:
    parts.append(f"{cardinal(frac_n)} {sub_one if frac_n == 1 else sub_many}")
  return " and ".join(parts)


def _time(m: re.Match) -> str:
  h, mi, ampm = int(m.group(1)), int(m.group(2)), m.group(3)
  words = cardinal(h)
  if mi == 0:
    words += "" if ampm else " o'clock"
  elif mi < 10:
    words += " oh " + _ONES[mi]
  else:
    words += " " + cardinal(mi)
  if ampm:
    words += " " + " ".join(re.sub(r"[^apm]", "", ampm.lower()))
  return words


_ORDINAL_SUFFIX = {"1": "st", "2": "nd", "3": "rd"}


def _ordinal(m: re.Match) -> str:
  return ordinal(int(m.group(1).replace(",", "")))


def _plain_number(m: re.Match) -> str:
  s = m.group(0)
  plain = s.replace(",", "")
  if "," not in s and "." not in s and len(plain) == 4 and 1100 <= int(plain) <= 2099:
    return year(int(plain))
  return _number(s)


# (pattern, replacement) applied in order, case-sensitive unless the pattern says (?i).
# Abbreviations must be followed by a period (or be unambiguous).
_TITLES = {"Mr": "Mister", "Mrs": "Missus", "Ms": "Miz", "Dr": "Doctor", "Prof": "Professor",
           "Capt": "Captain", "Gen": "General", "Lt": "Lieutenant", "Col": "Colonel",
           "Sgt": "Sergeant", "Rev": "Reverend", "Gov": "Governor", "Sen": "Senator",
           "Rep": "Representative", "Pres": "President", "Hon": "Honorable", "Fr": "Father",
           "Mt": "Mount", "Ft": "Fort"}
_ABBREVIATIONS = {"Jr": "Junior", "Sr": "Senior", "Ave": "Avenue", "Blvd": "Boulevard",
                  "Rd": "Road", "Ln": "Lane", "Dept": "Department", "Univ": "University",
                  "Inc": "Incorporated", "Ltd": "Limited", "Corp": "Corporation",
                  "Co": "Company", "approx": "approximately", "vs": "versus",
                  "etc": "et cetera", "min": "minutes", "hr": "hours", "hrs": "hours",
                  "sec": "seconds", "ft": "feet", "lb": "pounds",
                  "lbs": "pounds", "oz": "ounces", "km": "kilometers", "kg": "kilograms",
                  "mph": "miles per hour", "Jan": "January", "Feb": "February",
                  "Apr": "April", "Jun": "June", "Jul": "July",
                  "Aug": "August", "Sep": "September", "Sept": "September", "Oct": "October",
                  "Nov": "November", "Dec": "December", "Tue": "Tuesday",
                  "Tues": "Tuesday", "Thu": "Thursday",
                  "Thurs": "Thursday", "Fri": "Friday"}
_UNIT_ABBREVIATIONS = {"min", "hr", "hrs", "sec", "ft", "lb", "lbs", "oz", "km", "kg",
                       "mph"}

_SYMBOL_WORDS = {"&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "°": " degrees ",
                 "×": " times ", "½": " one half ", "¼": " one quarter ", "¾": " three quarters "}

_PUNCT_MAP = {
    "\u2018": "'", "\u2019": "'", "\u201b": "'", "`": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2013": " , ", "\u2014": " , ", "\u2015": " , ", "\u2026": " , ",
}
# Applied after numbers are expanded (so that 3:30 is still a time when it is read).
_CLAUSE_MAP = {";": ",", ":": ",", "(": " , ", ")": " , ", "[": " , ", "]": " , ", "{": " , ",
               "}": " , "}


def _fold_unicode(text: str) -> str:
  text = unicodedata.normalize("NFKC", text)
  text = "".join(_PUNCT_MAP.get(c, c) for c in text)
  for sym, word in _SYMBOL_WORDS.items():
    text = text.replace(sym, word)
  # Strip diacritics (café -> cafe); characters with no ASCII base are dropped later.
  text = unicodedata.normalize("NFKD", text)
  return "".join(c for c in text if not unicodedata.combining(c))


def _expand_numbers(text: str) -> str:
  # Split digits glued to letters (R2D2, 5kg), except ordinal suffixes (21st).
  text = re.sub(r"(?<=[A-Za-z])(?=\d)", " ", text)
  text = re.sub(r"(?<=\d)(?=[A-Za-z])(?!(?:st|nd|rd|th)\b)", " ", text)
  text = re.sub(r"(?<![\w.])([$£€¥])\s?(" + _NUM + r")(?:\.(\d+))?"
                r"(?:\s(million|billion|trillion|thousand)\b)?",
                _currency, text, flags=re.IGNORECASE)
  text = re.sub(r"(?<![\w.])(" + _NUM + r"(?:\.\d+)?)\s?%", lambda m: _number(m.group(1))
                + " percent", text)
  text = re.sub(r"\b(\d{1,2}):(\d{2})\b(\s?[ap]\.?\s?m\b\.?)?", _time, text,
                flags=re.IGNORECASE)
  text = re.sub(r"\b(\d{1,2})\s?([ap])\.?\s?m\b\.?",
                lambda m: cardinal(int(m.group(1))) + " " + m.group(2).lower() + " m", text,
                flags=re.IGNORECASE)
  text = re.sub(r"\b(" + _NUM + r")(?:st|nd|rd|th)\b", _ordinal, text, flags=re.IGNORECASE)
  text = re.sub(r"#\s?(\d+)", lambda m: "number " + _number(m.group(1)), text)
  text = re.sub(r"\bNo\.\s?(\d)", r"number \1", text)
  text = re.sub(r"(?<![\w.])-(?=\d)", "minus ", text)
  text = re.sub(r"(?<![\d,])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])|\d*\.\d+|\d+",
                _plain_number, text)
  return text


def _expand_abbreviations(text: str) -> str:
  # "St." is Saint before a capitalized name, Street otherwise.
  text = re.sub(r"\bSt\.(?=\s+[A-Z])", "Saint", text)
  text = re.sub(r"\bSt\.", "Street", text)
  for abbr, word in _TITLES.items():
    text = re.sub(r"\b" + abbr + r"\.(?=\s|$)", word, text)
  for abbr, word in _ABBREVIATIONS.items():
    if abbr in _UNIT_ABBREVIATIONS:  # Only right after a number word: "5 ft." / "5 ft".
      text = re.sub(r"(?<=\d)\s?" + abbr + r"\b\.?", " " + word, text)
    else:
      text = re.sub(r"\b" + abbr + r"\.", word, text)
  text = re.sub(r"\be\.g\.", "for example", text, flags=re.IGNORECASE)
  text = re.sub(r"\bi\.e\.", "that is", text, flags=re.IGNORECASE)
  text = re.sub(r"\b([ap])\.m\.", lambda m: m.group(1).lower() + " m", text,
                flags=re.IGNORECASE)
  return text


def _clean_punctuation(text: str) -> str:
  text = "".join(_CLAUSE_MAP.get(c, c) for c in text)
  text = text.replace('"', " ")
  text = re.sub(r"(?<=\w)-(?=\w)", " ", text)  # well-known -> well known
  # Keep apostrophes inside words (don't, o'clock); drop the others.
  text = re.sub(r"(?<![A-Za-z])'|'(?![A-Za-z])", " ", text)
  # Anything that is not a letter, apostrophe, clause mark or space goes.
  text = re.sub(r"[^A-Za-z' .,?!]", " ", text)
  text = re.sub(r"\s+", " ", text)
  # Runs of punctuation (with spaces between) collapse to their strongest mark.
  def strongest(m: re.Match) -> str:
    marks = m.group(0)
    for mark in "?!.,":
      if mark in marks:
        return mark + " "
    return " "
  text = re.sub(r"\s*[.,?!](?:\s*[.,?!])*\s*", strongest, text)
  text = text.strip()
  text = re.sub(r"^[.,?!\s]+", "", text)
  if text and text[-1] not in ".?!":
    text = text.rstrip(",").rstrip() + "."
  return text


def normalize_text(text: str) -> str:
  """Normalizes English ``text`` for the phonemizer (see the module docstring).

  Raises:
    EmptyTextError: the text is empty, or nothing pronounceable (no letter) is left.
    TypeError: ``text`` is not a str.
  """
  if not isinstance(text, str):
    raise TypeError(f"text must be str, got {type(text).__name__}")
  if not text.strip():
    raise EmptyTextError(text, "is empty")
  out = _fold_unicode(text)
  out = _expand_abbreviations(out)
  out = _expand_numbers(out)
  out = _clean_punctuation(out)
  if not re.search(r"[A-Za-z]", out):
    raise EmptyTextError(text, "has no pronounceable content (no letters or numbers)")
  return out
