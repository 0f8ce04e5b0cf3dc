"""GMM-LM (Lin & He, ICLR 2025, §3.2-3.3, Algorithm 1, Table 7): a Conformer phoneme encoder,
a stochastic hard monotonic alignment and a causal Conformer decoder with a Gaussian-mixture
output head over continuous GMM-VAE latents.

Teacher-forced forward (training), for latents ``h [B, I, D]`` and phonemes ``[B, J]``:

1. ``Y = Encoder(Embed(phonemes))`` [B, J, E] (bidirectional Conformer).
2. Decoder inputs ``x_i``: ``x_0 = 0`` (begin-of-speech), ``x_i = h_{i-1}`` (teacher forcing),
   so step ``i`` predicts ``h_i``.
3. Energies ``e_ij = (W_q x_i) . (W_k y_j) / sqrt(A) + r`` (Algorithm 1 step 1, with projections
   and Raffel et al.'s scalar bias ``r``); stay decisions ``u = sample_stay(e)`` (eqs. 10-11,
   straight-through Gumbel by default), ``u_0 = 1`` so the first step sits on phoneme 0
   (Algorithm 1's ``alpha_0``); ``alpha = monotonic_alignment(u)`` (step 7, a ``lax.scan``).
   ``straight_through="step"`` backpropagates eq. 11 per decision through the hard recursion;
   ``"sequence"`` keeps the hard alignment forward and takes the relaxed alignment's gradient
   (`monotonic.straight_through_alignment`). ``hold_last_phoneme`` parks on the last phoneme
   or lets the alignment fall off past it (Algorithm 1's shift).
4. Context ``c_i = (W_y Y)^T alpha_i + W_x x_i`` (step 8; ``W_y`` only when ``E != d``).
5. ``H = Decoder(c)`` (causal Conformer: causal self-attention + causal convolution);
   ``MixtureHead(H)`` gives eq. 6-7's ``omega, nu, tau`` for ``h_i`` and ``Linear(H)`` the stop
   logit (Shen et al., 2018: "is ``h_i`` the last frame").

``alignment="cross_attention"`` replaces steps 3's scan by a softmax over ``e`` (Table 6's
baseline). Inference (``decode=True``) uses `prefill` and `step` (see `jaxtts.gmm_lm.decode`).
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtts.alignment import monotonic
from jaxtts.gmm_lm import stacking
from jaxtts.nn.conformer import ConformerStack
from jaxtts.nn.dtypes import dtype_of
from jaxtts.nn.mixture import MixtureHead, MixtureParams

ALIGNMENTS = ("st_gumbel", "gumbel", "noise", "expected", "cross_attention")


def _dense(features: int, name: str, dtype, use_bias: bool = True) -> nn.Dense:
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, name=name,
                  kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(),
                                                           ("embed", "mlp")),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)))


class GMMLM(nn.Module):
  """Encoder-decoder GMM-LM; see the module docstring. Shapes: ``B`` batch, ``I`` frames,
  ``J`` phonemes, ``D`` latent dim, ``E`` encoder dim, ``d`` decoder dim, ``N`` components."""
  vocab_size: int
  latent_dim: int
  encoder_layers: int = 3
  encoder_dim: int = 512
  encoder_ffn_dim: int = 1024
  encoder_heads: int = 8
  decoder_layers: int = 6
  decoder_dim: int = 512
  decoder_ffn_dim: int = 2048
  decoder_heads: int = 8
  kernel_size: int = 31
  position: str = "rotary"
  num_components: int = 6
  covariance: str = "diagonal"
  min_scale: float = 1e-3
  alignment: str = "st_gumbel"
  energy_dim: int = 256
  energy_bias_init: float = 2.0
  noise_std: float = 1.0
  hold_last_phoneme: bool = True
  straight_through: str = "sequence"
  dropout: float = 0.1
  frame_noise_std: float = 0.0
  remat: bool = False
  decode: bool = False
  dtype: Any = jnp.float32

  def setup(self):
    if self.alignment not in ALIGNMENTS:
      raise ValueError(f"model.alignment: {self.alignment!r} is not one of {ALIGNMENTS}")
    if self.straight_through not in ("step", "sequence"):
      raise ValueError(f"config.alignment.straight_through: {self.straight_through!r} is not "
                       f"'step' or 'sequence'")
    self.phoneme_embedding = nn.Embed(
        self.vocab_size, self.encoder_dim, name="phoneme_embedding",
        embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                    ("vocab", "embed")))
    self.encoder = ConformerStack(
        self.encoder_layers, self.encoder_dim, self.encoder_ffn_dim, self.encoder_heads,
        self.kernel_size, causal=False, dropout=self.dropout, remat=self.remat,
        dtype=self.dtype, position=self.position)
    self.energy = monotonic.MonotonicEnergy(self.energy_dim, self.energy_bias_init,
                                            dtype=self.dtype)
    self.phoneme_projection = (_dense(self.decoder_dim, "phoneme_projection", self.dtype)
                               if self.encoder_dim != self.decoder_dim else None)
    self.frame_projection = _dense(self.decoder_dim, "frame_projection", self.dtype)
    self.decoder = ConformerStack(
        self.decoder_layers, self.decoder_dim, self.decoder_ffn_dim, self.decoder_heads,
        self.kernel_size, causal=True, dropout=self.dropout, decode=self.decode,
        remat=self.remat and not self.decode, dtype=self.dtype, position=self.position)
    # The mixture head and its NLL stay float32 under bf16 compute: the means and scales are
    # fine-grained (the codec's latents deviate ~0.08 from their means) and bf16 keeps 8 bits.
    self.head = MixtureHead(self.num_components, self.latent_dim, self.covariance,
                            self.min_scale, dtype=jnp.float32)
    self.stop = _dense(1, "stop", self.dtype)

  # ------------------------------------------------------------------ pieces
  def encode(self, phonemes: jax.Array, phoneme_mask: jax.Array,
             deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
    """``phonemes [B, J]`` -> (``Y [B, J, E]``, decoder-side ``W_y Y [B, J, d]``)."""
    y = self.phoneme_embedding(phonemes) * phoneme_mask[..., None]
    y = self.encoder(y.astype(self.dtype), phoneme_mask, deterministic)
    y_dec = self.phoneme_projection(y) if self.phoneme_projection is not None else y
    return y, y_dec

  def energies(self, frames_in: jax.Array, y: jax.Array) -> jax.Array:
    """``x [B, I, D], Y [B, J, E] -> e [B, I, J]`` (float32 logits of staying)."""
    return self.energy(frames_in, y)

  def outputs(self, frames_in: jax.Array, alpha: jax.Array, y_dec: jax.Array,
              frame_mask: Optional[jax.Array], deterministic: bool = True
              ) -> tuple[MixtureParams, jax.Array]:
    """Step 8-10: context -> decoder -> (mixture for the next frame, stop logits [B, I])."""
    context = monotonic.alignment_context(alpha.astype(y_dec.dtype), y_dec)
    c = context + self.frame_projection(frames_in.astype(self.dtype))
    hidden = self.decoder(c, frame_mask, deterministic)
    return self.head(hidden), self.stop(hidden)[..., 0].astype(jnp.float32)

  def _stay(self, e: jax.Array, temperature: Any, mode: str) -> jax.Array:
    key = (self.make_rng("alignment")
           if mode in ("st_gumbel", "gumbel", "noise") else None)
    return monotonic.sample_stay(key, e, temperature, mode, self.noise_std)

  # ------------------------------------------------------------------ training
  def __call__(self, latents: jax.Array, latent_mask: jax.Array, phonemes: jax.Array,
               phoneme_mask: jax.Array, temperature: Any = 1.0, deterministic: bool = True,
               alignment: Optional[str] = None, reference_alpha: Optional[jax.Array] = None,
               use_reference: Any = False) -> dict[str, Any]:
    """Teacher-forced pass.

    Args:
      latents: ``[B, I, D]`` codec latents (the targets ``h_0..h_{I-1}``).
      latent_mask: ``[B, I]`` bool, real frames (prefix).
      phonemes: ``[B, J]`` int32 ids; ``phoneme_mask`` ``[B, J]`` bool (prefix).
      temperature: Gumbel-softmax temperature ``s`` of eq. 11 (scalar, may be traced).
      deterministic: disables dropout and the input-frame noise (``frame_noise_std``).
      alignment: overrides ``self.alignment`` (e.g. ``"expected"`` for a noiseless eval).
      reference_alpha: optional ``[B, I, J]`` alignment (one-hot rows) that replaces the
        sampled one where ``use_reference`` (a traced bool scalar) is true: the task's
        alignment warm start (``alignment.reference_warmup_steps``). The energies are still
        computed (and returned) from the frames.

    Returns:
      dict with ``mixture`` (MixtureParams over ``[B, I]``), ``stop_logits`` [B, I],
      ``alpha`` [B, I, J] (the one the decoder saw), ``sampled_alpha`` (the model's own, the
      same unless ``reference_alpha`` replaced it), ``energies`` [B, I, J]. Needs the ``'alignment'`` rng for the
      stochastic modes and ``'dropout'`` when not deterministic.
    """
    mode = alignment or self.alignment
    frames_in = jnp.concatenate([jnp.zeros_like(latents[:, :1]), latents[:, :-1]], axis=1)
    if self.frame_noise_std > 0 and not deterministic:
      # Exposure-bias remedy (cf. Tacotron 2's always-on pre-net dropout): the energies and the
      # decoder learn from corrupted previous frames, as they will meet sampled ones.
      noise = jax.random.normal(self.make_rng("dropout"), frames_in.shape, frames_in.dtype)
      frames_in = frames_in + self.frame_noise_std * noise.at[:, 0].set(0.0)
    y, y_dec = self.encode(phonemes, phoneme_mask, deterministic)
    e = self.energies(frames_in, y)
    if mode == "cross_attention":
      alpha = monotonic.cross_attention_weights(e, phoneme_mask)
    elif mode == "st_gumbel" and self.straight_through == "sequence":
      key = self.make_rng("alignment")
      u_hard = monotonic.sample_stay(key, e, temperature, "st_gumbel").at[:, 0].set(1.0)
      u_soft = monotonic.sample_stay(key, e, temperature, "gumbel").at[:, 0].set(1.0)
      alpha = monotonic.straight_through_alignment(u_hard, u_soft, phoneme_mask,
                                                   hold_last=self.hold_last_phoneme)
    else:
      u = self._stay(e, temperature, mode).at[:, 0].set(1.0)
      alpha = monotonic.monotonic_alignment(u, phoneme_mask,
                                            hold_last=self.hold_last_phoneme)
    sampled = alpha
    if reference_alpha is not None:
      alpha = jnp.where(use_reference, jnp.asarray(reference_alpha, alpha.dtype), alpha)
    mixture, stop_logits = self.outputs(frames_in, alpha, y_dec, latent_mask, deterministic)
    return {"mixture": mixture, "stop_logits": stop_logits, "alpha": alpha, "energies": e,
            "sampled_alpha": sampled}

  # ------------------------------------------------------------------ inference (decode=True)
  def prefill(self, prompt_latents: jax.Array, prompt_len: jax.Array, phonemes: jax.Array,
              phoneme_mask: jax.Array, stay_mode: str = "st_gumbel",
              prompt_phoneme_len: Optional[jax.Array] = None) -> dict[str, Any]:
    """Teacher-forces ``[BOS, prompt]`` into the KV cache and the alignment state.

    Args:
      prompt_latents: ``[B, P, D]``; ``prompt_len`` ``[B]`` int32 real frames per row (>= 0).
      phonemes, phoneme_mask: prompt-text + target-text phonemes ``[B, J]``.
      stay_mode: ``"st_gumbel"`` (sample, as in training) or ``"threshold"`` (greedy).
      prompt_phoneme_len: ``[B]`` phonemes of the prompt's transcript (the first ones of
        ``phonemes``). Given, the prompt frames align within those phonemes only and the last
        prompt frame sits on the last of them (the prompt has said its whole transcript), so
        a prompt never consumes target text; the first new frame's alignment then follows
        Algorithm 1 step 7 from there (stay on it or advance into the target text), as every
        later step does. None: the alignment runs freely over all phonemes (the
        teacher-forced pass's behaviour).

    Returns:
      ``alpha`` [B, J] (the first new frame's alignment, the one its ``mixture`` was computed
      with: `step` advances from it), ``prompt_alpha`` [B, P+1, J] (the alignment the decoder
      saw at steps ``0..prompt_len``), ``mixture``/``stop_logits`` for the first new frame
      (``[B, 1]`` leading dims), ``y`` [B, J, E] and ``y_dec`` [B, J, d] for `step`.
    """
    b, p, _ = prompt_latents.shape
    frames_in = jnp.concatenate([jnp.zeros_like(prompt_latents[:, :1]), prompt_latents], 1)
    mask = jnp.arange(p + 1)[None, :] <= prompt_len[:, None]             # [B, P+1]
    y, y_dec = self.encode(phonemes, phoneme_mask)
    e = self.energies(frames_in, y)
    u = self._stay(e, 1.0, stay_mode).at[:, 0].set(1.0)
    if prompt_phoneme_len is None:
      alpha_all = monotonic.monotonic_alignment(u, phoneme_mask,
                                                hold_last=self.hold_last_phoneme)
    else:
      alpha_all = self._prompt_alignment(u, phoneme_mask, prompt_len, prompt_phoneme_len)
    mixture, stop_logits = self.outputs(frames_in, alpha_all, y_dec, mask)
    last = prompt_len[:, None]
    take = lambda a: jnp.take_along_axis(
        a, last.reshape((b, 1) + (1,) * (a.ndim - 2)), axis=1)
    return {"alpha": take(alpha_all)[:, 0], "prompt_alpha": alpha_all,
            "mixture": jax.tree.map(take, mixture), "stop_logits": take(stop_logits),
            "y": y, "y_dec": y_dec}

  def _prompt_alignment(self, u: jax.Array, phoneme_mask: jax.Array, prompt_len: jax.Array,
                        prompt_phoneme_len: jax.Array) -> jax.Array:
    """``alpha [B, P+1, J]`` of `prefill` with the prompt's transcript: steps before
    ``prompt_len - 1`` align within the transcript's phonemes (parking on its last), step
    ``prompt_len - 1`` (the last prompt frame) sits on its last phoneme, and step
    ``prompt_len`` (the first new frame) is Algorithm 1 step 7 from there over all phonemes
    with ``u [B, P+1, J]``. Without prompt frames step 0 is phoneme 0."""
    num_ph = phoneme_mask.shape[1]
    steps = jnp.arange(u.shape[1])[None, :]                                # [1, P+1]
    within = phoneme_mask & (jnp.arange(num_ph)[None, :]
                             < jnp.maximum(prompt_phoneme_len, 1)[:, None])
    alpha = monotonic.monotonic_alignment(u, within, hold_last=True)
    end = jax.nn.one_hot(prompt_phoneme_len - 1, num_ph, dtype=alpha.dtype)
    said = (steps == prompt_len[:, None] - 1) & (prompt_phoneme_len > 0)[:, None]
    alpha = jnp.where(said[..., None], end[:, None], alpha)
    row = lambda a, i: jnp.take_along_axis(a, i[:, None, None], axis=1)[:, 0]
    prev = row(alpha, jnp.maximum(prompt_len - 1, 0))
    first = monotonic.alignment_step(prev, row(u, prompt_len), phoneme_mask,
                                     self.hold_last_phoneme)
    first = jnp.where((prompt_len > 0)[:, None], first, alpha[:, 0])
    return jnp.where((steps == prompt_len[:, None])[..., None], first[:, None], alpha)

  def step(self, frame: jax.Array, alpha_prev: jax.Array, y: jax.Array, y_dec: jax.Array,
           phoneme_mask: jax.Array, active: jax.Array, stay_mode: str = "st_gumbel"
           ) -> dict[str, Any]:
    """One autoregressive step on the newest frame ``[B, 1, D]``.

    Advances the alignment with the hard rule (``alignment_step``), runs the cached decoder on
    ``c = Y^T alpha + W_x x`` for rows with ``active`` [B] bool, and reports ``passed_end``
    [B]: the row sat on its last real phoneme and its stay decision said "advance" (the
    alignment has passed the text; the stop rule of the decoding loop).
    """
    e = self.energies(frame, y)                                            # [B, 1, J]
    u = self._stay(e, 1.0, stay_mode)[:, 0]                                # [B, J]
    last = monotonic.last_phoneme_mask(phoneme_mask)                      # [B, J]
    at_last = jnp.sum(alpha_prev * last, axis=-1) > 0.5
    passed_end = at_last & (jnp.sum(u * last, axis=-1) < 0.5)
    alpha = monotonic.alignment_step(alpha_prev, u, phoneme_mask, self.hold_last_phoneme)
    mixture, stop_logits = self.outputs(frame, alpha[:, None], y_dec, active[:, None])
    return {"alpha": alpha, "mixture": mixture, "stop_logits": stop_logits,
            "passed_end": passed_end}


def energy_bias_init(cfg: Any) -> float:
  """``alignment.energy_bias_init``, or when None the bias that starts phonemes at
  ``alignment.phoneme_seconds`` at this config's decoder step rate (``data.sample_rate /
  (model.latent_hop * model.frames_per_step)``; `monotonic.energy_bias_for_duration`)."""
  a = cfg.alignment
  if a.get("energy_bias_init") is not None:
    return float(a.energy_bias_init)
  return monotonic.energy_bias_for_duration(
      a.get("phoneme_seconds", 0.1), cfg.data.sample_rate,
      int(cfg.model.latent_hop) * stacking.frames_per_step(cfg))


def from_config(cfg: Any, **overrides) -> GMMLM:
  """The model of a ``gmm_lm`` config (``configs/gmm_lm.py``: ``model.*``, ``alignment.*``,
  ``train.compute_dtype``); used by the task and the generator alike. Keys absent from older
  workdirs' configs take the values those runs trained with. The network's frames are
  ``model.frames_per_step`` codec frames each (`jaxtts.gmm_lm.stacking`): its
  ``latent_dim`` is ``frames_per_step * model.latent_dim``."""
  m, a = cfg.model, cfg.alignment
  kwargs = dict(
      vocab_size=m.vocab_size, latent_dim=m.latent_dim * stacking.frames_per_step(cfg),
      encoder_layers=m.encoder_layers,
      encoder_dim=m.encoder_dim, encoder_ffn_dim=m.encoder_ffn_dim,
      encoder_heads=m.encoder_heads, decoder_layers=m.decoder_layers,
      decoder_dim=m.decoder_dim, decoder_ffn_dim=m.decoder_ffn_dim,
      decoder_heads=m.decoder_heads, kernel_size=m.kernel_size, position=m.position,
      num_components=m.num_components, covariance=m.covariance, min_scale=m.min_scale,
      alignment=a.mode, energy_dim=a.energy_dim, energy_bias_init=energy_bias_init(cfg),
      noise_std=a.noise_std, hold_last_phoneme=a.get("hold_last_phoneme", True),
      straight_through=a.get("straight_through", "step"),  # older workdirs trained "step"
      dropout=m.dropout, frame_noise_std=m.get("frame_noise_std", 0.0), remat=m.remat,
      dtype=dtype_of(cfg.train.compute_dtype))
  kwargs.update(overrides)
  return GMMLM(**kwargs)
