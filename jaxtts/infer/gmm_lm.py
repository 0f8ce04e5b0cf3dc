"""The GMM-LM generator: a trained GMM-LM and the codec of its latents (Lin & He, ICLR 2025,
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

A model trained with ``model.frames_per_step = r > 1`` (`jaxtts.gmm_lm.stacking`) decodes
``r`` frames per step: the prompt keeps its first ``P // r * r`` frames, stacked, and the new
steps are unstacked; ``alignment`` and ``durations`` are reported per codec frame.

Shapes compile once per bucket: prompt frames are padded to whole seconds, phoneme counts to
multiples of `PHONEME_BUCKET`, the batch to a power of two; ``max_seconds`` is static (each
value compiles its own decoder).

Input checks (`SynthesisInputError` naming the field): empty or unpronounceable text; no
prompt transcript (there is no ASR here: pass ``prompt_text``, ``prompt_phonemes``, or put
the transcript in ``<prompt>.txt`` beside a prompt file); a prompt shorter than one latent
frame; a prompt for which ``prompt frames + max_frames`` exceeds ``max_total_seconds``
(``config.synthesis.max_total_seconds`` when the config has it, else twice
``synthesis.max_seconds``); missing files. A transcript that cannot match its prompt is only
warned about: fewer than `MIN_FRAMES_PER_PHONEME` or more than `MAX_FRAMES_PER_PHONEME`
prompt frames per prompt phoneme means it is probably for other audio.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np

from jaxtts import workdir as workdir_lib
from jaxtts.codec.base import CONTINUOUS
from jaxtts.codec.registry import load_codec
from jaxtts.data.source import read_manifest
from jaxtts.files import round_up
from jaxtts.gmm_lm import decode, stacking
from jaxtts.gmm_lm.model import from_config
from jaxtts.infer.base import (Generator, SynthesisInputError, SynthesisRequest,
                               finish_timings)
from jaxtts.text import PhonemeTable, default_phoneme_table

log = logging.getLogger("jaxtts.infer")

TASK = "gmm_lm"
PHONEME_BUCKET = 32
MIN_FRAMES_PER_PHONEME = 1.0
MAX_FRAMES_PER_PHONEME = 40.0
STOP_REASONS = ("stop_logit", "passed_last_phoneme", "max_frames")  # decode.generate's codes
STAY_MODES = ("st_gumbel", "threshold")


@dataclasses.dataclass
class Prepared:
  """A checked request: ``prompt_latents [P, D]`` float32, ``prompt_phonemes [Jp]`` and
  ``phonemes [Jt]`` int32 (prompt transcript and target text), ``encode_s`` the seconds spent
  on G2P and encoding."""
  prompt_latents: np.ndarray
  prompt_phonemes: np.ndarray
  phonemes: np.ndarray
  encode_s: float
  text: Optional[str] = None
  max_seconds: Optional[float] = None


class GMMLMGenerator(Generator):
  """A trained ``gmm_lm`` workdir plus the codec of its latents.

  Args:
    workdir: the GMM-LM workdir (config + checkpoints).
    step: its checkpoint step (default: the latest).
    components: ``{"codec": codec workdir}`` (default: ``latents.codec_workdir`` of the
      manifest in the LM config's ``data.dir``); ``component_steps`` likewise.
    max_total_seconds: limit on prompt + generated audio (see the module docstring).
  """

  task = TASK
  request_fields = ("text", "prompt_audio", "prompt_text", "prompt_phonemes",
                    "target_phonemes", "prompt_sample_rate", "sample_rate", "max_seconds", "id")
  option_names = ("max_seconds", "weight_temperature", "scale_temperature", "stay_mode")
  component_names = ("codec",)

  def __init__(self, workdir: str, step: Optional[int] = None, *,
               components: Optional[Mapping[str, str]] = None,
               component_steps: Optional[Mapping[str, int]] = None,
               max_total_seconds: Optional[float] = None,
               cfg=None):
    cfg = cfg if cfg is not None else workdir_lib.load_config(workdir)
    workdir_lib.require_task(cfg, workdir, (TASK,), "the GMM-LM generator")
    components, component_steps = dict(components or {}), dict(component_steps or {})
    manifest = {}
    try:
      manifest = read_manifest(cfg.data.dir)
    except (OSError, ValueError) as e:
      if "codec" not in components:
        raise workdir_lib.WorkdirError(
            f"{workdir}: cannot find the codec: config.data.dir {cfg.data.dir!r} has no "
            f"readable manifest ({e}); pass the codec workdir (--codec-workdir)") from e
      log.warning("%s: no latent manifest (%s); using the default phoneme table", workdir, e)
    codec_workdir = components.get("codec") or manifest.get("latents", {}).get("codec_workdir")
    if not codec_workdir:
      raise workdir_lib.WorkdirError(f"{cfg.data.dir}/manifest.json has no "
                                     f"'latents.codec_workdir'; pass --codec-workdir")
    self.cfg, self.model = cfg, from_config(cfg)
    self.step, params = workdir_lib.restore_eval_params(workdir, ("model",), step, cfg)
    self.params = params["model"]
    self.codec = load_codec(codec_workdir, component_steps.get("codec"))
    if self.codec.representation.kind != CONTINUOUS:
      raise workdir_lib.WorkdirError(f"codec {codec_workdir}: a {self.codec.name} codec of "
                                     f"discrete codes; the GMM-LM models continuous latents")
    for ours, theirs, field in ((self.codec.representation.dim, cfg.model.latent_dim,
                                 "latent_dim"), (self.codec.hop, cfg.model.latent_hop,
                                                 "latent_hop")):
      if int(ours) != int(theirs):
        raise workdir_lib.WorkdirError(
            f"codec {codec_workdir} has {field}={ours} but the GMM-LM workdir {workdir} has "
            f"config.model.{field}={theirs}")
    self.workdirs = {"lm": workdir, "codec": codec_workdir}
    self.corpus_dir = str(cfg.data.dir)
    self.sample_rate, self.hop = int(self.codec.sample_rate), int(self.codec.hop)
    self.latent_dim = int(self.codec.representation.dim)
    self.frame_rate = self.sample_rate / self.hop
    self.frames_per_step = stacking.frames_per_step(cfg)
    self.table = (PhonemeTable.from_json(manifest["phoneme_table"])
                  if "phoneme_table" in manifest else default_phoneme_table())
    if len(self.table) > int(cfg.model.vocab_size):
      raise workdir_lib.WorkdirError(
          f"phoneme table {self.table.version} has {len(self.table)} symbols, more than "
          f"config.model.vocab_size={cfg.model.vocab_size} of {workdir}")
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
    """Decoding buffer ``round(max_seconds * frame_rate)`` frames (config default), a whole
    number of decoder steps."""
    seconds = self.defaults["max_seconds"] if max_seconds is None else float(max_seconds)
    if seconds <= 0:
      raise SynthesisInputError("max_seconds", f"must be positive, got {seconds}")
    r = self.frames_per_step
    return max(1, int(round(seconds * self.frame_rate / r))) * r

  def _prepare(self, r: SynthesisRequest) -> Prepared:
    t0 = time.perf_counter()
    phonemes, prompt_ids = self.target_ids(r), self.prompt_ids(r)
    wav = self.load_prompt(r)
    step = self.hop * self.frames_per_step
    frames = len(wav) // step * self.frames_per_step
    if frames < 1:
      raise SynthesisInputError("prompt_audio", f"{len(wav)} samples is shorter than one "
                                                f"decoder step ({step} samples at "
                                                f"{self.sample_rate} Hz)")
    self._check_length(frames, r.max_seconds, "prompt_audio")
    per_phoneme = frames / len(prompt_ids)
    if not MIN_FRAMES_PER_PHONEME <= per_phoneme <= MAX_FRAMES_PER_PHONEME:
      log.warning("prompt_text: %d prompt frames for %d prompt phonemes (%.1f frames per "
                  "phoneme, plausible %g-%g): does the transcript match the prompt audio?",
                  frames, len(prompt_ids), per_phoneme, MIN_FRAMES_PER_PHONEME,
                  MAX_FRAMES_PER_PHONEME)
    latents = self.codec.encode(wav[:frames * self.hop])["latents"]
    return Prepared(latents, prompt_ids, phonemes, time.perf_counter() - t0, r.text,
                    r.max_seconds)

  def _check_length(self, prompt_frames: int, max_seconds: Optional[float], field: str):
    limit = int(round(self.max_total_seconds * self.frame_rate))
    budget = self.max_frames(max_seconds)
    if prompt_frames + budget > limit:
      raise SynthesisInputError(
          field, f"{prompt_frames / self.frame_rate:.2f} s prompt + "
          f"{budget / self.frame_rate:.2f} s to generate exceeds the limit of "
          f"{self.max_total_seconds:g} s (max_total_seconds); use a prompt of at most "
          f"{(limit - budget) / self.frame_rate:.2f} s")

  def resynthesize(self, audio: np.ndarray) -> np.ndarray:
    return self.codec.resynthesize(audio)

  # ------------------------------------------------------------------ synthesis
  def synthesize_batch(self, prepared: Sequence[Any], *, seed: int = 0,
                       **options) -> list[dict[str, Any]]:
    """Several requests in one `decode.generate` call. Options: ``max_seconds``,
    ``weight_temperature``, ``scale_temperature``, ``stay_mode`` (defaults:
    ``config.synthesis``). Rows share one PRNG key, so a row's sample differs from the same
    request synthesized alone.

    Each result: ``wav``, ``sample_rate``, ``durations`` int [Jt] (generated frames per target
    phoneme), ``phonemes`` (target symbols), ``prompt_phonemes`` (symbols), ``alignment`` int
    [P + F] (phoneme index into prompt + target phonemes for every prompt and generated
    frame), ``prompt_frames`` P, ``frames`` F, ``stopped_by`` (one of `STOP_REASONS`) and
    ``timings`` {encode_s, generate_s, decode_s, batch_size, rtf} (``generate_s`` is the
    batch's; ``rtf`` the batch's total time over its total audio).
    """
    options = self.check_options(options)
    if not prepared:
      return []
    max_seconds = options.get("max_seconds")
    mode = options.get("stay_mode", self.defaults["stay_mode"])
    if mode not in STAY_MODES:
      raise SynthesisInputError("stay_mode", f"{mode!r} is not one of {STAY_MODES}")
    reqs = [it if isinstance(it, Prepared) else self.prepare(
        {"max_seconds": max_seconds, **dict(it)}) for it in prepared]
    for k, r in enumerate(reqs):
      self._check_length(len(r.prompt_latents), max_seconds, f"items[{k}].prompt_audio")
    rf = self.frames_per_step
    max_steps = self.max_frames(max_seconds) // rf
    n = len(reqs)
    b = 1 << (n - 1).bit_length()
    p = round_up(max(len(r.prompt_latents) for r in reqs), int(np.ceil(self.frame_rate)) * rf)
    j = round_up(max(len(r.prompt_phonemes) + len(r.phonemes) for r in reqs), PHONEME_BUCKET)
    prompt = np.zeros((b, p, self.latent_dim), np.float32)
    prompt_len, phoneme_len, prompt_phoneme_len = (np.zeros((b,), np.int32) for _ in range(3))
    phonemes = np.zeros((b, j), np.int32)
    for row in range(b):
      r = reqs[min(row, n - 1)]  # padding rows repeat the last request; their output is dropped
      ids = np.concatenate([r.prompt_phonemes, r.phonemes])
      prompt[row, :len(r.prompt_latents)] = r.prompt_latents
      prompt_len[row], phonemes[row, :len(ids)], phoneme_len[row] = (
          len(r.prompt_latents), ids, len(ids))
      prompt_phoneme_len[row] = len(r.prompt_phonemes)
    prompt, prompt_len = stacking.stack_frames(prompt, prompt_len, rf)
    t0 = time.perf_counter()
    out = decode.generate(
        self.model, self.params, prompt, prompt_len, phonemes, phoneme_len,
        jax.random.key(seed), max_frames=max_steps,
        weight_temperature=float(options.get("weight_temperature",
                                             self.defaults["weight_temperature"])),
        scale_temperature=float(options.get("scale_temperature",
                                            self.defaults["scale_temperature"])),
        stop_threshold=self.defaults["stop_threshold"], stay_mode=mode,
        prompt_phoneme_len=prompt_phoneme_len,
        stop_on_last_phoneme_only=self.defaults["stop_on_last_phoneme_only"])
    out = jax.tree.map(np.asarray, out)
    generate_s = time.perf_counter() - t0
    results = []
    for row, r in enumerate(reqs):
      t1 = time.perf_counter()
      plen, jp = len(r.prompt_latents), len(r.prompt_phonemes)
      slen = int(out["lengths"][row])                                   # decoder steps
      flen = slen * rf                                                  # codec frames
      frames = stacking.unstack_frames(out["frames"][row, :slen], rf)
      wav = self.codec.decode({"latents": np.concatenate([r.prompt_latents, frames])})
      wav = wav[plen * self.hop:]
      decode_s = time.perf_counter() - t1
      alignment = np.repeat(np.concatenate([
          np.argmax(out["prompt_alpha"][row, :plen // rf], axis=-1),
          out["phoneme_index"][row, :slen]]), rf).astype(np.int32)
      durs = rf * decode.durations(out["phoneme_index"][row:row + 1, :slen],
                                   int(phoneme_len[row]))
      results.append({
          "wav": wav.astype(np.float32), "sample_rate": self.sample_rate,
          "durations": durs[0, jp:].astype(np.int32),
          "phonemes": self.table.decode(r.phonemes),
          "prompt_phonemes": self.table.decode(r.prompt_phonemes),
          "alignment": alignment, "prompt_frames": plen, "frames": flen,
          "stopped_by": STOP_REASONS[int(out["stopped_by"][row])],
          "timings": {"encode_s": r.encode_s, "generate_s": generate_s, "decode_s": decode_s,
                      "batch_size": n}})
    finish_timings(results, generate_s)
    return results
