"""The NaturalSpeech 3 generator: a trained ``ns3`` workdir and the FACodec of its code shards
(§3.3, appendix A.2)::

    prompt wav ──FACodec.encode──> prompt codes [Fp, 6], timbre [H]
    prompt transcript ──> prompt phonemes [Jp] ──(durations: given, or aligned)──> d_prompt [Jp]
        ──FACodec.encode_phones──> prompt phone-level prosody codes [Jp, Qp]
    text ──> phonemes [Jt]
    generate.phone_level: phone-level prosody codes, then duration tokens of the Jt phones
    generate.frame_level: the 6 code levels of the Σ d_target new frames
    FACodec.decode([prompt codes; new codes], the prompt's timbre) minus the prompt's samples

The prompt's phone durations come from the request (``prompt_durations``, frames at the codec's
rate, e.g. the corpus' own durations in `jaxtts-eval zero-shot`) or, without them, from a
forced alignment of the transcript to the prompt (`jaxtts.alignment.forced`) on the posteriors
of FACodec's content phone classifier (NS3 uses an external aligner; FACodec's head is the
aligner a FACodec user already has). Timbre is never generated: it is the prompt's.

Shapes compile once per bucket: phones padded to multiples of `PHONEME_BUCKET`, frames to
whole seconds, the batch to a power of two; each sampler setting compiles its own program.

Input checks (`SynthesisInputError` naming the field): empty or unpronounceable text; no
prompt transcript; more phonemes than the model was trained on (``data.max_phonemes``: split
the text); a prompt whose frames cannot hold its transcript's phonemes (the aligner needs one
frame per phoneme), or ``prompt_durations`` that do not match the transcript or the audio;
a prompt plus ``max_seconds`` beyond ``synthesis.max_total_seconds``. A FACodec workdir whose
codebook layout differs from the model's is a `WorkdirError` naming the fields.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np

from jaxtts import workdir as workdir_lib
from jaxtts.alignment.forced import align_durations
from jaxtts.codec.base import DISCRETE, CodecInputError
from jaxtts.codec.registry import load_codec
from jaxtts.data.source import read_manifest
from jaxtts.diffusion import generate
from jaxtts.files import round_up
from jaxtts.infer.base import Generator, SynthesisInputError, SynthesisRequest, finish_timings
from jaxtts.tasks.ns3 import from_config
from jaxtts.text import PhonemeTable, default_phoneme_table

log = logging.getLogger("jaxtts.infer")

TASK = "ns3"
PHONEME_BUCKET = 32


@dataclasses.dataclass
class Prepared:
  """A checked request: the prompt's ``codes [Fp, Q]``, ``timbre [H]``, ``prompt_phonemes
  [Jp]``, ``prompt_durations [Jp]`` (summing to Fp), ``prompt_phone_codes [Jp, Qp]``, the
  target ``phonemes [Jt]``; ``durations_from`` ``"request"`` or ``"aligner"``."""
  prompt_codes: np.ndarray
  timbre: np.ndarray
  prompt_phonemes: np.ndarray
  prompt_durations: np.ndarray
  prompt_phone_codes: np.ndarray
  phonemes: np.ndarray
  durations_from: str
  encode_s: float
  text: Optional[str] = None
  max_seconds: Optional[float] = None


class NS3Generator(Generator):
  """A trained ``ns3`` workdir plus its FACodec (``components={"codec": DIR}``, default the
  ``codes.codec_workdir`` of the shards' manifest)."""

  task = TASK
  request_fields = ("text", "prompt_audio", "prompt_text", "prompt_phonemes",
                    "target_phonemes", "prompt_durations", "prompt_sample_rate", "sample_rate",
                    "max_seconds", "id")
  option_names = ("max_seconds",) + generate.SETTINGS
  component_names = ("codec",)

  def __init__(self, workdir: str, step: Optional[int] = None, *,
               components: Optional[Mapping[str, str]] = None,
               component_steps: Optional[Mapping[str, int]] = None, cfg=None):
    cfg = cfg if cfg is not None else workdir_lib.load_config(workdir)
    workdir_lib.require_task(cfg, workdir, (TASK,), "the NaturalSpeech 3 generator")
    components, component_steps = dict(components or {}), dict(component_steps or {})
    manifest = {}
    try:
      manifest = read_manifest(cfg.data.dir)
    except (OSError, ValueError) as e:
      if "codec" not in components:
        raise workdir_lib.WorkdirError(
            f"{workdir}: cannot find the FACodec: config.data.dir {cfg.data.dir!r} has no "
            f"readable manifest ({e}); pass the codec workdir (--codec-workdir)") from e
      log.warning("%s: no code manifest (%s); using the default phoneme table", workdir, e)
    codec_workdir = components.get("codec") or manifest.get("codes", {}).get("codec_workdir")
    if not codec_workdir:
      raise workdir_lib.WorkdirError(f"{cfg.data.dir}/manifest.json has no "
                                     f"'codes.codec_workdir'; pass --codec-workdir")
    self.cfg, self.model = cfg, from_config(cfg)
    self.step, params = workdir_lib.restore_eval_params(workdir, ("model",), step, cfg)
    self.params = params["model"]
    self.codec = load_codec(codec_workdir, component_steps.get("codec"))
    self._check_codec(codec_workdir, workdir)
    self.workdirs = {"ns3": workdir, "codec": codec_workdir}
    self.corpus_dir = str(cfg.data.dir)
    self.sample_rate, self.hop = int(self.codec.sample_rate), int(self.codec.hop)
    self.frame_rate = self.sample_rate / self.hop
    self.table = (PhonemeTable.from_json(manifest["phoneme_table"])
                  if "phoneme_table" in manifest else default_phoneme_table())
    if len(self.table) > int(cfg.model.num_phones):
      raise workdir_lib.WorkdirError(
          f"phoneme table {self.table.version} has {len(self.table)} symbols, more than "
          f"config.model.num_phones={cfg.model.num_phones} of {workdir}")
    syn = cfg.synthesis
    self.max_seconds = float(syn.max_seconds)
    self.max_total_seconds = float(syn.max_total_seconds)
    self.max_phonemes = int(cfg.data.max_phonemes)
    self.duration_prompt = bool(cfg.diffusion.duration_prompt)
    self._phone = jax.jit(functools.partial(generate.phone_level, self.model),
                          static_argnames=("settings", "duration_prompt"))
    self._frame = jax.jit(functools.partial(generate.frame_level, self.model),
                          static_argnames=("settings",))

  def _check_codec(self, codec_workdir: str, workdir: str) -> None:
    rep, m = self.codec.representation, self.cfg.model
    if rep.kind != DISCRETE or not hasattr(self.codec, "phone_log_probs"):
      raise workdir_lib.WorkdirError(f"codec {codec_workdir}: a {self.codec.name} codec; the "
                                     f"NaturalSpeech 3 generator needs a FACodec")
    sizes = sorted(set(int(s) for s in rep.codebook_sizes))
    qp = int(self.codec.phone_fields["phone_prosody_codes"].shape[0])
    for ours, theirs, field in ((len(rep.codebook_sizes), m.num_code_levels,
                                 "num_code_levels"), (sizes, [int(m.codebook_size)],
                                                      "codebook_size")):
      if ours != theirs:
        raise workdir_lib.WorkdirError(
            f"codec {codec_workdir} has {field}={ours} but the NS3 workdir {workdir} has "
            f"config.model.{field}={theirs}")
    if int(m.phone_prosody_levels) > qp:
      raise workdir_lib.WorkdirError(
          f"codec {codec_workdir} has {qp} prosody quantizer(s) but {workdir} has "
          f"config.model.phone_prosody_levels={m.phone_prosody_levels}")

  # ------------------------------------------------------------------ inputs
  def max_frames(self, max_seconds: Optional[float] = None) -> int:
    seconds = self.max_seconds if max_seconds is None else float(max_seconds)
    if seconds <= 0:
      raise SynthesisInputError("max_seconds", f"must be positive, got {seconds}")
    return max(1, int(round(seconds * self.frame_rate)))

  def _check_length(self, prompt_frames: int, max_seconds: Optional[float], field: str):
    limit = int(round(self.max_total_seconds * self.frame_rate))
    budget = self.max_frames(max_seconds)
    if prompt_frames + budget > limit:
      raise SynthesisInputError(
          field, f"{prompt_frames / self.frame_rate:.2f} s prompt + "
          f"{budget / self.frame_rate:.2f} s to generate exceeds the limit of "
          f"{self.max_total_seconds:g} s (synthesis.max_total_seconds); use a prompt of at "
          f"most {(limit - budget) / self.frame_rate:.2f} s")

  def _prompt_durations(self, r: SynthesisRequest, codes: np.ndarray, prompt_ids: np.ndarray
                        ) -> tuple[np.ndarray, str]:
    frames, n = len(codes), len(prompt_ids)
    if r.prompt_durations is not None:
      d = np.asarray(r.prompt_durations)
      if d.shape != (n,) or not np.issubdtype(d.dtype, np.integer) or (d < 0).any():
        raise SynthesisInputError("prompt_durations", f"expected {n} non-negative frame counts "
                                                      f"(one per prompt phoneme), got shape "
                                                      f"{d.shape} dtype {d.dtype}")
      if not 0 < int(d.sum()) <= frames:
        raise SynthesisInputError("prompt_durations", f"they sum to {int(d.sum())} frames; the "
                                                      f"prompt audio has {frames} at hop "
                                                      f"{self.hop}")
      return d.astype(np.int32), "request"
    if frames < n:
      raise SynthesisInputError(
          "prompt_text", f"the prompt's {frames} frames ({frames / self.frame_rate:.2f} s) "
          f"cannot hold its transcript's {n} phonemes: is the transcript for this audio?")
    log_probs = self.codec.phone_log_probs(codes)[:, prompt_ids]                   # [Fp, Jp]
    return align_durations(log_probs), "aligner"

  def _prepare(self, r: SynthesisRequest) -> Prepared:
    t0 = time.perf_counter()
    phonemes, prompt_ids = self.target_ids(r), self.prompt_ids(r)
    if len(phonemes) + len(prompt_ids) > self.max_phonemes:
      raise SynthesisInputError(
          "text", f"{len(prompt_ids)} prompt + {len(phonemes)} target phonemes exceed the "
          f"{self.max_phonemes} the model was trained on (data.max_phonemes); split the text "
          f"or use a shorter prompt")
    wav = self.load_prompt(r)
    try:
      enc = self.codec.encode(wav)
      timbre = self.codec.timbre(wav, "prompt_audio")
    except CodecInputError as e:
      raise SynthesisInputError("prompt_audio", str(e)) from e
    durations, source = self._prompt_durations(r, enc["codes"], prompt_ids)
    frames = int(durations.sum())
    self._check_length(frames, r.max_seconds, "prompt_audio")
    qp = int(self.cfg.model.phone_prosody_levels)
    phone_codes = np.zeros((len(prompt_ids), qp), np.int32)
    if qp:
      phone_codes = self.codec.encode_phones(wav[:frames * self.hop], durations)[
          "phone_prosody_codes"][:, :qp]
    return Prepared(enc["codes"][:frames].astype(np.int32), timbre.astype(np.float32),
                    prompt_ids, durations, phone_codes, phonemes, source,
                    time.perf_counter() - t0, r.text, r.max_seconds)

  def resynthesize(self, audio: np.ndarray) -> np.ndarray:
    return self.codec.resynthesize(audio)

  # ------------------------------------------------------------------ synthesis
  def synthesize_batch(self, prepared: Sequence[Any], *, seed: int = 0,
                       **options) -> list[dict[str, Any]]:
    """Several requests in one program per stage. Options: ``max_seconds`` and the sampler's
    (`jaxtts.diffusion.generate.SETTINGS`; defaults ``config.synthesis``).

    Each result: ``wav``, ``sample_rate``, ``durations`` int [Jt] (frames per target phoneme),
    ``phonemes``, ``prompt_phonemes`` (symbols), ``prompt_durations`` and where they came from
    (``prompt_durations_from``), ``alignment`` int [Fp + F] (phone index of every frame),
    ``prompt_frames``, ``frames``, ``stopped_by`` (``"durations"``, or ``"max_frames"`` when
    the durations ran past ``max_seconds`` and the text was cut), ``nfe`` (model calls per
    stage) and ``timings`` {encode_s, generate_s, decode_s, batch_size, rtf}.
    """
    options = self.check_options(options)
    if not prepared:
      return []
    max_seconds = options.pop("max_seconds", None)
    settings = generate.Settings.from_config(self.cfg.synthesis, **options)
    reqs = [it if isinstance(it, Prepared) else self.prepare(
        {"max_seconds": max_seconds, **dict(it)}) for it in prepared]
    for k, r in enumerate(reqs):
      self._check_length(len(r.prompt_codes), max_seconds, f"items[{k}].prompt_audio")
    max_frames = self.max_frames(max_seconds)
    m = self.cfg.model
    qp, q = int(m.phone_prosody_levels), int(m.num_code_levels)
    n = len(reqs)
    b = 1 << (n - 1).bit_length()
    rows = [reqs[min(row, n - 1)] for row in range(b)]  # padding rows repeat the last request
    p = round_up(max(len(r.prompt_phonemes) + len(r.phonemes) for r in reqs), PHONEME_BUCKET)
    phonemes = np.zeros((b, p), np.int32)
    phone_codes = np.zeros((b, p, qp + 1), np.int32)
    phone_len, prompt_phones = np.zeros((b,), np.int32), np.zeros((b,), np.int32)
    for row, r in enumerate(rows):
      jp = len(r.prompt_phonemes)
      ids = np.concatenate([r.prompt_phonemes, r.phonemes])
      phonemes[row, :len(ids)], phone_len[row], prompt_phones[row] = ids, len(ids), jp
      phone_codes[row, :jp, :qp] = r.prompt_phone_codes
      phone_codes[row, :jp, qp] = np.minimum(r.prompt_durations, int(m.max_duration))
    phone_rng, frame_rng = jax.random.split(jax.random.key(seed))
    t0 = time.perf_counter()
    enc, phone_out, nfe_phone = self._phone(self.params, phonemes, phone_len, prompt_phones,
                                            phone_codes, phone_rng, settings=settings,
                                            duration_prompt=self.duration_prompt)
    phone_out = np.asarray(phone_out)
    durations = np.zeros((b, p), np.int32)
    stopped = []
    for row, r in enumerate(rows):
      jp, jt = len(r.prompt_phonemes), len(r.phonemes)
      target = phone_out[row, jp:jp + jt, qp].astype(np.int64)
      if target.sum() == 0:  # nothing to say would be no utterance: a frame per phone
        target = np.ones_like(target)
      cut = bool(target.sum() > max_frames)
      if cut:  # the frames past max_seconds are not generated
        ends = np.minimum(np.cumsum(target), max_frames)
        target = np.diff(np.concatenate([[0], ends]))
      stopped.append("max_frames" if cut else "durations")
      durations[row, :jp], durations[row, jp:jp + jt] = r.prompt_durations, target
    frame_len = durations.sum(axis=1).astype(np.int32)
    frames_per_second = int(np.ceil(self.frame_rate))
    t = round_up(int(frame_len.max()), frames_per_second)
    frame_codes = np.zeros((b, t, q), np.int32)
    prompt_frames = np.zeros((b,), np.int32)
    for row, r in enumerate(rows):
      frame_codes[row, :len(r.prompt_codes)] = r.prompt_codes
      prompt_frames[row] = len(r.prompt_codes)
    codes, nfe_frame = self._frame(self.params, enc, durations, frame_len, prompt_frames,
                                   frame_codes, frame_rng, settings=settings)
    codes = np.asarray(codes)
    generate_s = time.perf_counter() - t0
    nfe = {"phone": int(nfe_phone), "frame": int(nfe_frame),
           "total": int(nfe_phone) + int(nfe_frame)}
    results = []
    for row, r in enumerate(reqs):
      t1 = time.perf_counter()
      fp, total = len(r.prompt_codes), int(frame_len[row])
      wav = self.codec.decode({"codes": codes[row, :total], "timbre": r.timbre})[fp * self.hop:]
      decode_s = time.perf_counter() - t1
      jp, jt = len(r.prompt_phonemes), len(r.phonemes)
      alignment = np.repeat(np.arange(jp + jt), durations[row, :jp + jt]).astype(np.int32)
      results.append({
          "wav": wav.astype(np.float32), "sample_rate": self.sample_rate,
          "durations": durations[row, jp:jp + jt].copy(),
          "phonemes": self.table.decode(r.phonemes),
          "prompt_phonemes": self.table.decode(r.prompt_phonemes),
          "prompt_durations": r.prompt_durations, "prompt_durations_from": r.durations_from,
          "alignment": alignment, "prompt_frames": fp, "frames": total - fp,
          "stopped_by": stopped[row], "nfe": nfe,
          "timings": {"encode_s": r.encode_s, "generate_s": generate_s, "decode_s": decode_s,
                      "batch_size": n}})
    finish_timings(results, generate_s)
    return results
