"""Stochastic hard monotonic alignment (GMM-LM §3.3, eqs. 8-11, appendix Algorithm 1).

Paper: Lin & He, "Continuous Autoregressive Modeling with Stochastic Monotonic Alignment for
Speech Synthesis" (ICLR 2025), ``../shared/papers/002_3b51400f309666e7.txt``.

Decoder steps (acoustic frames) ``i = 0..I-1``, phonemes ``j = 0..J-1``. Given energies
``e [B, I, J]`` (Algorithm 1 step 1) the stay probabilities are ``p = sigmoid(e)`` (eq. 8) and
the alignment follows Algorithm 1 step 7::

    alpha_i = alpha_{i-1} * u_i + shift(alpha_{i-1} * (1 - u_i), 1)

``shift`` moves mass one phoneme to the right (zero-filled on the left), so ``u = 1`` means
STAY on the current phoneme and ``u = 0`` means ADVANCE by one; with a one-hot
``alpha_{-1}`` and binary ``u`` every ``alpha_i`` is one-hot and the path is monotonic with
steps of at most one phoneme (eq. 9 is the expectation of this under ``u ~ Bernoulli(p)``).
``u`` comes from ``sample_stay``: the paper's straight-through Gumbel (eqs. 10-11: binary
Bernoulli forward, Gumbel-sigmoid relaxation backward), plain Gumbel-sigmoid, Raffel et al.'s
pre-sigmoid Gaussian noise, the noiseless expectation, or a greedy threshold (Table 6).

Conventions: here ``alpha_{-1}`` is the one-hot at phoneme 0 and ``alpha_i`` is computed for
every ``i = 0..I-1`` (Algorithm 1 starts at ``alpha_0 = [1, 0, ...]`` and loops from ``i = 1``;
pass ``u[:, 0] = 1`` to pin frame 0 to phoneme 0 as it does). Phoneme masks are prefix masks
(real phonemes first); ``alpha`` is exactly 0 on padded phonemes. Past the end: by default
``u`` is forced to 1 at each row's last real phoneme (the alignment parks there);
``hold_last=False`` lets mass that advances past it fall off, as Algorithm 1's ``shift`` does.
Results are float32 (float64 when given float64 under ``jax_enable_x64``, for
finite-difference checks).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

STAY_MODES = ("st_gumbel", "gumbel", "noise", "expected", "threshold")


def _float(x: Any) -> jax.Array:
  """``x`` as an array of at least float32 precision (float64 stays float64 under x64)."""
  return jnp.asarray(x, jnp.result_type(x, jnp.float32))


# ------------------------------------------------------------------------------ energies ----

def alignment_energies(queries: jax.Array, keys: jax.Array, bias: Any = 0.0) -> jax.Array:
  """Scaled dot-product energies ``e_ij = q_i . k_j / sqrt(A) + bias`` (Algorithm 1 step 1).

  The paper uses the plain dot product ``h_i^T y_j``; the ``1/sqrt(A)`` scaling and the scalar
  ``bias`` (Raffel et al.'s ``r``) are additions that set the initial stay rate.

  Args:
    queries: ``[B, I, A]`` decoder-side (acoustic) projections.
    keys: ``[B, J, A]`` phoneme projections.
    bias: scalar added to every energy.

  Returns:
    ``[B, I, J]`` float32 energies (logits of the stay probability, eq. 8).
  """
  q = jnp.asarray(queries, jnp.float32)
  k = jnp.asarray(keys, jnp.float32)
  e = jnp.einsum("bia,bja->bij", q, k) / math.sqrt(q.shape[-1])
  return e + jnp.asarray(bias, jnp.float32)


def energy_bias_for_duration(phoneme_seconds: float, sample_rate: int, hop: int) -> float:
  """The ``energy_bias`` init that starts a phoneme at ``phoneme_seconds`` on average:
  ``d = phoneme_seconds * sample_rate / hop`` frames, ``log(d - 1)`` (see `MonotonicEnergy`).

  A fixed init means another duration at every frame rate: 2.0 (8.4 frames) is 105 ms at the
  espeak codec's 80 frames/s but 268 ms at Table 7's 31.25 frames/s (``latent_hop=512``).
  ``d`` is floored at 1.05 frames (a stay probability of 5 %), so a frame rate below one
  frame per phoneme still gives a finite bias.
  """
  frames = float(phoneme_seconds) * float(sample_rate) / float(hop)
  return float(np.log(max(frames, 1.05) - 1.0))


class MonotonicEnergy(nn.Module):
  """``[B, I, Dq], [B, J, Dk] -> e [B, I, J]``: bias-free Dense projections to ``attention_dim``
  then ``alignment_energies`` with a learnable scalar ``energy_bias``.

  ``p = sigmoid(e)`` is the probability of STAYING on the current phoneme, so ``bias_init``
  sets the initial duration: with near-zero dot products a phoneme lasts ``1 / (1 - p)``
  frames on average, and ``bias_init = logit(1 - 1/d) = log(d - 1)`` gives a mean stay of
  ``d`` frames per phoneme. Raffel et al.'s negative init (``r = -4``) means "advance almost
  every frame" in this formulation.
  """
  attention_dim: int
  bias_init: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, queries: jax.Array, keys: jax.Array) -> jax.Array:
    kernel = nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp"))
    q = nn.Dense(self.attention_dim, use_bias=False, kernel_init=kernel, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="query")(queries)
    k = nn.Dense(self.attention_dim, use_bias=False, kernel_init=kernel, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="key")(keys)
    bias = self.param("energy_bias", nn.with_logical_partitioning(
        nn.initializers.constant(self.bias_init), ()), (), jnp.float32)
    return alignment_energies(q, k, bias)


# ------------------------------------------------------------------------------ sampling ----

def stay_probabilities(e: jax.Array) -> jax.Array:
  """Eq. 8: ``p_ij = sigmoid(e_ij)``, the probability of staying; ``[B, I, J]`` float32."""
  return jax.nn.sigmoid(_float(e))


def sample_stay(key: Optional[jax.Array], e: jax.Array, temperature: Any = 1.0,
                mode: str = "st_gumbel", noise_std: Any = 1.0) -> jax.Array:
  """Stay decisions ``u [B, I, J]`` (float32) from energies ``e [B, I, J]``.

  Modes (Table 6 ablation):

  * ``"st_gumbel"`` (the paper's): with ``g1, g2 ~ Gumbel(0, 1)`` (one draw shared by both
    passes), ``z = (log p + g1) - (log(1 - p) + g2)`` from logits (``log p = log_sigmoid(e)``,
    ``log(1 - p) = log_sigmoid(-e)``); forward ``u_fwd = 1[z > 0] ~ Bernoulli(p)`` exactly
    (eq. 10), backward ``u_bwd = sigmoid(z / s)`` (eq. 11); returns
    ``u_fwd + (u_bwd - stop_gradient(u_bwd))``, exactly 0/1 forward with eq. 11's gradient.
  * ``"gumbel"``: ``u_bwd`` in both passes (relaxed, no straight-through).
  * ``"noise"``: Raffel et al.: ``sigmoid(e + noise_std * N(0, 1))`` (expected alignment).
  * ``"expected"``: ``sigmoid(e)`` (no noise; ``key`` unused).
  * ``"threshold"``: ``1[e > 0]`` (greedy hard decisions for inference; ``key`` unused).
  """
  e = _float(e)
  if mode in ("st_gumbel", "gumbel"):
    g1, g2 = jax.random.gumbel(key, (2,) + e.shape, e.dtype)
    z = (jax.nn.log_sigmoid(e) + g1) - (jax.nn.log_sigmoid(-e) + g2)
    u_bwd = jax.nn.sigmoid(z / temperature)
    if mode == "gumbel":
      return u_bwd
    u_fwd = (z > 0).astype(e.dtype)
    return u_fwd + (u_bwd - jax.lax.stop_gradient(u_bwd))  # x - x == 0 exactly: u == u_fwd
  if mode == "noise":
    return jax.nn.sigmoid(e + noise_std * jax.random.normal(key, e.shape, e.dtype))
  if mode == "expected":
    return jax.nn.sigmoid(e)
  if mode == "threshold":
    return (e > 0).astype(e.dtype)
  raise ValueError(f"unknown stay sampling mode {mode!r}; expected one of {STAY_MODES}")


# ----------------------------------------------------------------------------- recurrence ----

def last_phoneme_mask(phoneme_mask: jax.Array) -> jax.Array:
  """``[..., J]`` bool, True at the last real phoneme of a prefix mask (``m_j & ~m_{j+1}``)."""
  mask = jnp.asarray(phoneme_mask, bool)
  nxt = jnp.concatenate([mask[..., 1:], jnp.zeros_like(mask[..., :1])], axis=-1)
  return mask & ~nxt


def initial_alignment(phoneme_mask: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
  """``alpha_{-1}``: one-hot at phoneme 0 (zero for rows without phonemes); ``[B, J]``."""
  mask = jnp.asarray(phoneme_mask, bool)
  return jnp.zeros(mask.shape, dtype).at[..., 0].set(1.0) * mask


def alignment_step(alpha_prev: jax.Array, u_i: jax.Array, phoneme_mask: jax.Array,
                   hold_last: bool = True) -> jax.Array:
  """One step of Algorithm 1 step 7 (the scan body and the decoder's inference update).

  ``alpha_i = alpha_{i-1} * u_i + shift(alpha_{i-1} * (1 - u_i), 1)``, ``alpha_i`` zeroed on
  padding. ``hold_last=True`` forces ``u_i = 1`` at the last real phoneme (the alignment parks
  there); ``False`` is Algorithm 1 as written: mass that advances past the last real phoneme
  falls off, ``alpha_i`` becomes all-zero and the context ``Y^T alpha_i`` is zero from then on.

  Args:
    alpha_prev: ``[B, J]`` alignment at step ``i - 1``.
    u_i: ``[B, J]`` stay decisions for step ``i`` (1 = stay, 0 = advance).
    phoneme_mask: ``[B, J]`` bool, True on real phonemes (prefix mask).
    hold_last: see above (static).

  Returns:
    ``[B, J]`` ``alpha_i`` (float32, or the promoted dtype of the inputs).
  """
  mask = jnp.asarray(phoneme_mask, bool)
  u_i = _float(u_i)
  if hold_last:
    u_i = jnp.where(last_phoneme_mask(mask), 1.0, u_i)
  move = alpha_prev * (1.0 - u_i)
  shifted = jnp.concatenate([jnp.zeros_like(move[..., :1]), move[..., :-1]], axis=-1)
  return jnp.where(mask, alpha_prev * u_i + shifted, 0.0)


def monotonic_alignment(u: jax.Array, phoneme_mask: jax.Array,
                        alpha0: Optional[jax.Array] = None, hold_last: bool = True) -> jax.Array:
  """All alignments ``alpha [B, I, J]`` by a ``lax.scan`` of ``alignment_step`` over frames.

  Args:
    u: ``[B, I, J]`` stay decisions (``sample_stay``), computed for all steps beforehand; the
      scan carry is ``alpha [B, J]`` and each step is elementwise. Differentiable in ``u``.
    phoneme_mask: ``[B, J]`` bool, True on real phonemes (prefix mask).
    alpha0: optional ``[B, J]`` ``alpha_{-1}``; default ``initial_alignment(phoneme_mask)``.
    hold_last: park on the last real phoneme (default) or let mass fall off past it
      (`alignment_step`).

  Returns:
    ``[B, I, J]`` float32 (float64 for float64 inputs); one-hot (or all-zero, past the end
    with ``hold_last=False``) rows when ``u`` is binary.
  """
  mask = jnp.asarray(phoneme_mask, bool)
  u = _float(u)
  alpha0 = initial_alignment(mask, u.dtype) if alpha0 is None else alpha0
  dtype = jnp.result_type(u, alpha0)
  xs = einops.rearrange(u.astype(dtype), "b i j -> i b j")

  def body(alpha, u_i):
    alpha = alignment_step(alpha, u_i, mask, hold_last)
    return alpha, alpha

  _, alphas = jax.lax.scan(body, jnp.asarray(alpha0, dtype), xs)
  return einops.rearrange(alphas, "i b j -> b i j")


def straight_through_alignment(u_hard: jax.Array, u_soft: jax.Array, phoneme_mask: jax.Array,
                               hold_last: bool = True) -> jax.Array:
  """Sequence-level straight-through: the hard alignment forward, the gradient of the relaxed
  one backward: ``alpha_hard + alpha_soft - stop_gradient(alpha_soft)``.

  ``u_hard`` / ``u_soft`` ``[B, I, J]`` are eq. 10's Bernoulli and eq. 11's relaxed decisions
  from one Gumbel draw (``sample_stay`` modes ``st_gumbel`` and ``gumbel`` with one key).
  Per-step straight-through (``monotonic_alignment`` of ``st_gumbel``'s ``u``) backpropagates
  through the hard ``alpha_{i-1}``, so only the current phoneme's ``u`` gets a gradient; here
  the recursion's Jacobian is the relaxed one's (the Gumbel-softmax model's).
  """
  alpha_hard = monotonic_alignment(jax.lax.stop_gradient(u_hard), phoneme_mask,
                                   hold_last=hold_last)
  alpha_soft = monotonic_alignment(u_soft, phoneme_mask, hold_last=hold_last)
  return alpha_hard + (alpha_soft - jax.lax.stop_gradient(alpha_soft))


def monotonic_alignment_reference(u: Any, phoneme_mask: Any, alpha0: Optional[Any] = None,
                                  hold_last: bool = True) -> np.ndarray:
  """Plain NumPy float32 loop over frames and batch rows (test oracle, benchmark baseline)."""
  u = np.asarray(u, np.float32)
  mask = np.asarray(phoneme_mask, bool)
  batch, frames, num_ph = u.shape
  out = np.zeros((batch, frames, num_ph), np.float32)
  for b in range(batch):
    n = int(mask[b].sum())
    if alpha0 is None:
      alpha = np.zeros(num_ph, np.float32)
      alpha[0] = 1.0 if n > 0 else 0.0
    else:
      alpha = np.asarray(alpha0[b], np.float32).copy()
    for i in range(frames):
      u_i = u[b, i].copy()
      if n > 0 and hold_last:
        u_i[n - 1] = 1.0
      move = alpha * (np.float32(1.0) - u_i)
      alpha = alpha * u_i + np.concatenate([np.zeros(1, np.float32), move[:-1]])
      alpha[n:] = 0.0
      out[b, i] = alpha
  return out


# ---------------------------------------------------------------- context / baseline / stats ----

def alignment_context(alpha: jax.Array, phoneme_features: jax.Array,
                      precision: Any = jax.lax.Precision.HIGHEST) -> jax.Array:
  """Algorithm 1 step 8 without ``+ h_i``: ``c_i = Y^T alpha_i``; ``[B, I, J] x [B, J, D] ->
  [B, I, D]`` (full precision by default so one-hot ``alpha`` selects features exactly)."""
  return jnp.einsum("bij,bjd->bid", alpha, phoneme_features, precision=precision)


def cross_attention_weights(e: jax.Array, phoneme_mask: jax.Array) -> jax.Array:
  """Table 6's cross-attention baseline: masked ``softmax_j(e_ij)``; ``[B, I, J]`` float32
  (0 on padding; all-zero rows when a row has no phonemes)."""
  mask = jnp.asarray(phoneme_mask, bool)[:, None, :]
  e = jnp.where(mask, jnp.asarray(e, jnp.float32), -1e30)
  return jax.nn.softmax(e, axis=-1) * mask


def frame_phonemes(alpha: jax.Array, phoneme_mask: jax.Array) -> jax.Array:
  """Each frame's phoneme ``[B, I]`` int32: the argmax of ``alpha [B, I, J]`` over real
  phonemes, or ``n_ph`` (the row's real phoneme count: "past the end") when more mass fell
  off past the last phoneme (``hold_last=False``: ``1 - sum_j alpha_ij``) than any phoneme
  holds; an all-zero hard row is past the end, not phoneme 0. Ties go to the phoneme."""
  pmask = jnp.asarray(phoneme_mask, bool)[:, None, :]
  a = jnp.where(pmask, jnp.asarray(alpha, jnp.float32), 0.0)
  fell = 1.0 - jnp.sum(a, axis=-1)                                       # [B, I]
  n_ph = jnp.sum(pmask, axis=-1, dtype=jnp.int32)                        # [B, 1]
  return jnp.where(fell > jnp.max(a, axis=-1), n_ph, jnp.argmax(a, axis=-1)).astype(jnp.int32)


def durations_from_alignment(alpha: jax.Array, frame_mask: jax.Array,
                             phoneme_mask: Optional[jax.Array] = None) -> jax.Array:
  """Frames per phoneme, ``[B, J]`` int32: each real frame's phoneme (`frame_phonemes`),
  counted; frames past the end count nowhere. ``phoneme_mask`` defaults to all phonemes."""
  if phoneme_mask is None:
    phoneme_mask = jnp.ones(alpha.shape[::2], bool)
  pos = frame_phonemes(alpha, phoneme_mask)
  onehot = jax.nn.one_hot(pos, alpha.shape[-1], dtype=jnp.int32)
  counted = jnp.asarray(frame_mask, jnp.int32)[..., None] * jnp.asarray(
      phoneme_mask, jnp.int32)[:, None, :]                           # past the end: nowhere
  return jnp.sum(onehot * counted, axis=1)


def reference_phonemes(durations: jax.Array, phoneme_mask: jax.Array, num_frames: int
                       ) -> jax.Array:
  """Each frame's phoneme ``[B, I]`` int32 under a reference alignment: frame ``i`` lies in
  phoneme ``j`` when ``sum(d[:j]) <= i < sum(d[:j+1])`` for ``durations [B, J]`` (float
  frames per phoneme, e.g. the corpus' espeak durations at the alignment's step rate); frames
  past the last real phoneme stay on it."""
  pmask = jnp.asarray(phoneme_mask, bool)
  bounds = jnp.cumsum(jnp.asarray(durations, jnp.float32) * pmask, axis=-1)
  frames = jnp.arange(num_frames, dtype=jnp.float32)[None, :, None]
  ref = jnp.sum(frames >= bounds[:, None, :], axis=-1)
  n_ph = jnp.sum(pmask, axis=-1)
  return jnp.minimum(ref, jnp.maximum(n_ph - 1, 0)[:, None]).astype(jnp.int32)


def reference_stay_loss(e: jax.Array, reference: jax.Array, frame_mask: jax.Array,
                        phoneme_mask: jax.Array) -> jax.Array:
  """Binary cross-entropy of eq. 8's stay probabilities against a reference alignment's
  decisions: at step ``i >= 1`` on the reference's previous phoneme ``j = ref[i-1]``, the
  target is ``u_ij = [ref[i] == ref[i-1]]`` (stay) and the logit is ``e [B, I, J]`` at
  ``(i, j)``. Steps from the last real phoneme (held there) and padded steps are not counted.
  Mean over the counted steps (scalar float32)."""
  ref = jnp.asarray(reference, jnp.int32)
  prev = jnp.concatenate([jnp.zeros_like(ref[:, :1]), ref[:, :-1]], axis=1)
  logit = jnp.take_along_axis(_float(e), prev[..., None], axis=-1)[..., 0]     # [B, I]
  target = (ref == prev).astype(jnp.float32)
  n_ph = jnp.sum(jnp.asarray(phoneme_mask, bool), axis=-1)
  counted = (jnp.asarray(frame_mask, bool) & (jnp.arange(ref.shape[1])[None, :] >= 1)
             & (prev < (n_ph - 1)[:, None])).astype(jnp.float32)
  bce = -(target * jax.nn.log_sigmoid(logit) + (1.0 - target) * jax.nn.log_sigmoid(-logit))
  return jnp.sum(bce * counted) / jnp.maximum(jnp.sum(counted), 1.0)


def alignment_stats(alpha: jax.Array, frame_mask: jax.Array, phoneme_mask: jax.Array,
                    reference_durations: Optional[jax.Array] = None) -> Dict[str, jax.Array]:
  """Scalar float32 diagnostics of ``alpha [B, I, J]`` (``frame_mask [B, I]``,
  ``phoneme_mask [B, J]``, both prefix masks). A frame's phoneme is `frame_phonemes`: with
  ``hold_last=False`` a frame whose mass fell off the end is "past the end" (index ``n_ph``),
  never phoneme 0.

  * ``visited_fraction``: per row, the fraction of real phonemes with ``alpha > 0.5`` at some
    real frame; averaged over rows.
  * ``mean_duration``: per row, real frames on a phoneme (not past the end) / visited
    phonemes; averaged over rows.
  * ``reached_end``: fraction of rows whose last real frame is on the last real phoneme or
    past it.
  * ``past_end_fraction``: per row, the fraction of real frames past the end; averaged.
  * ``last_phoneme_onset``: per row, the first real frame on the last real phoneme (or past
    it) over the real frames (1 when never reached); averaged over rows. An alignment that
    rushes to the end and parks there scores visited 1, reached_end 1 and a plausible
    mean_duration, but a small onset (recordings: the last phoneme's share of the frames,
    ~0.9 on the corpus).
  * with ``reference_durations [B, J]`` (frames per phoneme of a reference alignment, e.g.
    the corpus' espeak durations at the alignment's frame rate): ``reference_within_1``, the
    fraction of real frames aligned within one phoneme of the reference, and
    ``reference_phoneme_error``, the mean absolute phoneme-index difference (a frame past
    the end is one phoneme beyond the last).
  """
  fmask = jnp.asarray(frame_mask, bool)
  pmask = jnp.asarray(phoneme_mask, bool)
  real = fmask[:, :, None] & pmask[:, None, :]
  visited = jnp.any((alpha > 0.5) & real, axis=1)  # [B, J]
  n_visited = jnp.sum(visited, axis=-1).astype(jnp.float32)
  n_ph = jnp.sum(pmask, axis=-1)
  n_fr = jnp.sum(fmask, axis=-1)
  pos = frame_phonemes(alpha, pmask)                                     # [B, I]
  past = (pos >= n_ph[:, None]) & fmask
  last_frame = jnp.maximum(n_fr - 1, 0)
  pos_last = jnp.take_along_axis(pos, last_frame[:, None], axis=1)[:, 0]
  end = (pos_last >= n_ph - 1) & (n_fr > 0) & (n_ph > 0)
  on_last = (pos >= (n_ph - 1)[:, None]) & fmask
  onset = jnp.where(jnp.any(on_last, axis=1), jnp.argmax(on_last, axis=1), n_fr)
  on_phoneme = jnp.sum(fmask & ~past, axis=-1).astype(jnp.float32)
  stats = {
      "last_phoneme_onset": jnp.mean(onset / jnp.maximum(n_fr, 1)),
      "visited_fraction": jnp.mean(n_visited / jnp.maximum(n_ph, 1)),
      "mean_duration": jnp.mean(on_phoneme / jnp.maximum(n_visited, 1.0)),
      "reached_end": jnp.mean(end.astype(jnp.float32)),
      "past_end_fraction": jnp.mean(jnp.sum(past, axis=-1) / jnp.maximum(n_fr, 1)),
  }
  if reference_durations is not None:
    ref = reference_phonemes(reference_durations, pmask, alpha.shape[1])   # [B, I]
    diff = jnp.abs(pos - ref).astype(jnp.float32)
    w = fmask.astype(jnp.float32)
    total = jnp.maximum(jnp.sum(w), 1.0)
    stats["reference_within_1"] = jnp.sum((diff <= 1) * w) / total
    stats["reference_phoneme_error"] = jnp.sum(diff * w) / total
  return stats
