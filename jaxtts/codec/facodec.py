"""FACodec, the factorized codec of NaturalSpeech 3 (``../shared/papers/003_1b235cc35c31a20d.txt``
§3.2, appendix B.1; the released inference code ``ns3_codec``; notes with sources in
``../shared/research/ns3_facodec.md``).

Shapes (hop = prod(encoder_strides), F = T / hop, H = hidden_dim)::

  wav [B, T] -> encoder -> h [B, F, H]
  prosody  q_p, codes [B, F, 1] = ResidualFVQ_1(h)            (or of the log-mel, see below)
  content  q_c, codes [B, F, 2] = ResidualFVQ_2(h)
  detail   q_d, codes [B, F, 3] = ResidualFVQ_3(h - sg(q_p + q_c))
  timbre   t [B, H]             = masked mean over frames of Transformer(h)
  z        = CLN(q_p + q_c + q_d, t)   (γ, β = Linear(t), γ = 1 and β = 0 at init)
  wav_hat  = decoder(z) [B, T]

Codes are stored in the paper's order: prosody, content ×2, detail ×3 ([B, F, 6] int32).

Choices where the paper is silent or the released code differs, each a field:

* ``prosody_input``: ``"encoder"`` (the paper and the V1 checkpoint: the prosody quantizer
  sees h) or ``"mel20"`` (the released V2: the first 20 bins of an 80-bin log-mel of n_fft
  1024 / win 800 / hop 200, through Linear(20 -> H) and a Transformer).
* ``detach_prosody_content``: the released code feeds ``sg(q_p)`` and ``sg(q_c)`` to the
  decoder, so those branches learn from their heads, GRLs and VQ losses only; the paper
  does not say. Off by default (the reconstruction also trains them).
* ``detail_dropout``: the probability of zeroing ``q_d`` for a whole utterance in training;
  the paper gives no value, the code uses 0.75.
* ``bottleneck``: the 8-dim FVQ projection (False = Table 15's ablation).
* ``num_detail_quantizers``: 3 (0 = the "no detail codebooks" row).
* ``decoder``/``encoder``: DAC's convolutions (the paper, with Snake) or the Vocos head /
  STFT encoder of `jaxtts.nn.vocos` (ours, for small compute; issue 12's sweep showed the
  STFT encoder is what lets a small codec learn on CPU).
* ``normalize_codes``: FVQ on the unit sphere (`jaxtts.nn.quantize`, ViT-VQGAN): the
  decoder's conditional LayerNorm leaves the FVQ inputs' scale free, and it grew in CPU
  training; the paper and the released code quantize raw vectors (the paper preset's False).
* ``head_norm``: LayerNorm before each training head's Linear (`Head`: the GRL adversaries
  must not be beatable by feature scale).
* ``timbre_kernel_size``: the conv-FFN kernel of the timbre Transformer (the released code:
  Conv1d(256 -> 1024, k5), then a Linear back); the paper says only "several conformer
  blocks".

The supervision and gradient-reversal heads (linear maps; the paper does not give their form)
read the quantized branches: prosody -> normalised F0 and voicing; content -> phone; timbre
-> speaker; and through `jaxtts.nn.grl`: prosody -> phone, content -> F0, detail -> phone
and F0, the pooled ``q_p + q_c + q_d`` -> speaker. Their losses live in
`jaxtts.tasks.facodec`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtts.audio import spectral
from jaxtts.alignment.durations import phone_pool
from jaxtts.codec.gmm_vae import GMMVAEDecoder, GMMVAEEncoder
from jaxtts.nn.dtypes import dtype_of
from jaxtts.nn.grl import reversed_features
from jaxtts.nn.norm import ConditionalLayerNorm
from jaxtts.nn.quantize import ResidualFVQ
from jaxtts.nn.transformer import TransformerStack
from jaxtts.audio.excitation import f0_from_head
from jaxtts.nn.vocos import VocosDecoder, VocosEncoder

PROSODY_MEL = dict(n_fft=1024, win_length=800, n_mels=80, fmax=8000.0, bins=20)


def masked_mean_pool(x: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  """``x [B, F, C]`` -> ``[B, C]``, the mean over frames where ``mask [B, F]`` is 1."""
  if mask is None:
    return jnp.mean(x, axis=1)
  w = mask.astype(x.dtype)[..., None]
  return jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


class Head(nn.Module):
  """A training head ``[..., H] -> [..., features]``: ``Dense(LayerNorm(x))`` (``norm``) or
  ``Dense(x)``. The paper does not give the heads' form (the released code: 3 residual units
  and a Linear). The norm makes a head blind to the scale of its input: behind a gradient
  reversal a plain linear adversary is beaten by growing the features without bound (its
  loss rises with their norm), which blew up the FVQ inputs (commitment loss 6e3 at step 200
  of the espeak preset) and collapsed the codebooks to ~3 codes; with the norm the encoder can
  only defeat the adversary by removing the information.

  The input is pinned to the activation sharding (``batch``, ``time``, ``embed``): a head's
  input is also the decoder's, and where the two cotangents meet, jax 0.10.2's SPMD
  partitioner summed them wrongly on a (data, fsdp, tensor) mesh (encoder gradients off by
  up to 60 % with the forward exact; `tests/test_sharding.py`, found by adding
  ``0 * mean(reconstruction)`` to a phone-head-only loss). The constraint's transpose fixes
  the cotangent's sharding and the sum is exact."""
  features: int
  norm: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.with_logical_constraint(x.astype(jnp.float32),
                                   ("batch",) + ("time",) * (x.ndim - 2) + ("embed",))
    if self.norm:
      x = nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, name="norm",
                       scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                       bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                              ("embed",)))(x)
    return nn.Dense(self.features, dtype=jnp.float32, name="out",
                    kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                             ("embed", "vocab")),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                           ("vocab",)))(x)


class FACodec(nn.Module):
  """FACodec generator and its training heads (module docstring)."""
  encoder_dim: int = 64
  encoder_strides: Tuple[int, ...] = (2, 4, 5, 5)
  hidden_dim: int = 256
  decoder_dim: int = 1024
  codebook_size: int = 1024
  code_dim: int = 8
  bottleneck: bool = True
  normalize_codes: bool = False
  num_prosody_quantizers: int = 1
  num_content_quantizers: int = 2
  num_detail_quantizers: int = 3
  timbre_layers: int = 4
  timbre_heads: int = 4
  timbre_ffn_dim: int = 1024
  timbre_kernel_size: int = 5
  prosody_input: str = "encoder"
  detach_prosody_content: bool = False
  detail_dropout: float = 0.75
  grl_alpha: float = 1.0
  use_grl: bool = True
  head_norm: bool = True
  num_phones: int = 1
  # The source-filter Vocos head (ours, issue 12): an F0 head on the decoder input (the CLN
  # output, so timbre sets the register) drives a harmonic excitation; the recording's F0 in
  # training, the head's when decoding codes (reconstruction, voice conversion, NS3).
  excitation: bool = False
  num_speakers: int = 1
  sample_rate: int = 16000
  encoder_type: str = "dac"
  decoder_type: str = "dac"
  snake_beta: bool = False
  vocos_dim: int = 512
  vocos_intermediate_dim: int = 1536
  vocos_layers: int = 8
  vocos_n_fft: Optional[int] = None
  spectral_encoder_dim: int = 256
  spectral_encoder_intermediate_dim: int = 768
  spectral_encoder_layers: int = 4
  dtype: Any = jnp.float32

  @property
  def hop_length(self) -> int:
    return int(np.prod(self.encoder_strides))

  @property
  def num_codebooks(self) -> int:
    return (self.num_prosody_quantizers + self.num_content_quantizers
            + self.num_detail_quantizers)

  def num_frames(self, num_samples: int) -> int:
    return -(-int(num_samples) // self.hop_length)

  def setup(self):
    if self.prosody_input not in ("encoder", "mel20"):
      raise ValueError(f"model.prosody_input must be 'encoder' or 'mel20', got "
                       f"{self.prosody_input!r}")
    if self.encoder_type == "dac":
      self.encoder = GMMVAEEncoder(self.encoder_dim, tuple(self.encoder_strides),
                                   self.hidden_dim, dtype=self.dtype,
                                   snake_beta=self.snake_beta)
    elif self.encoder_type == "vocos":
      self.encoder = VocosEncoder(self.hop_length, self.hidden_dim, self.spectral_encoder_dim,
                                  self.spectral_encoder_intermediate_dim,
                                  self.spectral_encoder_layers, self.vocos_n_fft,
                                  dtype=self.dtype)
    else:
      raise ValueError(f"model.encoder must be 'dac' or 'vocos', got {self.encoder_type!r}")
    if self.decoder_type == "dac":
      self.decoder = GMMVAEDecoder(self.decoder_dim, tuple(reversed(self.encoder_strides)),
                                   dtype=self.dtype, snake_beta=self.snake_beta)
    elif self.decoder_type == "vocos":
      self.decoder = VocosDecoder(self.hop_length, self.vocos_dim, self.vocos_intermediate_dim,
                                  self.vocos_layers, self.vocos_n_fft,
                                  excitation=self.excitation, sample_rate=self.sample_rate,
                                  dtype=self.dtype)
    else:
      raise ValueError(f"model.decoder must be 'dac' or 'vocos', got {self.decoder_type!r}")
    if self.excitation:
      if self.decoder_type != "vocos":
        raise ValueError(f"model.excitation drives the Vocos decoder; model.decoder is "
                         f"{self.decoder_type!r}")
      self.decoder_f0_head = nn.Dense(2, dtype=jnp.float32, name="decoder_f0_head")
    vq = lambda n, name: ResidualFVQ(self.hidden_dim, n, self.codebook_size,  # noqa: E731
                                     self.code_dim, self.bottleneck, self.normalize_codes,
                                     name=name)
    self.prosody_vq = vq(self.num_prosody_quantizers, "prosody_vq")
    self.content_vq = vq(self.num_content_quantizers, "content_vq")
    self.detail_vq = (vq(self.num_detail_quantizers, "detail_vq")
                      if self.num_detail_quantizers else None)
    if self.prosody_input == "mel20":
      self.prosody_in = nn.Dense(self.hidden_dim, dtype=jnp.float32, name="prosody_in")
      self.prosody_encoder = TransformerStack(self.timbre_layers, self.timbre_heads,
                                              self.timbre_ffn_dim, self.timbre_kernel_size,
                                              dtype=self.dtype, output_kernel_size=1,
                                              name="prosody_encoder")
    self.timbre_encoder = TransformerStack(self.timbre_layers, self.timbre_heads,
                                           self.timbre_ffn_dim, self.timbre_kernel_size,
                                           dtype=self.dtype, output_kernel_size=1,
                                           name="timbre_encoder")
    self.condition = ConditionalLayerNorm(name="timbre_norm")
    # Training heads (module docstring).
    head = lambda n, name: Head(n, self.head_norm, name=name)  # noqa: E731
    self.prosody_f0_head = head(2, "prosody_f0_head")           # [z-scored F0, voiced logit]
    self.content_phone_head = head(self.num_phones, "content_phone_head")
    self.timbre_speaker_head = head(self.num_speakers, "timbre_speaker_head")
    self.grl_prosody_phone = head(self.num_phones, "grl_prosody_phone_head")
    self.grl_content_f0 = head(2, "grl_content_f0_head")
    self.grl_detail_phone = head(self.num_phones, "grl_detail_phone_head")
    self.grl_detail_f0 = head(2, "grl_detail_f0_head")
    self.grl_speaker = head(self.num_speakers, "grl_speaker_head")

  # ------------------------------------------------------------------ pieces
  def _pad(self, wav: jax.Array) -> jax.Array:
    pad = self.num_frames(wav.shape[-1]) * self.hop_length - wav.shape[-1]
    return jnp.pad(wav, ((0, 0), (0, pad))) if pad else wav

  def _prosody_features(self, wav: jax.Array, h: jax.Array,
                        mask: Optional[jax.Array]) -> jax.Array:
    if self.prosody_input == "encoder":
      return h
    m = PROSODY_MEL
    mel = spectral.log_mel_spectrogram(wav, sample_rate=self.sample_rate, n_fft=m["n_fft"],
                                       hop_length=self.hop_length, win_length=m["win_length"],
                                       n_mels=m["n_mels"], fmax=m["fmax"])
    mel = mel[:, :h.shape[1], :m["bins"]]                     # centred frames: 1 + T / hop
    return self.prosody_encoder(self.prosody_in(mel), mask)

  def timbre(self, h: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """``h [B, F, H] -> [B, H]``: the Transformer, mean-pooled over valid frames."""
    return masked_mean_pool(self.timbre_encoder(h, mask), mask)

  def quantize(self, wav: jax.Array, mask: Optional[jax.Array] = None) -> Dict[str, Any]:
    """``wav [B, T]`` (a multiple of the hop) -> encoder output, the three branches' VQ outputs
    and the timbre vector."""
    h = self.encoder(wav)
    prosody = self.prosody_vq(self._prosody_features(wav, h, mask), mask)
    content = self.content_vq(h, mask)
    detail = (self.detail_vq(h - jax.lax.stop_gradient(prosody["quantized"]
                                                       + content["quantized"]), mask)
              if self.detail_vq is not None else None)
    return {"h": h, "prosody": prosody, "content": content, "detail": detail,
            "timbre": self.timbre(h, mask)}

  def combine(self, q_p: jax.Array, q_c: jax.Array, q_d: Optional[jax.Array],
              timbre: jax.Array) -> jax.Array:
    """The decoder input ``CLN(q_p + q_c + q_d, timbre)`` ``[B, F, H]``."""
    z = q_p + q_c + (q_d if q_d is not None else 0.0)
    return self.condition(z, timbre)

  def decode(self, codes: jax.Array, timbre: jax.Array) -> jax.Array:
    """``codes [B, F, num_codebooks]`` int32, ``timbre [B, H]`` -> ``wav [B, F hop]``."""
    if codes.ndim != 3 or codes.shape[-1] != self.num_codebooks:
      raise ValueError(f"FACodec.decode: codes must be [B, F, {self.num_codebooks}], got "
                       f"{codes.shape}")
    p, c = self.num_prosody_quantizers, self.num_content_quantizers
    q_p = self.prosody_vq.decode_codes(codes[..., :p])
    q_c = self.content_vq.decode_codes(codes[..., p:p + c])
    q_d = self.detail_vq.decode_codes(codes[..., p + c:]) if self.detail_vq else None
    z = self.combine(q_p, q_c, q_d, timbre)
    if self.excitation:
      f0, voiced = f0_from_head(self.decoder_f0_head(z))
      return self.decoder(z, f0=f0, voiced=voiced)
    return self.decoder(z)

  def branch_vectors(self, codes: jax.Array) -> Dict[str, jax.Array]:
    """``codes [B, F, num_codebooks]`` -> each branch's quantized vectors ``[B, F, H]``
    (``prosody``, ``content`` and, with detail codebooks, ``detail``): what the decoder sums,
    and what the disentanglement probes of `jaxtts.eval.probes` read."""
    p, c = self.num_prosody_quantizers, self.num_content_quantizers
    out = {"prosody": self.prosody_vq.decode_codes(codes[..., :p]),
           "content": self.content_vq.decode_codes(codes[..., p:p + c])}
    if self.detail_vq is not None:
      out["detail"] = self.detail_vq.decode_codes(codes[..., p + c:])
    return out

  def phone_log_probs(self, codes: jax.Array) -> jax.Array:
    """``codes [B, F, num_codebooks]`` -> ``[B, F, num_phones]``: the content branch's phone
    classifier (its training head) as log-probabilities, what a forced aligner reads to find a
    transcript's phone durations (`jaxtts.alignment.forced`; NaturalSpeech 3's prompt
    durations)."""
    p, c = self.num_prosody_quantizers, self.num_content_quantizers
    logits = self.content_phone_head(self.content_vq.decode_codes(codes[..., p:p + c]))
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)

  def encode(self, wav: jax.Array, mask: Optional[jax.Array] = None) -> Dict[str, jax.Array]:
    """``wav [B, T]`` -> ``codes [B, F, num_codebooks]`` int32 and ``timbre [B, H]``."""
    q = self.quantize(self._pad(wav), mask)
    parts = [q["prosody"]["codes"], q["content"]["codes"]]
    if q["detail"] is not None:
      parts.append(q["detail"]["codes"])
    return {"codes": jnp.concatenate(parts, axis=-1), "timbre": q["timbre"]}

  def phone_prosody_codes(self, wav: jax.Array, durations: jax.Array,
                          mask: Optional[jax.Array] = None) -> jax.Array:
    """NaturalSpeech 3 §3.3.1's phone-level prosody targets: the prosody branch's input (the
    encoder output ``h``, or the 20-bin mel features of ``prosody_input='mel20'``) averaged
    over each phone's frames (`jaxtts.alignment.durations.phone_pool`), then coded by the
    prosody quantizer. ``wav [B, T]``, ``durations [B, P]`` frames -> int32 ``[B, P,
    num_prosody_quantizers]`` (phones of no frames code the zero vector)."""
    wav = self._pad(wav)
    h = self.encoder(wav)
    pooled = phone_pool(self._prosody_features(wav, h, mask), durations)
    return self.prosody_vq(pooled, durations > 0)["codes"]

  def codebook_encodings(self, wav: jax.Array, mask: Optional[jax.Array] = None
                         ) -> Dict[str, jax.Array]:
    """``wav [B, T]`` -> each branch quantizer stack's lookup inputs ``sg(z_e)``
    ``[B, F, Q_branch, space_dim]``, keyed by its parameter scope (``prosody_vq``,
    ``content_vq``, ``detail_vq``): what `jaxtts.nn.quantize.reset_dead_codes` draws from."""
    q = self.quantize(self._pad(wav), mask)
    return {f"{name}_vq": q[name]["encodings"] for name in ("prosody", "content", "detail")
            if q[name] is not None}

  # ------------------------------------------------------------------ training forward
  def __call__(self, wav: jax.Array, train: bool = False, *,
               frame_mask: Optional[jax.Array] = None, f0: Optional[jax.Array] = None,
               voiced: Optional[jax.Array] = None) -> Dict[str, Any]:
    """Encodes, quantizes and reconstructs ``wav [B, T]``; returns the reconstruction
    ``[B, T]``, ``codes``, ``timbre``, the summed ``commitment_loss`` and ``codebook_loss``,
    per-branch codes, the heads' outputs (``heads``: name -> ``[B, F, ·]`` or ``[B, ·]``) and,
    with the Vocos decoder, its spectrum ``head_log_magnitude`` / ``head_phase``
    ``[B, F, n_fft // 2 + 1]``.
    With ``train``, detail dropout draws from the ``'dropout'`` rng. With ``excitation``,
    ``heads["decoder_f0"]`` and the decoder driven by ``f0, voiced [B, F]`` when given."""
    length = wav.shape[-1]
    wav = self._pad(wav)
    q = self.quantize(wav, frame_mask)
    q_p, q_c = q["prosody"]["quantized"], q["content"]["quantized"]
    q_d = q["detail"]["quantized"] if q["detail"] is not None else None
    dec_p, dec_c = ((jax.lax.stop_gradient(q_p), jax.lax.stop_gradient(q_c))
                    if self.detach_prosody_content else (q_p, q_c))
    dec_d = q_d
    if q_d is not None and train and self.detail_dropout > 0:
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.detail_dropout,
                                  (wav.shape[0], 1, 1))
      dec_d = q_d * keep.astype(q_d.dtype)
    z = self.combine(dec_p, dec_c, dec_d, q["timbre"])
    spectrum, source, excitation_heads = {}, {}, {}
    if self.excitation:   # the recording's F0 when given (training), else the head's
      excitation_heads["decoder_f0"] = self.decoder_f0_head(z)
      if f0 is None:
        f0, voiced = f0_from_head(excitation_heads["decoder_f0"])
      source = dict(f0=f0, voiced=voiced)
    if self.decoder_type == "vocos":
      reconstruction, (log_mag, phase) = self.decoder(z, with_spectrum=True, **source)
      spectrum = {"head_log_magnitude": log_mag, "head_phase": phase}
    else:
      reconstruction = self.decoder(z)
    reconstruction = reconstruction[:, :length]
    branches = [b for b in (q["prosody"], q["content"], q["detail"]) if b is not None]
    grl = lambda x: reversed_features(x, self.grl_alpha, self.use_grl)  # noqa: E731
    heads = {
        **excitation_heads,
        "prosody_f0": self.prosody_f0_head(q_p),
        "content_phone": self.content_phone_head(q_c),
        "timbre_speaker": self.timbre_speaker_head(q["timbre"]),
        "grl_prosody_phone": self.grl_prosody_phone(grl(q_p)),
        "grl_content_f0": self.grl_content_f0(grl(q_c)),
        "grl_speaker": self.grl_speaker(grl(masked_mean_pool(
            q_p + q_c + (q_d if q_d is not None else 0.0), frame_mask))),
    }
    if q_d is not None:
      heads["grl_detail_phone"] = self.grl_detail_phone(grl(q_d))
      heads["grl_detail_f0"] = self.grl_detail_f0(grl(q_d))
    return {
        "reconstruction": reconstruction,
        "codes": jnp.concatenate([b["codes"] for b in branches], axis=-1),
        "timbre": q["timbre"],
        "commitment_loss": sum(b["commitment_loss"] for b in branches),
        "codebook_loss": sum(b["codebook_loss"] for b in branches),
        "branch_codes": {name: b["codes"] for name, b in
                         zip(("prosody", "content", "detail"), branches)},
        "heads": heads,
        **spectrum,
    }


def from_config(cfg: Any) -> FACodec:
  """The model of a ``facodec`` config (``configs/facodec.py``: ``model.*`` and
  ``train.compute_dtype``); used by the task and the inference codec alike."""
  m = cfg.model
  return FACodec(
      encoder_dim=m.encoder_dim, encoder_strides=tuple(m.encoder_strides),
      hidden_dim=m.hidden_dim, decoder_dim=m.decoder_dim, codebook_size=m.codebook_size,
      code_dim=m.code_dim, bottleneck=m.bottleneck, normalize_codes=m.normalize_codes,
      num_prosody_quantizers=m.num_prosody_quantizers,
      num_content_quantizers=m.num_content_quantizers,
      num_detail_quantizers=m.num_detail_quantizers, timbre_layers=m.timbre_layers,
      timbre_heads=m.timbre_heads, timbre_ffn_dim=m.timbre_ffn_dim,
      timbre_kernel_size=m.timbre_kernel_size, prosody_input=m.prosody_input,
      detach_prosody_content=m.detach_prosody_content, detail_dropout=m.detail_dropout,
      grl_alpha=m.grl_alpha, use_grl=m.use_grl, head_norm=m.head_norm, num_phones=m.num_phones,
      num_speakers=m.num_speakers, sample_rate=int(cfg.data.sample_rate),
      encoder_type=m.encoder, decoder_type=m.decoder,
      excitation=bool(m.get("excitation", False)), snake_beta=m.get("snake_beta", False),
      vocos_dim=m.vocos.dim,
      vocos_intermediate_dim=m.vocos.intermediate_dim, vocos_layers=m.vocos.num_layers,
      vocos_n_fft=m.vocos.n_fft or None, spectral_encoder_dim=m.vocos_encoder.dim,
      spectral_encoder_intermediate_dim=m.vocos_encoder.intermediate_dim,
      spectral_encoder_layers=m.vocos_encoder.num_layers,
      dtype=dtype_of(cfg.train.compute_dtype))
