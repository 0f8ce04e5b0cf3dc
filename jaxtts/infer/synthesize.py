"""Zero-shot synthesis with a trained GMM-LM and its GMM-VAE codec (Lin & He, ICLR 2025,
§3.2-3.3 decoding, §5.1 prompting)::

    prompt wav ──codec.encode──> prompt latents [P, D] ──────────────┐
    prompt text (or ids) + text ──text_to_ids──> phonemes [Jp + Jt] ─┴─> decode.generate
        ─> frames [F, D] ─> codec.decode([prompt latents; frames]) minus the prompt's samples

The phonemes are the prompt transcript's followed by the target text's, through the corpus's
own frontend (`jaxtts.text.text_to_ids` with the phoneme table of the training manifest), so
inference and training agree. The decoder continues the prompt: its alignment starts on the
prompt's phonemes and the new frames speak the target text. The codec decodes prompt and new
latents together (its non-causal decoder sees the left context, so the join is smooth) and
the prompt's ``P * hop`` samples are cut off.

Shapes compile once per bucket: prompt frames are padded to whole seconds, phoneme counts to
multiples of `PHONEME_BUCKET`, the batch to a power of two; ``max_seconds`` is static (each
value compiles its own decoder).

Input checks (`SynthesisInputError`, a ``ValueError`` naming the field): empty or
unpronounceable text; no prompt transcript (there is no ASR here: pass ``prompt_text``,
``prompt_phonemes``, or put the transcript in ``<prompt>.txt`` beside a prompt file); a
prompt shorter than one latent frame; a prompt for which ``prompt frames + max_frames``
exceeds the limit ``max_total_seconds`` (``config.synthesis.max_total_seconds`` when the
config has it, else twice ``synthesis.max_seconds``); missing files
(`InputFileNotFoundError`). A transcript that cannot match its prompt is only warned about
(`logging`): speech has roughly 5-20 frames per phoneme at 80 frames/s, so fewer than
`MIN_FRAMES_PER_PHONEME` or more than `MAX_FRAMES_PER_PHONEME` prompt frames per prompt
phoneme means the transcript is probably for other audio.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

log = logging.getLogger("jaxtts.infer")

PHONEME_BUCKET = 32
MIN_FRAMES_PER_PHONEME = 1.0
MAX_FRAMES_PER_PHONEME = 40.0
STOP_REASONS = ("stop_logit", "passed_last_phoneme", "max_frames")  # decode.generate's codes
STAY_MODES = ("st_gumbel", "threshold")

AudioInput = Union[str, os.PathLike, np.ndarray]


class SynthesisInputError(ValueError):
  """A bad synthesis request; ``field`` names the input (``text``, ``prompt_audio``, ...)."""

  def __init__(self, field: str, message: str):
    self.field = field
    super().__init__(f"{field}: {message}")


class InputFileNotFoundError(SynthesisInputError, FileNotFoundError):
  """A file named by a request does not exist."""


@dataclasses.dataclass
class Request:
  """A checked request, ready for `Synthesizer.synthesize_batch`.

  ``prompt_latents [P, D]`` float32, ``prompt_phonemes [Jp]`` and ``phonemes [Jt]`` int32
  (prompt transcript and target text), ``encode_s`` the seconds spent on G2P and encoding.
  """
  prompt_latents: np.ndarray
  prompt_phonemes: np.ndarray
  phonemes: np.ndarray
  encode_s: float
  text: Optional[str] = None


def _bucket(n: int, unit: int) -> int:
  return max(unit, -(-int(n) // unit) * unit)


def sidecar_transcript(path: AudioInput) -> Optional[str]:
  """The transcript in ``<prompt without extension>.txt`` beside a prompt file, or None."""
  if isinstance(path, np.ndarray):
    return None
  txt = os.path.splitext(os.fspath(path))[0] + ".txt"
  if not os.path.isfile(txt):
    return None
  with open(txt, encoding="utf-8") as f:
    return f.read().strip()


class Synthesizer:
  """A trained GMM-LM workdir plus the codec of its latents, for zero-shot synthesis.

  Args:
    workdir: a `jaxtts-train` workdir of the ``gmm_lm`` task (config + checkpoints).
    codec_workdir: the GMM-VAE workdir; default: ``latents.codec_workdir`` of the manifest
      in the LM config's ``data.dir``.
    step: LM checkpoint step (default: the latest); ``codec_step`` likewise for the codec.
    max_total_seconds: limit on prompt + generated audio (see the module docstring).
  """

  def __init__(self, workdir: str, codec_workdir: Optional[str] = None,
               step: Optional[int] = None, *, codec_step: Optional[int] = None,
               max_total_seconds: Optional[float] = None):
    from jaxtts.codec.cli import Codec  # pylint: disable=import-outside-toplevel
    from jaxtts.data.source import read_manifest  # pylint: disable=import-outside-toplevel
    from jaxtts.text import PhonemeTable, default_phoneme_table  # pylint: disable=import-outside-toplevel
    from jaxtts.train import restore  # pylint: disable=import-outside-toplevel
    cfg = restore.load_config(workdir)
    if cfg.get("task") != "gmm_lm":
      raise ValueError(f"{workdir}: a {cfg.get('task')!r} workdir; synthesis needs a trained "
                       f"'gmm_lm' workdir (the codec goes in codec_workdir / --codec-workdir)")
    manifest = {}
    try:
      manifest = read_manifest(cfg.data.dir)
    except (OSError, ValueError) as e:
      if codec_workdir is None:
        raise ValueError(f"{workdir}: cannot find the codec: config.data.dir "
                         f"{cfg.data.dir!r} has no readable manifest ({e}); pass "
                         f"codec_workdir (--codec-workdir)") from e
      log.warning("%s: no latent manifest (%s); using the default phoneme table", workdir, e)
    if codec_workdir is None:
      codec_workdir = manifest.get("latents", {}).get("codec_workdir")
      if not codec_workdir:
        raise ValueError(f"{cfg.data.dir}/manifest.json has no 'latents.codec_workdir'; pass "
                         f"codec_workdir (--codec-workdir)")
    self.workdir, self.codec_workdir = workdir, codec_workdir
    self.trainer, params = restore.load_trained(workdir, step)
    self.cfg, self.model, self.params = cfg, self.trainer.task.model, params["model"]
    self.codec = Codec(codec_workdir, codec_step)
    for ours, theirs, field in ((self.codec.latent_dim, cfg.model.latent_dim, "latent_dim"),
                                (self.codec.hop, cfg.model.latent_hop, "latent_hop")):
      if int(ours) != int(theirs):
        raise ValueError(f"codec {codec_workdir} has {field}={ours} but the GMM-LM workdir "
                         f"{workdir} has config.model.{field}={theirs}")
    self.sample_rate, self.hop = int(self.codec.sample_rate), int(self.codec.hop)
    self.frame_rate = self.sample_rate / self.hop
    self.table = (PhonemeTable.from_json(manifest["phoneme_table"])
                  if "phoneme_table" in manifest else default_phoneme_table())
    if len(self.table) > int(cfg.model.vocab_size):
      raise ValueError(f"phoneme table {self.table.version} has {len(self.table)} symbols, "
                       f"more than config.model.vocab_size={cfg.model.vocab_size}")
    syn = cfg.synthesis
    self.defaults = {"max_seconds": float(syn.max_seconds),
                     "weight_temperature": float(syn.weight_temperature),
                     "scale_temperature": float(syn.scale_temperature),
                     "stop_threshold": float(syn.stop_threshold),
                     "stop_on_last_phoneme_only": bool(
                         syn.get("stop_on_last_phoneme_only", True)),
                     "stay_mode": str(syn.stay_mode)}
    self.max_total_seconds = float(max_total_seconds or syn.get("max_total_seconds", 0.0)
                                   or 2.0 * float(syn.max_seconds))

  # ------------------------------------------------------------------ inputs
  def max_frames(self, max_seconds: Optional[float] = None) -> int:
    """Decoding buffer ``round(max_seconds * frame_rate)`` (config default)."""
    seconds = self.defaults["max_seconds"] if max_seconds is None else float(max_seconds)
    if seconds <= 0:
      raise SynthesisInputError("max_seconds", f"must be positive, got {seconds}")
    return max(1, int(round(seconds * self.frame_rate)))

  def phonemize(self, text: str, field: str = "text") -> np.ndarray:
    """Text -> ids [J] in the training table; errors name ``field``."""
    from jaxtts.text import EmptyTextError, UnknownPhonemeError, text_to_ids  # pylint: disable=import-outside-toplevel
    if not isinstance(text, str):
      raise SynthesisInputError(field, f"expected a string, got {type(text).__name__}")
    try:
      return text_to_ids(text, self.table)
    except (EmptyTextError, UnknownPhonemeError) as e:
      raise SynthesisInputError(field, str(e)) from e

  def _ids(self, ids: Any, field: str) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or not len(ids) or not np.issubdtype(ids.dtype, np.integer):
      raise SynthesisInputError(field, f"expected a non-empty list of phoneme ids, got "
                                       f"shape {ids.shape} dtype {ids.dtype}")
    if ids.min() < 1 or ids.max() >= len(self.table):
      raise SynthesisInputError(field, f"ids must lie in [1, {len(self.table)}) (table "
                                       f"{self.table.version}), got {ids.min()}..{ids.max()}")
    return ids.astype(np.int32)

  def load_prompt(self, prompt_audio: AudioInput) -> np.ndarray:
    """A path (resampled to the codec's rate) or a mono array ``[T]`` (float in [-1, 1], or
    int16) -> float32 ``[T]``."""
    if isinstance(prompt_audio, np.ndarray):
      wav = prompt_audio
      if wav.dtype == np.int16:
        wav = wav.astype(np.float32) / 32768.0
      if wav.ndim != 1:
        raise SynthesisInputError("prompt_audio", f"expected mono audio [T], got shape "
                                                  f"{wav.shape}")
      return np.asarray(wav, np.float32)
    path = os.fspath(prompt_audio)
    if not os.path.isfile(path):
      raise InputFileNotFoundError("prompt_audio", f"no such file {path!r}")
    try:
      return self.codec.load(path, resample=True)
    except Exception as e:  # soundfile raises its own error types
      raise SynthesisInputError("prompt_audio", f"cannot read {path!r} ({e})") from e

  def prepare(self, text: Optional[str], prompt_audio: AudioInput,
              prompt_text: Optional[str] = None, *, prompt_phonemes: Any = None,
              target_phonemes: Any = None, max_seconds: Optional[float] = None) -> Request:
    """Checks one request, phonemizes it and encodes its prompt (see the module docstring).

    ``target_phonemes`` (ids) replaces ``text`` and ``prompt_phonemes`` (ids) replaces
    ``prompt_text``, e.g. for prompts cut at a phoneme boundary (`jaxtts.infer.prompts`).
    """
    t0 = time.perf_counter()
    phonemes = (self._ids(target_phonemes, "target_phonemes") if target_phonemes is not None
                else self.phonemize(text if text is not None else "", "text"))
    if prompt_phonemes is not None:
      prompt_ids = self._ids(prompt_phonemes, "prompt_phonemes")
    else:
      if prompt_text is None:
        prompt_text = sidecar_transcript(prompt_audio)
      if prompt_text is None:
        raise SynthesisInputError(
            "prompt_text", "the prompt's transcript is required (there is no ASR here): pass "
            "prompt_text / --prompt-text, or put it in a .txt file beside the prompt audio")
      prompt_ids = self.phonemize(prompt_text, "prompt_text")
    wav = self.load_prompt(prompt_audio)
    frames = len(wav) // self.hop
    if frames < 1:
      raise SynthesisInputError("prompt_audio", f"{len(wav)} samples is shorter than one latent "
                                                f"frame ({self.hop} samples at "
                                                f"{self.sample_rate} Hz)")
    limit = int(round(self.max_total_seconds * self.frame_rate))
    budget = self.max_frames(max_seconds)
    if frames + budget > limit:
      raise SynthesisInputError(
          "prompt_audio", f"{frames / self.frame_rate:.2f} s prompt + "
          f"{budget / self.frame_rate:.2f} s to generate exceeds the limit of "
          f"{self.max_total_seconds:g} s (max_total_seconds); use a prompt of at most "
          f"{(limit - budget) / self.frame_rate:.2f} s")
    per_phoneme = frames / len(prompt_ids)
    if not MIN_FRAMES_PER_PHONEME <= per_phoneme <= MAX_FRAMES_PER_PHONEME:
      log.warning("prompt_text: %d prompt frames for %d prompt phonemes (%.1f frames per "
                  "phoneme, plausible %g-%g): does the transcript match the prompt audio?",
                  frames, len(prompt_ids), per_phoneme, MIN_FRAMES_PER_PHONEME,
                  MAX_FRAMES_PER_PHONEME)
    latents = self.codec.encode(wav[:frames * self.hop])
    return Request(latents, prompt_ids, phonemes, time.perf_counter() - t0, text)

  # ------------------------------------------------------------------ synthesis
  def synthesize(self, text: Optional[str], prompt_audio: AudioInput,
                 prompt_text: Optional[str] = None, *, prompt_phonemes: Any = None,
                 target_phonemes: Any = None, seed: int = 0, **options) -> dict[str, Any]:
    """One utterance; ``options``: ``max_seconds``, ``weight_temperature``,
    ``scale_temperature``, ``stay_mode`` (defaults: ``config.synthesis``).

    Returns ``wav`` float32 [T], ``sample_rate``, ``durations`` int [Jt] (generated frames
    per target phoneme), ``phonemes`` (target symbols), ``prompt_phonemes`` (symbols),
    ``alignment`` int [P + F] (phoneme index into prompt + target phonemes for every prompt
    and generated frame), ``prompt_frames`` P, ``frames`` F, ``stopped_by`` (one of
    `STOP_REASONS`) and ``timings`` {encode_s, generate_s, decode_s, rtf}.
    """
    request = self.prepare(text, prompt_audio, prompt_text, prompt_phonemes=prompt_phonemes,
                           target_phonemes=target_phonemes,
                           max_seconds=options.get("max_seconds"))
    return self.synthesize_batch([request], seed=seed, **options)[0]

  def synthesize_batch(self, items: Sequence[Union[Request, Mapping[str, Any]]], *,
                       seed: int = 0, max_seconds: Optional[float] = None,
                       weight_temperature: Optional[float] = None,
                       scale_temperature: Optional[float] = None,
                       stay_mode: Optional[str] = None) -> list[dict[str, Any]]:
    """Several requests in one `decode.generate` call (results as `synthesize`).

    ``items`` are `Request`s or dicts of `prepare`'s arguments (``text``, ``prompt_audio``,
    ``prompt_text``, ``prompt_phonemes``, ``target_phonemes``; an ``id`` key is ignored).
    Rows share one PRNG key, so a row's sample differs from the same request synthesized
    alone. ``timings.generate_s`` is
    the batch's; ``rtf`` is the batch's total time over its total audio.
    """
    import jax  # pylint: disable=import-outside-toplevel

    from jaxtts.gmm_lm import decode  # pylint: disable=import-outside-toplevel
    if not items:
      return []
    mode = stay_mode or self.defaults["stay_mode"]
    if mode not in STAY_MODES:
      raise SynthesisInputError("stay_mode", f"{mode!r} is not one of {STAY_MODES}")
    reqs = [it if isinstance(it, Request) else self.prepare(
        max_seconds=max_seconds, **{k: v for k, v in it.items() if k != "id"}) for it in items]
    max_frames = self.max_frames(max_seconds)
    limit = int(round(self.max_total_seconds * self.frame_rate))
    for k, r in enumerate(reqs):
      if len(r.prompt_latents) + max_frames > limit:
        raise SynthesisInputError(f"items[{k}].prompt_audio", f"prompt + max_seconds exceeds "
                                  f"the limit of {self.max_total_seconds:g} s")
    n = len(reqs)
    b = 1 << (n - 1).bit_length()
    p = _bucket(max(len(r.prompt_latents) for r in reqs), int(np.ceil(self.frame_rate)))
    j = _bucket(max(len(r.prompt_phonemes) + len(r.phonemes) for r in reqs), PHONEME_BUCKET)
    d = self.codec.latent_dim
    prompt = np.zeros((b, p, d), np.float32)
    prompt_len = np.zeros((b,), np.int32)
    phonemes = np.zeros((b, j), np.int32)
    phoneme_len = np.zeros((b,), np.int32)
    prompt_phoneme_len = np.zeros((b,), np.int32)
    for row in range(b):
      r = reqs[min(row, n - 1)]  # padding rows repeat the last request; their output is dropped
      ids = np.concatenate([r.prompt_phonemes, r.phonemes])
      prompt[row, :len(r.prompt_latents)] = r.prompt_latents
      prompt_len[row], phonemes[row, :len(ids)], phoneme_len[row] = (
          len(r.prompt_latents), ids, len(ids))
      prompt_phoneme_len[row] = len(r.prompt_phonemes)
    t0 = time.perf_counter()
    out = decode.generate(
        self.model, self.params, prompt, prompt_len, phonemes, phoneme_len,
        jax.random.key(seed), max_frames=max_frames,
        weight_temperature=float(weight_temperature if weight_temperature is not None
                                 else self.defaults["weight_temperature"]),
        scale_temperature=float(scale_temperature if scale_temperature is not None
                                else self.defaults["scale_temperature"]),
        stop_threshold=self.defaults["stop_threshold"], stay_mode=mode,
        prompt_phoneme_len=prompt_phoneme_len,
        stop_on_last_phoneme_only=self.defaults["stop_on_last_phoneme_only"])
    out = jax.tree.map(np.asarray, out)
    generate_s = time.perf_counter() - t0
    results = []
    for row, r in enumerate(reqs):
      t1 = time.perf_counter()
      plen, flen, jp = len(r.prompt_latents), int(out["lengths"][row]), len(r.prompt_phonemes)
      frames = out["frames"][row, :flen]
      wav = self.codec.decode(np.concatenate([r.prompt_latents, frames]))[plen * self.hop:]
      decode_s = time.perf_counter() - t1
      alignment = np.concatenate([np.argmax(out["prompt_alpha"][row, :plen], axis=-1),
                                  out["phoneme_index"][row, :flen]]).astype(np.int32)
      durs = decode.durations(out["phoneme_index"][row:row + 1, :flen], int(phoneme_len[row]))
      results.append({
          "wav": wav.astype(np.float32), "sample_rate": self.sample_rate,
          "durations": durs[0, jp:].astype(np.int32),
          "phonemes": self.table.decode(r.phonemes),
          "prompt_phonemes": self.table.decode(r.prompt_phonemes),
          "alignment": alignment, "prompt_frames": plen, "frames": flen,
          "stopped_by": STOP_REASONS[int(out["stopped_by"][row])],
          "timings": {"encode_s": r.encode_s, "generate_s": generate_s, "decode_s": decode_s,
                      "batch_size": n}})
    total = sum(len(x["wav"]) for x in results) / self.sample_rate
    spent = generate_s + sum(x["timings"]["encode_s"] + x["timings"]["decode_s"]
                             for x in results)
    for x in results:
      x["timings"]["rtf"] = spent / max(total, 1e-9)
    return results


def alignment_matrix(result: Mapping[str, Any]) -> np.ndarray:
  """One-hot alignment ``[P + F, Jp + Jt]`` of a result: 1 on generated frames, 0.5 on the
  prompt's frames (so the prompt/generation boundary shows in the image)."""
  alignment = np.asarray(result["alignment"])
  num = len(result["prompt_phonemes"]) + len(result["phonemes"])
  out = np.zeros((len(alignment), num), np.float32)
  out[np.arange(len(alignment)), np.clip(alignment, 0, num - 1)] = 1.0
  out[:int(result["prompt_frames"])] *= 0.5
  return out


def save_alignment_image(path: str, result: Mapping[str, Any], title: str = "") -> None:
  """PNG of `alignment_matrix` (frames horizontal, phonemes vertical)."""
  from jaxtts.train.metrics import save_image  # pylint: disable=import-outside-toplevel
  save_image(path, alignment_matrix(result), title=title or "alignment (prompt at 0.5)",
             xlabel="frame", ylabel="phoneme (prompt, then text)")
