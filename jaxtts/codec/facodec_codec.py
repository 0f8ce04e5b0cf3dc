"""FACodec (NaturalSpeech 3 §3.2) as a `jaxtts.codec.base.Codec`: discrete codes and a timbre
vector, ``{"codes": int32 [F, Q], "timbre": float32 [H]}`` with Q = 6 in the paper's order
(prosody, content x 2, detail x 3) at ``hop = prod(encoder_strides)`` (200: 80 frames/s).

`convert` is zero-shot voice conversion (§3.2, "the timbre ... can be swapped"): the source's
prosody, content and detail codes decoded with the prompt's timbre. The timbre is the mean of
the timbre Transformer over the prompt's real frames (the padding to a whole second is
masked out); a prompt shorter than `min_prompt_seconds` is refused.

Restores only the generator's evaluation parameters (`jaxtts.workdir.restore_eval_params`).
"""

from __future__ import annotations

from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxtts import workdir as workdir_lib
from jaxtts.codec import facodec
from jaxtts.codec.base import DISCRETE, Codec, CodecInputError, Field, Representation
from jaxtts.files import round_up


class FACodecCodec(Codec):
  """A trained ``facodec`` workdir for encoding, decoding and converting single utterances."""

  name = "facodec"
  # Shortest prompt for a timbre estimate: the paper gives none; half a second holds a few
  # phones (40 frames at 80 Hz), below which the mean over frames is mostly one sound.
  min_prompt_seconds = 0.5

  def __init__(self, workdir: str, step: Optional[int] = None,
               cfg: Optional[ml_collections.ConfigDict] = None):
    cfg = cfg if cfg is not None else workdir_lib.load_config(workdir)
    workdir_lib.require_task(cfg, workdir, ("facodec",), "a FACodec codec")
    self.workdir, self.cfg = workdir, cfg
    self.corpus_dir = str(cfg.data.dir)
    self.model = model = facodec.from_config(cfg)
    self.step, params = workdir_lib.restore_eval_params(workdir, ("generator",), step, cfg)
    self.params = params["generator"]
    self.sample_rate = int(cfg.data.sample_rate)
    self.hop = model.hop_length
    q, h = model.num_codebooks, int(model.hidden_dim)
    self.codebook_size = int(model.codebook_size)
    self.representation = Representation(
        kind=DISCRETE, fields={"codes": Field("int32", (q,)),
                               "timbre": Field("float32", (h,), per_frame=False)},
        frame_rate=self.sample_rate / self.hop, codebook_sizes=(self.codebook_size,) * q)

    def encode(p, wav, frames):
      mask = (jnp.arange(wav.shape[-1] // model.hop_length) < frames)[None]
      return model.apply({"params": p}, wav[None], mask, method=model.encode)

    def phone_codes(p, wav, frames, durations):
      mask = (jnp.arange(wav.shape[-1] // model.hop_length) < frames)[None]
      return model.apply({"params": p}, wav[None], durations[None], mask,
                         method=model.phone_prosody_codes)[0]

    self._encode = jax.jit(encode)
    self._phone_codes = jax.jit(phone_codes)
    # Phone-level fields for stage 2 (`jaxtts.codec.dataset`): NS3 §3.3.1's targets.
    self.phone_fields = {"phone_prosody_codes": Field(
        "int32", (int(model.num_prosody_quantizers),), per_frame=False)}
    self._branches = jax.jit(lambda p, c: model.apply({"params": p}, c[None],
                                                      method=model.branch_vectors))
    self._phone_log_probs = jax.jit(lambda p, c: model.apply({"params": p}, c[None],
                                                             method=model.phone_log_probs)[0])
    self._decode = jax.jit(lambda p, c, t: model.apply({"params": p}, c[None], t[None],
                                                       method=model.decode)[0])

  def _encode_padded(self, wav: np.ndarray, num_frames: int) -> dict[str, np.ndarray]:
    out = self._encode(self.params, wav, num_frames)
    return {"codes": np.asarray(out["codes"])[0], "timbre": np.asarray(out["timbre"])[0]}

  def encode_phones(self, audio: np.ndarray, durations: np.ndarray) -> dict[str, np.ndarray]:
    """``audio [T]`` float, ``durations [P]`` frames (the corpus' phone durations at this
    codec's hop) -> ``{"phone_prosody_codes": int32 [P, num_prosody_quantizers]}``: the
    prosody quantizer's codes of each phone's mean prosody input (`FACodec.phone_prosody_codes`).
    Audio and phones are padded to buckets (a second; 64 phones) so few programs compile."""
    wav = np.asarray(audio, np.float32)
    d = np.asarray(durations, np.int32)
    if wav.ndim != 1 or not len(wav) or d.ndim != 1:
      raise CodecInputError(f"encode_phones expects audio [T] and durations [P], got "
                            f"{wav.shape} and {d.shape}")
    unit = self.frames_per_unit * self.hop
    frames = self.num_frames(len(wav))
    if int(d.sum()) > frames:
      raise CodecInputError(f"encode_phones: the durations sum to {int(d.sum())} frames, the "
                            f"audio has {frames} at hop {self.hop}")
    padded = np.pad(wav, (0, round_up(len(wav), unit) - len(wav)))
    d_padded = np.pad(d, (0, round_up(max(len(d), 1), 64) - len(d)))
    codes = self._phone_codes(self.params, padded, frames, d_padded)
    return {"phone_prosody_codes": np.asarray(codes)[:len(d)].astype(np.int32)}

  def phone_log_probs(self, codes: np.ndarray) -> np.ndarray:
    """``codes [F, Q]`` -> ``[F, num_phones]`` float32: log p(phone | frame) of the content
    codes' phone classifier (`FACodec.phone_log_probs`; ids of the training phoneme table)."""
    frames = len(codes)
    padded = np.pad(np.asarray(codes, np.int32), ((0, -frames % self.frames_per_unit), (0, 0)))
    return np.asarray(self._phone_log_probs(self.params, padded))[:frames]

  def _decode_padded(self, rep: Mapping[str, np.ndarray]) -> np.ndarray:
    codes = rep["codes"]
    if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
      raise CodecInputError(f"decode: field 'codes' holds values in [{codes.min()}, "
                            f"{codes.max()}]; this FACodec's codebooks have "
                            f"{self.codebook_size} entries (0..{self.codebook_size - 1})")
    return np.asarray(self._decode(self.params, codes, rep["timbre"]))

  def branch_features(self, audio: np.ndarray) -> dict[str, np.ndarray]:
    """The factorized representation of ``audio [T]`` as vectors: each branch's quantized
    frames ``[F, H]`` (``prosody``, ``content``, ``detail``) and ``timbre [H]``."""
    enc = self.encode(audio)
    frames = len(enc["codes"])
    codes = np.pad(enc["codes"], ((0, -frames % self.frames_per_unit), (0, 0)))
    out = {k: np.asarray(v)[0, :frames] for k, v in self._branches(self.params, codes).items()}
    out["timbre"] = enc["timbre"]
    return out

  def timbre(self, audio: np.ndarray, what: str = "prompt") -> np.ndarray:
    """The timbre vector ``[H]`` of ``audio [T]``; shorter than `min_prompt_seconds` is a
    `CodecInputError` naming ``what``."""
    seconds = len(audio) / self.sample_rate
    if seconds < self.min_prompt_seconds:
      raise CodecInputError(f"{what}: {seconds:.2f} s of audio is too short for a timbre "
                            f"estimate (at least {self.min_prompt_seconds} s)")
    return self.encode(audio)["timbre"]

  def convert(self, source: np.ndarray, prompt: np.ndarray,
              prompt_name: str = "prompt") -> np.ndarray:
    """Voice conversion: ``source [T]``'s codes decoded with ``prompt``'s timbre; ``[T]``."""
    codes = self.encode(source)["codes"]
    timbre = self.timbre(prompt, prompt_name)
    return self.decode({"codes": codes, "timbre": timbre})[:len(source)]
