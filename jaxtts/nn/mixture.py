"""Gaussian-mixture output head and densities (GMM-LM, paper ``002_3b51400f309666e7``).

Eq. 6: ``p(h_t | h_<t, Y) = sum_n omega_n^t N(h_t; nu_n^t, Sigma_n^t)`` over ``N`` components of
a ``D``-dim latent; eq. 7: a network emits ``[omega, nu, tau]`` per frame, with softmax on the
weights and softplus on the scales (§3.2 text, Algorithm 1). Table 5 compares diagonal and full
covariances (diagonal with N = 6 is the paper's choice). Here:

* ``"diagonal"``: ``Sigma_n = diag(tau_n^2)``, ``tau = softplus(raw) + min_scale`` [.., N, D].
* ``"full"``: ``Sigma_n = L_n L_n^T`` with ``L_n`` [.., N, D, D] lower triangular, diagonal
  ``softplus(raw) + min_scale`` and free strictly-lower entries (Cholesky parameterisation).

Densities carry the full normalising constants and are evaluated in float32 through
standardised residuals ``z = (x - nu) / tau`` (or ``z = L^-1 (x - nu)``) and a logsumexp over
components, so they stay finite for tiny scales and far-away points.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

_LOG_2PI = math.log(2.0 * math.pi)
COVARIANCES = ("diagonal", "full")


@struct.dataclass
class MixtureParams:
  """Per-frame mixture parameters (float32).

  ``logits`` [.., N] (``omega = softmax(logits)``), ``means`` [.., N, D] (``nu``), ``scales``
  [.., N, D] (``tau`` for diagonal; the positive diagonal of ``L`` for full) and
  ``scale_tril`` [.., N, D, D] (``L``; ``None`` for diagonal covariances).
  """
  logits: jax.Array
  means: jax.Array
  scales: jax.Array
  scale_tril: Optional[jax.Array] = None

  @property
  def covariance(self) -> str:
    return "diagonal" if self.scale_tril is None else "full"


def _inv_softplus(y: float) -> float:
  """``softplus^-1(y) = log(expm1(y))`` for ``y > 0``."""
  return y + math.log(-math.expm1(-y))


class MixtureHead(nn.Module):
  """Linear ``[B, T, H] -> MixtureParams`` projection of eq. 7.

  One Dense ``H -> N (1 + D + S)`` with ``S = D`` (diagonal) or ``D (D + 1) / 2`` (full: ``D``
  raw diagonal entries then ``D (D - 1) / 2`` strictly-lower entries in ``tril_indices(D, -1)``
  order). Kernel ``[H, F]`` with logical axes ``('embed', 'mlp')``, bias ``('mlp',)``.

  Fields:
    num_components: ``N``.
    latent_dim: ``D``.
    covariance: ``"diagonal"`` or ``"full"`` (Table 5).
    min_scale: floor added after the softplus, ``tau >= min_scale``: bounds the density
      (``-log p`` >= ``D log min_scale + D/2 log 2 pi`` per component) and keeps ``1 / tau``
      finite in float32, so one collapsing component cannot drive the NLL to ``-inf``.
    init_scale: kernel init std relative to lecun-normal, so at init ``means`` and ``logits``
      are ``~init_scale`` for unit-scale inputs (near 0, near-uniform weights).
    dtype: operand dtype of the matmul; accumulation, bias, softplus and all outputs are
      float32 regardless (keep float32 if mean precision matters under small scales).
    param_dtype: parameter dtype.

  Init: biases put ``means = 0``, ``logits = 0``, ``tau = 1`` (raw diagonal bias
  ``softplus^-1(1 - min_scale)``) and zero off-diagonal ``L`` entries.
  """
  num_components: int
  latent_dim: int
  covariance: str = "diagonal"
  min_scale: float = 1e-3
  init_scale: float = 0.1
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> MixtureParams:
    if self.covariance not in COVARIANCES:
      raise ValueError(f"covariance={self.covariance!r} not in {COVARIANCES}")
    n, d = self.num_components, self.latent_dim
    n_off = d * (d - 1) // 2 if self.covariance == "full" else 0
    sizes = (n, n * d, n * d, n * n_off)  # logits, means, raw diag, strictly lower
    raw_one = _inv_softplus(max(1.0 - self.min_scale, 1e-4))  # softplus(raw) + min_scale = 1

    def bias_init(key, shape, dtype):
      del key, shape
      return jnp.concatenate([jnp.zeros((n + n * d,), dtype), jnp.full((n * d,), raw_one, dtype),
                              jnp.zeros((n * n_off,), dtype)])

    kernel = self.param("kernel", nn.with_logical_partitioning(
        nn.initializers.variance_scaling(self.init_scale ** 2, "fan_in", "truncated_normal"),
        ("embed", "mlp")), (x.shape[-1], sum(sizes)), self.param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(bias_init, ("mlp",)), (sum(sizes),),
                      self.param_dtype)
    y = jnp.einsum("...h,hf->...f", x.astype(self.dtype), kernel.astype(self.dtype),
                   preferred_element_type=jnp.float32) + bias.astype(jnp.float32)

    lead = y.shape[:-1]
    cuts = [sum(sizes[:i]) for i in range(1, len(sizes))]
    logits, means, raw, off = jnp.split(y, cuts, axis=-1)
    means = means.reshape(*lead, n, d)
    scales = jax.nn.softplus(raw.reshape(*lead, n, d)) + self.min_scale
    if self.covariance == "diagonal":
      return MixtureParams(logits, means, scales)
    rows, cols = jnp.tril_indices(d, -1)
    tril = scales[..., :, None] * jnp.eye(d, dtype=jnp.float32)
    tril = tril.at[..., rows, cols].set(off.reshape(*lead, n, n_off))
    return MixtureParams(logits, means, scales, tril)


# ------------------------------------------------------------------------------ densities ----

def _diag_component_log_prob(x: jax.Array, means: jax.Array,
                             log_scales: Optional[jax.Array]) -> jax.Array:
  """``log N(x; nu_n, diag tau_n^2)``: x [..., D], means/log_scales [..., N, D] -> [..., N]."""
  x = jnp.asarray(x, jnp.float32)[..., None, :]
  means = jnp.asarray(means, jnp.float32)
  dim = means.shape[-1]
  if x.shape[-1] != dim:
    raise ValueError(f"latent dim {x.shape[-1]} != means dim {dim}")
  z = x - means
  log_det = 0.0
  if log_scales is not None:
    log_scales = jnp.asarray(log_scales, jnp.float32)
    z = z * jnp.exp(-log_scales)
    log_det = jnp.sum(log_scales, axis=-1)
  return -0.5 * jnp.sum(jnp.square(z), axis=-1) - log_det - 0.5 * dim * _LOG_2PI


def _log_weights(log_weights: Optional[jax.Array], num: int) -> jax.Array:
  if log_weights is None:
    return jnp.full((num,), -math.log(num), jnp.float32)
  return jax.nn.log_softmax(jnp.asarray(log_weights, jnp.float32), axis=-1)


def diagonal_gmm_log_prob(x: jax.Array, log_weights: Optional[jax.Array], means: jax.Array,
                          log_scales: Optional[jax.Array] = None) -> jax.Array:
  """Eq. 6 with diagonal covariances: ``log sum_n omega_n N(x; nu_n, diag tau_n^2)``.

  Args:
    x: ``[..., D]`` points.
    log_weights: ``[..., N]`` weight logits, normalised here with ``log_softmax`` (normalised
      log-weights pass unchanged); ``None`` = equal weights ``1 / N``.
    means: ``[..., N, D]``.
    log_scales: ``[..., N, D]`` ``log tau``; ``None`` = unit variances.
  All leading dims broadcast (e.g. ``x`` [B, T, D] with shared ``means`` [N, D]).

  Returns:
    ``[...]`` float32, including ``-D/2 log 2 pi - sum_d log tau_nd``.
  """
  comp = _diag_component_log_prob(x, means, log_scales)
  return jax.nn.logsumexp(comp + _log_weights(log_weights, comp.shape[-1]), axis=-1)


def component_log_probs(params: MixtureParams, x: jax.Array) -> jax.Array:
  """Joint ``log omega_n + log N(x; nu_n, Sigma_n)``: ``x`` [B, T, D] -> [B, T, N]."""
  log_w = jax.nn.log_softmax(params.logits.astype(jnp.float32), axis=-1)
  if params.scale_tril is None:
    return log_w + _diag_component_log_prob(x, params.means, jnp.log(params.scales))
  tril = params.scale_tril.astype(jnp.float32)
  diff = jnp.asarray(x, jnp.float32)[..., None, :] - params.means.astype(jnp.float32)
  shape = jnp.broadcast_shapes(diff.shape, tril.shape[:-1])
  z = jax.scipy.linalg.solve_triangular(
      jnp.broadcast_to(tril, shape + shape[-1:]), jnp.broadcast_to(diff, shape)[..., None],
      lower=True)[..., 0]  # z = L^-1 (x - nu)
  log_det = jnp.sum(jnp.log(jnp.diagonal(tril, axis1=-2, axis2=-1)), axis=-1)
  dim = diff.shape[-1]
  return log_w - 0.5 * jnp.sum(jnp.square(z), axis=-1) - log_det - 0.5 * dim * _LOG_2PI


def mixture_log_prob(params: MixtureParams, x: jax.Array) -> jax.Array:
  """Eq. 6 ``log p(x)``: ``x`` [B, T, D] -> [B, T] (float32; diagonal or full covariance)."""
  if params.scale_tril is None:
    return diagonal_gmm_log_prob(x, params.logits, params.means, jnp.log(params.scales))
  return jax.nn.logsumexp(component_log_probs(params, x), axis=-1)


def responsibilities(params: MixtureParams, x: jax.Array) -> jax.Array:
  """Posterior ``p(n | x)``: ``x`` [B, T, D] -> [B, T, N] (rows sum to 1)."""
  return jax.nn.softmax(component_log_probs(params, x), axis=-1)


def mixture_nll(params: MixtureParams, x: jax.Array, mask: Optional[jax.Array] = None, *,
                per_dim: bool = False) -> jax.Array:
  """Mean ``-log p(x_t)`` over real frames (the GMM-LM NLL loss of Table 5).

  ``x`` [B, T, D], ``mask`` [B, T] (1 = real; ``None`` = all frames; divided by
  ``max(sum mask, 1)``). ``per_dim=True`` divides by ``D`` (nats per latent dimension).
  Returns a float32 scalar.
  """
  nll = -mixture_log_prob(params, x)
  if mask is None:
    out = jnp.mean(nll)
  else:
    mask = jnp.asarray(mask, jnp.float32)
    out = jnp.sum(jnp.where(mask > 0, nll, 0.0) * mask) / jnp.maximum(jnp.sum(mask), 1.0)
  return out / x.shape[-1] if per_dim else out


# ------------------------------------------------------------------------------- sampling ----

def sample_component(key: jax.Array, logits: jax.Array,
                     temperature: Union[float, jax.Array] = 1.0) -> jax.Array:
  """Draw ``n ~ softmax(logits / temperature)``: [.., N] -> int32 [..].

  Gumbel-max in the form ``argmax(logits + temperature * g)`` (equal to
  ``argmax(logits / temperature + g)`` for ``temperature > 0``), so ``temperature = 0`` is the
  argmax without a division, also under ``jit``.
  """
  g = jax.random.gumbel(key, logits.shape, jnp.float32)
  return jnp.argmax(logits.astype(jnp.float32) + temperature * g, axis=-1).astype(jnp.int32)


def sample_mixture(key: jax.Array, params: MixtureParams,
                   weight_temperature: Union[float, jax.Array] = 1.0,
                   scale_temperature: Union[float, jax.Array] = 1.0, *,
                   return_component: bool = False
                   ) -> Union[jax.Array, Tuple[jax.Array, jax.Array]]:
  """Sample eq. 6: ``n ~ softmax(logits / weight_temperature)``, then
  ``x = nu_n + scale_temperature * tau_n * eps`` (diagonal) or
  ``nu_n + scale_temperature * L_n eps`` (full), ``eps ~ N(0, I)``.

  Returns ``x`` [B, T, D] (float32), and the component [B, T] if ``return_component``.
  ``weight_temperature = 0`` picks the heaviest component; ``scale_temperature = 0`` returns its
  mean exactly.
  """
  k_comp, k_eps = jax.random.split(key)
  comp = sample_component(k_comp, params.logits, weight_temperature)
  batch = comp.ndim
  take = lambda a: jnp.take_along_axis(
      a, comp.reshape(comp.shape + (1,) * (a.ndim - batch)), axis=batch).squeeze(batch)
  mean = take(params.means.astype(jnp.float32))  # [B, T, D]
  eps = jax.random.normal(k_eps, mean.shape, jnp.float32)
  if params.scale_tril is None:
    noise = take(params.scales.astype(jnp.float32)) * eps
  else:
    noise = jnp.einsum("...ij,...j->...i", take(params.scale_tril.astype(jnp.float32)), eps)
  x = mean + scale_temperature * noise
  return (x, comp) if return_component else x


def mixture_mean(params: MixtureParams) -> jax.Array:
  """Expected value ``sum_n omega_n nu_n``: [B, T, D]."""
  w = jax.nn.softmax(params.logits.astype(jnp.float32), axis=-1)
  return jnp.einsum("...n,...nd->...d", w, params.means.astype(jnp.float32))


def mixture_mode_component(params: MixtureParams) -> jax.Array:
  """Index of the heaviest component ``argmax_n omega_n``: int32 [B, T]."""
  return jnp.argmax(params.logits, axis=-1).astype(jnp.int32)
