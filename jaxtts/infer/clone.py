"""The CLONE generator: a trained ``clone`` workdir, end to end (no codec)::

    prompt wav ──|STFT|──> reference encoder ──> speaker embedding g [S]
    text ──> phonemes [J] ──> text encoder ──> prosody z (predictor | flow ±ε) ──> durations
         ──> acoustic encoder ──> wave decoder (Vocos or HiFi-GAN) ──> wav

Zero-shot needs a workdir trained with ``model.speaker_encoder="reference"`` (ours); a
speaker-ID workdir (CLONE's own mode) is refused with that reason, since a request names a
voice by its audio. The prompt's transcript is not used: CLONE does not continue the prompt,
it only takes its voice.

Options (`jaxtts.prosody.synthesis`): ``prosody`` ("predictor", the end-to-end mode, "flow",
or "reference": prosody transfer, the posterior mean ``z`` of the request's
``prosody_reference_audio``, another reading of the target text, pooled over its
``prosody_reference_durations`` or, on a ``model.alignment="mas"`` workdir, over the model's
own alignment of it),
``epsilon`` (the flow's "sample from −1 / 1"), ``noise_scale``, ``length_scale``,
``max_seconds``. Shapes compile once per bucket: phonemes padded to multiples of
`PHONEME_BUCKET`, frames to whole seconds, the batch to a power of two.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxtts import workdir as workdir_lib
from jaxtts.data.source import read_manifest
from jaxtts.files import round_up
from jaxtts.infer.base import Generator, SynthesisInputError, SynthesisRequest, finish_timings
from jaxtts.prosody import synthesis
from jaxtts.tasks.clone import aligner_log_mel, from_config, linear_spectrogram
from jaxtts.text import PhonemeTable, default_phoneme_table

TASK = "clone"
PHONEME_BUCKET = 32


@dataclasses.dataclass
class Prepared:
  """A checked request: the target ``phonemes [J]`` and the prompt's ``embedding [S]``."""
  phonemes: np.ndarray
  embedding: np.ndarray
  encode_s: float
  max_seconds: Optional[float] = None
  reference_z: Optional[np.ndarray] = None     # [J, prosody_dim], prosody=reference


class CLONEGenerator(Generator):
  task = TASK
  request_fields = ("text", "prompt_audio", "target_phonemes", "prosody_reference_audio",
                    "prosody_reference_durations", "prompt_sample_rate", "sample_rate",
                    "max_seconds", "id")
  option_names = ("max_seconds", "prosody", "epsilon", "noise_scale", "length_scale")
  component_names = ()

  def __init__(self, workdir: str, step: Optional[int] = None, *,
               components: Optional[Mapping[str, str]] = None,
               component_steps: Optional[Mapping[str, int]] = None, cfg=None):
    del components, component_steps
    cfg = cfg if cfg is not None else workdir_lib.load_config(workdir)
    workdir_lib.require_task(cfg, workdir, (TASK,), "the CLONE generator")
    if cfg.model.speaker_encoder != "reference":
      raise workdir_lib.WorkdirError(
          f"{workdir}: trained with speaker IDs (model.speaker_encoder="
          f"{cfg.model.speaker_encoder!r}, CLONE's mode), so it cannot take a voice from a "
          f"prompt; zero-shot synthesis needs a workdir trained with "
          f"model.speaker_encoder='reference'")
    self.cfg, self.model = cfg, from_config(cfg)
    self.step, params = workdir_lib.restore_eval_params(workdir, ("generator",), step, cfg)
    self.variables = {"params": params["generator"]}
    self.workdirs = {"clone": workdir}
    self.corpus_dir = str(cfg.data.dir) if cfg.data.dir else None
    try:
      self.table = PhonemeTable.from_json(read_manifest(cfg.data.dir)["phoneme_table"])
    except (OSError, ValueError, KeyError, TypeError):
      self.table = default_phoneme_table()
    self.sample_rate, self.hop = int(cfg.data.sample_rate), int(cfg.model.hop_length)
    self.max_phonemes = int(cfg.data.max_phonemes)
    self.default_max_seconds = float(cfg.data.bucket_samples[-1]) / self.sample_rate
    self._embed = jax.jit(lambda v, spec, mask: self.model.apply(
        v, spec, mask, method=self.model.embed_reference))
    self._posterior = jax.jit(functools.partial(synthesis.posterior_z, self.model))
    self._align = jax.jit(lambda v, phonemes, phone_mask, mel, frame_mask: self.model.apply(
        v, method=lambda m: m.align(m.encode_text(phonemes, phone_mask), phone_mask, mel,
                                    frame_mask)[0]))
    self._synthesize = jax.jit(
        functools.partial(synthesis.synthesize, self.model),
        static_argnames=("num_frames", "noise_scale", "length_scale", "prosody", "epsilon"))

  def max_frames(self, max_seconds: Optional[float] = None) -> int:
    seconds = self.default_max_seconds if max_seconds is None else float(max_seconds)
    if seconds <= 0:
      raise SynthesisInputError("max_seconds", f"must be positive, got {max_seconds}")
    return max(1, int(seconds * self.sample_rate) // self.hop)

  def _frames(self, wav: np.ndarray, field: str):
    """``(audio [1, f hop], |STFT| [1, f, K], frame mask [1, f], frames)``, f bucketed to whole
    seconds; fewer samples than one frame is an error naming ``field``."""
    frames = len(wav) // self.hop
    if frames < 1:
      raise SynthesisInputError(field, f"{len(wav)} samples is shorter than one frame "
                                       f"({self.hop} samples): no voice to take")
    f = round_up(frames, max(1, self.sample_rate // self.hop))
    audio = np.zeros((1, f * self.hop), np.float32)
    audio[0, :frames * self.hop] = wav[:frames * self.hop]
    mask = jnp.asarray((np.arange(f) < frames)[None])
    spec = linear_spectrogram(jnp.asarray(audio), self.hop) * mask[..., None]
    return jnp.asarray(audio), spec, mask, frames

  def _prepare(self, r: SynthesisRequest) -> Prepared:
    t0 = time.perf_counter()
    phonemes = self.target_ids(r)
    if len(phonemes) > self.max_phonemes:
      raise SynthesisInputError("text", f"{len(phonemes)} phonemes exceed the "
                                        f"{self.max_phonemes} the model was trained on "
                                        f"(data.max_phonemes); split the text")
    _, spec, mask, _ = self._frames(self.load_prompt(r), "prompt_audio")
    embedding = np.asarray(self._embed(self.variables, spec, mask))[0]
    reference_z = self._reference_z(r, phonemes)
    return Prepared(phonemes, embedding, time.perf_counter() - t0, r.max_seconds, reference_z)

  def _reference_z(self, r: SynthesisRequest, phonemes: np.ndarray) -> Optional[np.ndarray]:
    """The posterior mean ``z [J, D]`` of ``prosody_reference_audio`` (a reading of the same
    text, under its own voice), pooled over its durations; None without a reference."""
    if r.prosody_reference_audio is None:
      if r.prosody_reference_durations is not None:
        raise SynthesisInputError("prosody_reference_durations",
                                  "given without prosody_reference_audio")
      return None
    audio, spec, mask, frames = self._frames(self.load_audio(r, "prosody_reference_audio"),
                                             "prosody_reference_audio")
    j = len(phonemes)
    if frames < j:
      raise SynthesisInputError("prosody_reference_audio", f"{frames} frames cannot hold the "
                                                           f"text's {j} phonemes")
    p = round_up(j, PHONEME_BUCKET)
    ids = np.zeros((1, p), np.int32)
    ids[0, :j] = phonemes
    phone_mask = jnp.asarray(ids > 0)
    if r.prosody_reference_durations is not None:
      d = np.asarray(r.prosody_reference_durations)
      if (d.shape != (j,) or not np.issubdtype(d.dtype, np.integer) or (d < 1).any()
          or d.sum() > frames):
        raise SynthesisInputError(
            "prosody_reference_durations", f"expected {j} positive integers (frames per target "
                                           f"phoneme) summing to at most the reference's "
                                           f"{frames} frames, got {d.tolist()}")
      durations = jnp.asarray(np.pad(d.astype(np.int32), (0, p - j))[None])
    elif self.cfg.model.alignment == "mas":
      mel = aligner_log_mel(self.cfg, audio, spec.shape[1])
      durations = self._align(self.variables, jnp.asarray(ids), phone_mask, mel, mask)
    else:
      raise SynthesisInputError(
          "prosody_reference_durations", "this workdir was trained on corpus durations "
                                         "(model.alignment='durations') and has no aligner: "
                                         "give the reference's frames per target phoneme")
    embedding = self._embed(self.variables, spec, mask)
    z = self._posterior(self.variables, jnp.asarray(ids), phone_mask, durations, spec, mask,
                        speaker_embedding=embedding)
    return np.asarray(z)[0, :j]

  def synthesize_batch(self, prepared: Sequence[Any], *, seed: int = 0,
                       **options) -> list[dict[str, Any]]:
    """Each result: ``wav``, ``sample_rate``, ``durations`` [J], ``phonemes``, ``alignment``
    (phoneme of every frame), ``frames``, ``stopped_by`` ("durations", or "max_frames" when
    the predicted durations ran past ``max_seconds``) and ``timings``."""
    options = self.check_options(options)
    if not prepared:
      return []
    max_seconds = options.pop("max_seconds", None)
    reqs = [it if isinstance(it, Prepared) else self.prepare(
        {"max_seconds": max_seconds, **dict(it)}) for it in prepared]
    syn = self.cfg.synthesis
    prosody = str(options.get("prosody", "predictor"))
    if prosody not in synthesis.PROSODY_MODES:
      raise SynthesisInputError("prosody", f"{prosody!r}; valid: "
                                           f"{', '.join(synthesis.PROSODY_MODES)}")
    if prosody == "reference" and any(r.reference_z is None for r in reqs):
      raise SynthesisInputError("prosody_reference_audio", "prosody=reference transfers the "
                                "prosody of another reading of the text: give it")
    epsilon = options.get("epsilon")
    n = len(reqs)
    b = 1 << (n - 1).bit_length()
    rows = [reqs[min(row, n - 1)] for row in range(b)]
    p = round_up(max(len(r.phonemes) for r in reqs), PHONEME_BUCKET)
    phonemes = np.zeros((b, p), np.int32)
    for row, r in enumerate(rows):
      phonemes[row, :len(r.phonemes)] = r.phonemes
    phone_mask = jnp.asarray(phonemes > 0)
    num_frames = round_up(self.max_frames(max_seconds), max(1, self.sample_rate // self.hop))
    embedding = jnp.asarray(np.stack([r.embedding for r in rows]))
    reference_z = None
    if prosody == "reference":
      reference_z = np.zeros((b, p, int(self.cfg.model.prosody_dim)), np.float32)
      for row, r in enumerate(rows):
        reference_z[row, :len(r.phonemes)] = r.reference_z
      reference_z = jnp.asarray(reference_z)
    t0 = time.perf_counter()
    out = self._synthesize(
        self.variables, jnp.asarray(phonemes), phone_mask, jax.random.key(seed),
        num_frames=num_frames, speaker_embedding=embedding,
        noise_scale=float(options.get("noise_scale", syn.noise_scale)),
        length_scale=float(options.get("length_scale", syn.length_scale)), prosody=prosody,
        epsilon=None if epsilon is None else float(epsilon), reference_z=reference_z)
    wav, frame_len, durations = (np.asarray(out[k]) for k in ("wav", "frame_len", "durations"))
    generate_s = time.perf_counter() - t0
    limit = self.max_frames(max_seconds)
    results = []
    for row, r in enumerate(reqs):
      j = len(r.phonemes)
      d = durations[row, :j].astype(np.int64)
      frames = int(min(frame_len[row], limit))
      cut = bool(d.sum() > frames)
      alignment = np.repeat(np.arange(j), d)[:frames].astype(np.int32)
      results.append({
          "wav": wav[row, :frames * self.hop].astype(np.float32),
          "sample_rate": self.sample_rate, "durations": d.astype(np.int32),
          "phonemes": self.table.decode(r.phonemes), "alignment": alignment,
          "prompt_phonemes": [], "prompt_frames": 0, "frames": frames,  # nothing continued
          "stopped_by": "max_frames" if cut else "durations",
          "timings": {"encode_s": r.encode_s, "generate_s": generate_s, "batch_size": n}})
    finish_timings(results, generate_s)
    return results
