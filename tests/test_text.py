"""Text frontend: normalization, espeak-ng G2P and synthesis, the phoneme table (real espeak)."""

import json

import numpy as np
import pytest

from jaxtts import text as T
from jaxtts.text import espeak
from jaxtts.text.normalize import cardinal, ordinal, year


# ------------------------------------------------------------------------------ normalization

@pytest.mark.parametrize("raw, want", [
    ("Hello   world", "Hello world."),
    ("  \"Hello\"   (world)  ", "Hello, world."),
    ("I have 3 cats.", "I have three cats."),
    ("It costs 1,250,000 now", "It costs one million two hundred fifty thousand now."),
    ("The 21st and 102nd and 3rd", "The twenty first and one hundred second and third."),
    ("In 1984 and 2005 and 2020 and 1900 and 1805.",
     "In nineteen eighty four and two thousand five and twenty twenty and nineteen hundred "
     "and eighteen oh five."),
    ("Pi is 3.14", "Pi is three point one four."),
    ("Dr. Smith paid $21.50", "Doctor Smith paid twenty one dollars and fifty cents."),
    ("$1 and $0.99 and £3 and €15", "one dollar and ninety nine cents and three pounds and "
     "fifteen euros."),
    ("a $5 million deal", "a five million dollars deal."),
    ("About 12.5% of 40%", "About twelve point five percent of forty percent."),
    ("Mr. and Mrs. Jones met Ms. Lee and Prof. Hall", "Mister and Missus Jones met Miz Lee "
     "and Professor Hall."),
    ("St. Louis is on Main St.", "Saint Louis is on Main Street."),
    ("We met at 3:30 p.m. and 10:05 am", "We met at three thirty p m and ten oh five a m."),
    ("Wait... what?!", "Wait. what?"),
    ("One; two: three", "One, two, three."),
    ("well-known café", "well known cafe."),
    ("Don't stop, it's 7 o'clock", "Don't stop, it's seven o'clock."),
    ("-5 degrees", "minus five degrees."),
    ("R2D2 weighs 5kg", "R two D two weighs five kilograms."),
    ("No. 7 and #9", "number seven and number nine."),
    ("e.g. apples, etc.", "for example apples, et cetera."),
])
def test_normalize(raw, want):
  assert T.normalize_text(raw) == want
  assert T.normalize_text(want) == want  # idempotent


def test_number_words():
  assert cardinal(0) == "zero"
  assert cardinal(115) == "one hundred fifteen"
  assert cardinal(2_000_019) == "two million nineteen"
  assert ordinal(1) == "first" and ordinal(12) == "twelfth" and ordinal(40) == "fortieth"
  assert ordinal(101) == "one hundred first"
  assert year(1066) == "ten sixty six" and year(2009) == "two thousand nine"


@pytest.mark.parametrize("raw", ["", "   ", "!!! ...", "$", "\u4f60\u597d"])
def test_empty_text_errors_name_the_input(raw):
  with pytest.raises(T.EmptyTextError) as e:
    T.normalize_text(raw)
  assert repr(raw) in str(e.value)
  with pytest.raises(T.EmptyTextError):
    T.phonemize(raw)


def test_unpronounceable_text_error_names_the_text():
  # Without normalization espeak sees only punctuation and returns no phoneme.
  with pytest.raises(T.UnpronounceableTextError) as e:
    T.phonemize("... ,,, ...", normalize=False)
  assert "'... ,,, ...'" in str(e.value)
  assert isinstance(e.value, ValueError)


# ------------------------------------------------------------------------------ G2P

def test_g2p_known_words():
  assert T.phonemize("Hello world") == ["h", "@", "l", "'oU", "w", "'3:", "l", "d", "<.>"]
  assert T.phonemize("cat", language="en") == ["k", "'a", "t", "<.>"]
  assert T.phonemize("The thing!") == ["D", "@2", "T", "'I", "N", "<!>"]
  # Accents differ where they should: en-us flaps and r-colours, en does not.
  assert T.phonemize("water", language="en-us") == ["w", "'O:", "t#", "3", "<.>"]
  assert T.phonemize("water", language="en") == ["w", "'O:", "t", "3", "<.>"]
  assert T.phonemize("button", language="en-us") == ["b", "'V", "?", "n-", "<.>"]


def test_g2p_clause_punctuation_tokens():
  syms = T.phonemize("Yes, no. Why? Go!")
  assert [s for s in syms if s.startswith("<")] == ["<,>", "<.>", "<?>", "<!>"]
  clauses = T.phonemize_clauses("Yes, no.")
  assert [c.punctuation for c in clauses] == ["<,>", "<.>"]
  assert clauses[0].phonemes == ("j", "'E", "s")


def test_text_to_ids_round_trip():
  table = T.default_phoneme_table()
  ids = T.text_to_ids("The quick brown fox jumps over the lazy dog.")
  assert ids.dtype == np.int32 and ids.ndim == 1 and ids.min() > 0
  assert table.decode(ids) == T.phonemize("The quick brown fox jumps over the lazy dog.")


def test_unknown_symbol_names_symbol_and_text():
  full = T.default_phoneme_table()
  small = T.PhonemeTable([s for s in full.symbols if s != "h"], "test-small")
  with pytest.raises(T.UnknownPhonemeError) as e:
    T.phonemize("hello there", table=small)
  msg = str(e.value)
  assert "'h'" in msg and "hello there" in msg and e.value.symbol == "h"
  assert e.value.text == "hello there"
  with pytest.raises(T.UnknownPhonemeError) as e:
    full.encode(["h", "zz9"], text="some text")
  assert "zz9" in str(e.value) and "some text" in str(e.value)
  assert isinstance(e.value, ValueError)


def test_canonical_mapping():
  t = T.default_phoneme_table()
  assert t.canonical("_:") is None and t.canonical("_") is None and t.canonical("||") is None
  assert t.canonical("'oU") == "'oU"
  assert t.canonical("x") == "k"              # loch
  assert t.canonical("'A~") == "'A:"          # croissant
  assert t.canonical(",U@") == "'U@"          # rare secondary stress -> primary
  with pytest.raises(T.UnknownPhonemeError):
    t.canonical("Q^", text="foreign")


def test_table_json_and_invariants():
  t = T.default_phoneme_table()
  assert t.symbols[0] == "<pad>" and t.pad_id == 0 and t.version == T.DEFAULT_VERSION
  assert T.PhonemeTable.from_json(t.to_json()) == t
  assert T.PhonemeTable.from_json(json.dumps(t.to_json())) == t
  assert t.decode(np.array([0, 5, 0])) == [t.symbols[5]]
  assert t.decode([0, 5], strip_pad=False) == ["<pad>", t.symbols[5]]
  with pytest.raises(ValueError):
    t.decode([len(t)])
  with pytest.raises(ValueError):
    T.PhonemeTable(["a", "<pad>"], "bad")
  with pytest.raises(ValueError):
    T.PhonemeTable(["<pad>", "a", "a"], "bad")


def test_table_covers_espeak_english_dictionary():
  """Every word of espeak's English exception dictionary phonemizes into the table."""
  words = espeak.dictionary_words("en")
  assert len(words) > 3000 and {"colonel", "gauge", "the", "of"} <= set(words)
  for lang in T.LANGUAGES:
    for w in words:
      T.phonemize(w, language=lang)  # raises UnknownPhonemeError otherwise


# ------------------------------------------------------------------------------ synthesis

def test_synthesis_events_match_g2p():
  text = "The measure of a man is his pleasure, and his vision!"
  syn = espeak.synthesize(text, voice="en-us+m3", pitch=40, pitch_range=60, rate=170)
  assert syn.sample_rate == espeak.sample_rate() == 22050
  assert syn.audio.dtype == np.int16 and len(syn.audio) > syn.sample_rate
  table = T.default_phoneme_table()
  events = [table.canonical(e.symbol) for e in syn.events]
  g2p = [p for c in T.phonemize_clauses(text) for p in c.phonemes]
  assert [e for e in events if e is not None] == g2p
  samples = [e.sample for e in syn.events]
  assert samples == sorted(samples) and samples[-1] <= len(syn.audio)
  assert len(syn.clause_ends) == 2


def test_synthesis_is_a_pure_function():
  kw = dict(voice="en-us+f2", pitch=30, pitch_range=70, rate=160)
  a = espeak.synthesize("Hello world, this is a test.", **kw)
  espeak.synthesize("Something else entirely!", voice="en+m1", pitch=80, rate=250)
  espeak.text_to_phonemes("and some G2P in between")
  b = espeak.synthesize("Hello world, this is a test.", **kw)
  assert np.array_equal(a.audio, b.audio) and a.events == b.events


def test_synthesis_settings_change_output():
  base = espeak.synthesize("A short sentence.", voice="en-us+m3")
  faster = espeak.synthesize("A short sentence.", voice="en-us+m3", rate=260)
  other = espeak.synthesize("A short sentence.", voice="en-us+f3")
  assert len(faster.audio) < len(base.audio)
  assert not np.array_equal(other.audio[:5000], base.audio[:5000])


def test_synthesis_errors():
  with pytest.raises(espeak.EspeakError):
    espeak.synthesize("hello", voice="no-such-voice")
  with pytest.raises(ValueError):
    espeak.synthesize("hello", pitch=120)
  with pytest.raises(TypeError):
    espeak.text_to_phonemes(b"bytes")  # type: ignore[arg-type]


def test_variants_listed():
  variants = espeak.list_variants()
  assert {"m1", "m7", "f1", "f5"} <= set(variants)
  assert espeak.version().startswith("1.")
