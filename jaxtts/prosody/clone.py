"""CLONE (Liu et al., arXiv 2207.06088; `000_31cfc13db0a5a5eb.txt`, Table 4 and the model figure):
a VITS-like end-to-end model with a phoneme-level prosody latent ``z`` under a flow prior.

Modules (Table 4; activations ``[B, P, ·]`` per phoneme, ``[B, F, ·]`` per frame)::

    h      = TextEncoder(phonemes)                          FFT blocks, relative positions
    g      = speaker embedding (ID table or the prompt's reference encoder), [B, S]
    μ_pp, log σ_pp = ProsodyPredictor(h, g)                  WN at the phoneme level
    ling   = length_regulate(h, durations)                  the "linguistic feature", [B, F, H]
    PF     = PosteriorEncoder(linear spec, ling, g)         WN at the frame level
    μ_φ, log σ_φ = Proj(phone_pool(PF, durations));  z = μ_φ + ε σ_φ       [B, P, D]
    f_θ(z; h) -> N(0, I)                                    CouplingFlow, eqs. 15-16
    log w  = DurationPredictor(sg(h) + Proj(sg(z_pp)), g)   the prosody sample z_pp ~ predictor
    îr     = AcousticEncoder(length_regulate(z, d), ling, g)      (inference path)
    ir     = PosteriorWaveEncoder(linear spec, g)                 (training only)
    wav    = WaveDecoder(îr or ir)                          Vocos head or HiFi-GAN (``decoder``)

Our choices where the paper is silent (each a field of `configs/clone.py` with the reason):
``prosody_dim`` (the latent size is unpublished), the linguistic feature being the text encoding
expanded by the durations, the duration predictor's input (the text encoding plus a projection
of the predictor's prosody sample, both stop-gradient as VITS detaches its inputs), and the
wave decoder: ``decoder="vocos"`` (`jaxtts.nn.vocos`, which learns on CPU; issue 12) or
``"hifigan"`` (`jaxtts.nn.hifigan`, VITS's generator; the paper preset's). ``excitation``
(ours, issue 12) makes the Vocos head a source-filter decoder driven by the frame F0
(`jaxtts.audio.excitation`): in training it gets the recording's F0 and voicing, and at
inference those of ``f0_head``, a projection of ``îr`` trained on them (log-F0 L1 on voiced
frames, voicing cross-entropy).
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtts.alignment import mas
from jaxtts.alignment.durations import length_regulate, phone_pool
from jaxtts.nn.duration import DurationPredictor
from jaxtts.nn.flow import CouplingFlow
from jaxtts.nn.hifigan import HiFiGANDecoder
from jaxtts.nn.transformer import TransformerStack
from jaxtts.audio.excitation import f0_from_head
from jaxtts.nn.vocos import VocosDecoder
from jaxtts.nn.wavenet import WaveNet


def _proj(features: int, name: str, zero: bool = False) -> nn.Dense:
  init = nn.initializers.zeros if zero else nn.initializers.lecun_normal()
  return nn.Dense(features, dtype=jnp.float32, name=name,
                  kernel_init=nn.with_logical_partitioning(init, ("channels", "latent")),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("latent",)))


def gaussian_sample(rng: jax.Array, mu: jax.Array, log_sigma: jax.Array,
                    noise_scale: float = 1.0) -> jax.Array:
  """``μ + noise_scale · ε · exp(log σ)``, ``ε ~ N(0, I)`` (the reparameterisation)."""
  return mu + noise_scale * jax.random.normal(rng, mu.shape, jnp.float32) * jnp.exp(log_sigma)


class CLONE(nn.Module):
  num_phones: int
  hidden: int = 192
  prosody_dim: int = 16
  speaker_dim: int = 256
  # "table": CLONE's speaker-ID embedding table (num_speakers rows); "reference": ours, a
  # reference encoder from the prompt's spectrogram, so unseen voices can be cloned.
  speaker_encoder: str = "table"
  # "durations": the corpus' phoneme durations (CLONE's external aligner); "mas": monotonic
  # alignment search (`jaxtts.alignment.mas`) of the log-mel frames under per-phoneme Gaussians
  # predicted from the text encoding (ours, after Glow-TTS), for corpora without durations.
  alignment: str = "durations"
  aligner_mels: int = 80
  num_speakers: int = 0
  reference_layers: int = 2
  text_layers: int = 6
  text_heads: int = 2
  text_ffn_dim: int = 768
  text_kernel_size: int = 3
  wn_kernel_size: int = 5
  prosody_layers: int = 4
  posterior_layers: int = 8
  acoustic_layers: int = 8
  wave_posterior_layers: int = 8
  flows: int = 4
  flow_layers: int = 4
  flow_mean_only: bool = False
  duration_filters: int = 256
  duration_kernel_size: int = 3
  duration_dropout: float = 0.5
  hop_length: int = 200
  # "vocos": the Vocos head (decoder_dim / _intermediate_dim / _layers); "hifigan": VITS's
  # HiFi-GAN generator (hifigan_*; the product of the upsample rates must equal hop_length).
  decoder: str = "vocos"
  # The source-filter Vocos head (jaxtts.nn.vocos, excitation=True) with an F0 head on îr.
  excitation: bool = False
  sample_rate: int = 16000
  decoder_dim: int = 512
  decoder_intermediate_dim: int = 1536
  decoder_layers: int = 8
  hifigan_upsample_rates: tuple = (8, 8, 2, 2)
  hifigan_upsample_kernel_sizes: tuple = (16, 16, 4, 4)
  hifigan_channels: int = 512
  hifigan_resblock_kernel_sizes: tuple = (3, 7, 11)
  hifigan_resblock_dilations: tuple = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
  dropout: float = 0.1
  dtype: Any = jnp.float32

  def setup(self):
    h = self.hidden
    self.phone_embedding = nn.Embed(self.num_phones, h, embedding_init=nn.with_logical_partitioning(
        nn.initializers.normal(h ** -0.5), ("vocab", "embed")), name="phone_embedding")
    self.text_encoder = TransformerStack(self.text_layers, self.text_heads, self.text_ffn_dim,
                                         self.text_kernel_size, self.dropout, self.dtype,
                                         position="relative_xl", name="text_encoder")
    if self.speaker_encoder == "table":
      if self.num_speakers <= 0:
        raise ValueError("CLONE: speaker_encoder='table' needs num_speakers > 0")
      self.speaker_table = nn.Embed(self.num_speakers, self.speaker_dim, name="speaker_table")
    elif self.speaker_encoder == "reference":
      self.reference_in = _proj(h, "reference_in")
      self.reference_encoder = WaveNet(h, self.wn_kernel_size, self.reference_layers,
                                       dtype=self.dtype, name="reference_encoder")
      self.reference_out = _proj(self.speaker_dim, "reference_out")
    else:
      raise ValueError(f"CLONE: speaker_encoder={self.speaker_encoder!r}; valid: table, "
                       f"reference")
    self.prosody_in = _proj(h, "prosody_in")
    self.prosody_predictor = WaveNet(h, self.wn_kernel_size, self.prosody_layers,
                                     dtype=self.dtype, name="prosody_predictor")
    self.prosody_out = _proj(2 * self.prosody_dim, "prosody_out")
    self.posterior_in = _proj(h, "posterior_in")
    self.posterior_encoder = WaveNet(h, self.wn_kernel_size, self.posterior_layers,
                                     dtype=self.dtype, name="posterior_encoder")
    self.posterior_out = _proj(2 * self.prosody_dim, "posterior_out")
    self.flow = CouplingFlow(self.flows, h, self.wn_kernel_size, self.flow_layers,
                             mean_only=self.flow_mean_only, dtype=self.dtype, name="flow")
    self.duration_prosody = _proj(h, "duration_prosody")
    self.duration_predictor = DurationPredictor(self.duration_filters, self.duration_kernel_size,
                                                self.duration_dropout, self.dtype,
                                                name="duration_predictor")
    self.acoustic_in = _proj(h, "acoustic_in")
    self.acoustic_encoder = WaveNet(h, self.wn_kernel_size, self.acoustic_layers,
                                    dtype=self.dtype, name="acoustic_encoder")
    self.wave_posterior_in = _proj(h, "wave_posterior_in")
    self.wave_posterior_encoder = WaveNet(h, self.wn_kernel_size, self.wave_posterior_layers,
                                          dtype=self.dtype, name="wave_posterior_encoder")
    if self.alignment == "mas":
      self.aligner = _proj(2 * self.aligner_mels, "aligner")
    elif self.alignment != "durations":
      raise ValueError(f"CLONE: alignment={self.alignment!r}; valid: durations, mas")
    if self.excitation and self.decoder != "vocos":
      raise ValueError(f"CLONE: excitation=True drives the Vocos head; decoder="
                       f"{self.decoder!r}")
    if self.excitation:
      self.f0_head = _proj(2, "f0_head")
    if self.decoder == "vocos":
      self.wave_decoder = VocosDecoder(self.hop_length, self.decoder_dim,
                                       self.decoder_intermediate_dim, self.decoder_layers,
                                       excitation=self.excitation, sample_rate=self.sample_rate,
                                       dtype=self.dtype, name="decoder")
    elif self.decoder == "hifigan":
      self.wave_decoder = HiFiGANDecoder(
          tuple(self.hifigan_upsample_rates), tuple(self.hifigan_upsample_kernel_sizes),
          self.hifigan_channels, tuple(self.hifigan_resblock_kernel_sizes),
          tuple(tuple(d) for d in self.hifigan_resblock_dilations), dtype=self.dtype,
          name="decoder")
      if self.wave_decoder.hop_length != self.hop_length:
        raise ValueError(f"CLONE: model.hifigan_upsample_rates "
                         f"{tuple(self.hifigan_upsample_rates)} upsample by "
                         f"{self.wave_decoder.hop_length}, but model.hop_length is "
                         f"{self.hop_length}")
    else:
      raise ValueError(f"CLONE: decoder={self.decoder!r}; valid: vocos, hifigan")

  # ------------------------------------------------------------------ pieces
  def speaker(self, speaker_id: Optional[jax.Array] = None,
              embedding: Optional[jax.Array] = None) -> jax.Array:
    """``[B, S]``: a given embedding (`embed_reference`'s), else the ID table's row."""
    if embedding is not None:
      return embedding.astype(jnp.float32)
    if self.speaker_encoder != "table":
      raise ValueError("CLONE: speaker_encoder='reference' needs the prompt's embedding "
                       "(embed_reference)")
    return self.speaker_table(speaker_id)

  def embed_reference(self, spec: jax.Array, frame_mask: jax.Array) -> jax.Array:
    """``spec [B, F, K]`` (linear magnitude) -> ``[B, S]``: WN over ``log(spec)``, the mean
    over valid frames, a projection (the reference encoder; ours)."""
    fm = frame_mask[..., None].astype(jnp.float32)
    x = self.reference_in(jnp.log(jnp.maximum(spec, 1e-5))) * fm
    pooled = jnp.sum(self.reference_encoder(x, fm) * fm, axis=1) / jnp.maximum(
        jnp.sum(fm, axis=1), 1.0)
    return self.reference_out(pooled)

  def encode_text(self, phonemes: jax.Array, phone_mask: jax.Array, deterministic: bool = True):
    """``phonemes [B, P]`` -> ``h [B, P, H]`` (zero on padding)."""
    x = self.phone_embedding(phonemes) * jnp.sqrt(float(self.hidden))
    h = self.text_encoder(x, phone_mask, deterministic=deterministic)
    return h * phone_mask[..., None]

  def predict_prosody(self, h: jax.Array, phone_mask: jax.Array, g: jax.Array):
    """``(μ_pp, log σ_pp)`` each ``[B, P, D]``: the prosody predictor ``s_ψ(z | t)``."""
    m = phone_mask[..., None].astype(jnp.float32)
    stats = self.prosody_out(self.prosody_predictor(self.prosody_in(h) * m, m, g)) * m
    return jnp.split(stats, 2, axis=-1)

  def posterior(self, spec: jax.Array, frame_mask: jax.Array, ling: jax.Array,
                durations: jax.Array, phone_mask: jax.Array, g: jax.Array):
    """``(μ_φ, log σ_φ)`` each ``[B, P, D]``: frames -> WN -> mean per phoneme -> projection."""
    fm = frame_mask[..., None].astype(jnp.float32)
    pf = self.posterior_encoder(self.posterior_in(spec) * fm, fm,
                                jnp.concatenate([ling, jnp.broadcast_to(
                                    g[:, None], ling.shape[:2] + g.shape[-1:])], -1))
    stats = self.posterior_out(phone_pool(pf, durations)) * phone_mask[..., None]
    return jnp.split(stats, 2, axis=-1)

  def prior(self, z: jax.Array, h: jax.Array, phone_mask: jax.Array, inverse: bool = False):
    """``f_θ(z; h)`` and its log-determinant ``[B]`` (eq. 15); ``inverse`` maps ``ε`` to ``z``."""
    return self.flow(z, phone_mask[..., None].astype(jnp.float32), h, inverse=inverse)

  def predict_log_durations(self, h: jax.Array, z_pp: jax.Array, phone_mask: jax.Array,
                            g: jax.Array, deterministic: bool = True) -> jax.Array:
    """``log w [B, P]`` from ``sg(h) + Proj(sg(z_pp))``."""
    x = jax.lax.stop_gradient(h) + self.duration_prosody(jax.lax.stop_gradient(z_pp))
    return self.duration_predictor(x, phone_mask[..., None], g, deterministic)

  def acoustic(self, z: jax.Array, ling: jax.Array, durations: jax.Array, frame_mask: jax.Array,
               g: jax.Array) -> jax.Array:
    """``îr [B, F, H]`` from the phoneme-level ``z`` expanded by the durations."""
    fm = frame_mask[..., None].astype(jnp.float32)
    zf = length_regulate(z, durations, ling.shape[1])
    return self.acoustic_encoder(self.acoustic_in(jnp.concatenate([zf, ling], -1)) * fm, fm, g)

  def wave_posterior(self, spec: jax.Array, frame_mask: jax.Array, g: jax.Array) -> jax.Array:
    """``ir [B, F, H]`` from the linear spectrogram (training only)."""
    fm = frame_mask[..., None].astype(jnp.float32)
    return self.wave_posterior_encoder(self.wave_posterior_in(spec) * fm, fm, g)

  def decode(self, ir: jax.Array, f0: Optional[jax.Array] = None,
             voiced: Optional[jax.Array] = None) -> jax.Array:
    """``[B, F, H]`` -> waveform ``[B, F · hop]``; with ``excitation``, at ``f0 [B, F]`` Hz
    and ``voiced [B, F]`` (`predict_f0`'s when not given)."""
    if not self.excitation:
      return self.wave_decoder(ir)
    if f0 is None:
      f0, voiced, _ = self.predict_f0(ir)
    return self.wave_decoder(ir, f0=f0, voiced=voiced)

  def predict_f0(self, ir: jax.Array):
    """``f0_head`` on frame features ``[B, F, H]``: ``(f0 Hz [B, F], voiced [B, F] bool,
    raw [B, F, 2])`` with ``raw = (log f0 - F0_LOG_CENTRE, voicing logit)``."""
    raw = self.f0_head(ir.astype(jnp.float32))
    return (*f0_from_head(raw), raw)

  def align(self, h: jax.Array, phone_mask: jax.Array, mel: jax.Array, frame_mask: jax.Array):
    """Monotonic alignment search of ``mel [B, F, M]`` (log-mel frames) under per-phoneme
    diagonal Gaussians ``N(μ_t, σ_t) = aligner(sg(h))``: ``(durations [B, P], aligner NLL per
    frame and mel bin along the path, alignable rows [B])``. The search is under
    stop_gradient; the NLL trains the aligner through the path (VITS's use of MAS)."""
    stats = self.aligner(jax.lax.stop_gradient(h))
    mu, log_sigma = jnp.split(stats, 2, axis=-1)                                  # [B, P, M]
    mel = jax.lax.stop_gradient(mel.astype(jnp.float32))
    # log N(x_f; μ_t, σ_t) summed over bins, as VITS's four-term matmul form: [B, F, P].
    inv = jnp.exp(-2 * log_sigma)
    ll = (-0.5 * jnp.einsum("bfm,bpm->bfp", jnp.square(mel), inv)
          + jnp.einsum("bfm,bpm->bfp", mel, mu * inv)
          + jnp.sum(-0.5 * jnp.square(mu) * inv - log_sigma - 0.5 * jnp.log(2 * jnp.pi),
                    axis=-1)[:, None, :])
    frame_len = jnp.sum(frame_mask, axis=1).astype(jnp.int32)
    text_len = jnp.sum(phone_mask, axis=1).astype(jnp.int32)
    index = mas.monotonic_alignment_search(ll, frame_len, text_len)
    path = mas.alignment_path(index, h.shape[1])                                  # [B, F, P]
    frames = jnp.maximum(jnp.sum(path), 1.0)
    nll = -jnp.sum(ll * path) / (frames * mel.shape[-1])
    return (jnp.sum(path, axis=1).astype(jnp.int32), nll,
            mas.alignable(frame_len, text_len))

  def linguistic(self, h: jax.Array, durations: jax.Array, num_frames: int) -> jax.Array:
    return length_regulate(h, durations, num_frames)

  # ------------------------------------------------------------------ training forward
  def __call__(self, phonemes, phone_mask, durations, spec, frame_mask, speaker_id=None,
               speaker_embedding=None, *, rng: jax.Array, segment_start=None,
               segment_frames: Optional[int] = None, mel: Optional[jax.Array] = None,
               f0: Optional[jax.Array] = None, voiced: Optional[jax.Array] = None,
               deterministic: bool = True) -> dict:
    """Everything the losses need. ``durations [B, P]`` in frames, ``spec [B, F, K]``; the wave
    decoder runs on ``segment_frames`` frames from ``segment_start [B]`` (all frames if None).
    With ``alignment="mas"`` the durations come from `align` on ``mel [B, F, M]`` instead.

    Returns a dict: ``mu_q, log_sigma_q, z, z_p, logdet, mu_pp, log_sigma_pp, log_w`` and the
    decoded ``wav_posterior`` (from ``ir``) and ``wav_acoustic`` (from ``îr``), plus
    ``ir, ir_hat`` on the segment, the ``durations`` used, with MAS ``aligner_nll`` and
    ``alignable [B]``, and with ``excitation`` (``f0, voiced [B, F]`` required) ``f0_raw``
    (`predict_f0` on all of ``îr``)."""
    r_post, r_pp = jax.random.split(rng)
    if speaker_embedding is None and self.speaker_encoder == "reference":
      speaker_embedding = self.embed_reference(spec, frame_mask)   # the utterance itself
    g = self.speaker(speaker_id, speaker_embedding)
    h = self.encode_text(phonemes, phone_mask, deterministic)
    extra = {}
    if self.alignment == "mas":
      if mel is None:
        raise ValueError("CLONE: alignment='mas' needs the log-mel frames (mel=...)")
      durations, extra["aligner_nll"], extra["alignable"] = self.align(h, phone_mask, mel,
                                                                       frame_mask)
    ling = self.linguistic(h, durations, spec.shape[1])
    mu_q, log_sigma_q = self.posterior(spec, frame_mask, ling, durations, phone_mask, g)
    pm = phone_mask[..., None].astype(jnp.float32)
    z = gaussian_sample(r_post, mu_q, log_sigma_q) * pm
    z_p, logdet = self.prior(z, h, phone_mask)
    mu_pp, log_sigma_pp = self.predict_prosody(h, phone_mask, g)
    z_pp = gaussian_sample(r_pp, mu_pp, log_sigma_pp) * pm
    log_w = self.predict_log_durations(h, z_pp, phone_mask, g, deterministic)
    ir_hat = self.acoustic(z, ling, durations, frame_mask, g)
    ir = self.wave_posterior(spec, frame_mask, g)
    if self.excitation:
      if f0 is None or voiced is None:
        raise ValueError("CLONE: excitation=True trains on the recording's f0 and voiced")
      extra["f0_raw"] = self.predict_f0(ir_hat)[2]                          # [B, F, 2]
    if segment_frames is not None:
      take = jax.vmap(lambda x, s: jax.lax.dynamic_slice_in_dim(x, s, segment_frames, 0))
      ir, ir_hat = take(ir, segment_start), take(ir_hat, segment_start)
      if self.excitation:
        f0, voiced = take(f0, segment_start), take(voiced, segment_start)
    source = {}
    if self.excitation:   # both paths decode at the recording's F0 (teacher forcing)
      source = dict(f0=jnp.concatenate([f0, f0], 0), voiced=jnp.concatenate([voiced, voiced], 0))
    both = self.decode(jnp.concatenate([ir, ir_hat], 0), **source)
    n = ir.shape[0]
    return dict(mu_q=mu_q, log_sigma_q=log_sigma_q, z=z, z_p=z_p, logdet=logdet, mu_pp=mu_pp,
                log_sigma_pp=log_sigma_pp, log_w=log_w, ir=ir, ir_hat=ir_hat,
                wav_posterior=both[:n], wav_acoustic=both[n:], durations=durations, **extra)
