"""Gaussian-mixture head and densities (GMM-LM, paper eqs. 6-7, Table 5)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jaxtts.codec.gmm_vae import gmm_log_prob
from jaxtts.nn import mixture
from jaxtts.nn.mixture import (MixtureHead, MixtureParams, diagonal_gmm_log_prob,
                               mixture_log_prob, mixture_mean, mixture_mode_component,
                               mixture_nll, responsibilities, sample_mixture)


def _random_params(rng, shape, n, d, covariance, scale=1.0):
  """float32 MixtureParams with leading ``shape`` and well-conditioned ``L``."""
  logits = rng.standard_normal(shape + (n,))
  means = rng.standard_normal(shape + (n, d)) * 2.0
  scales = rng.uniform(0.5, 1.5, shape + (n, d)) * scale
  tril = None
  if covariance == "full":
    tril = np.tril(rng.standard_normal(shape + (n, d, d)) * 0.5 * scale, -1)
    tril = tril + scales[..., :, None] * np.eye(d)
  as32 = lambda a: None if a is None else jnp.asarray(a, jnp.float32)
  return MixtureParams(as32(logits), as32(means), as32(scales), as32(tril))


def _covs(params):
  """float64 component covariances [.., N, D, D]."""
  if params.scale_tril is None:
    s = np.asarray(params.scales, np.float64)
    return s[..., :, None] ** 2 * np.eye(s.shape[-1])
  tril = np.asarray(params.scale_tril, np.float64)
  return tril @ np.swapaxes(tril, -1, -2)


def _scipy_component_log_probs(params, x):
  """log w_n + log N(x; mu_n, Sigma_n) with scipy, float64: x [B, T, D] -> [B, T, N]."""
  log_w = special.log_softmax(np.asarray(params.logits, np.float64), axis=-1)
  means = np.asarray(params.means, np.float64)
  covs = _covs(params)
  out = np.empty(log_w.shape)
  for idx in np.ndindex(*log_w.shape):
    mvn = stats.multivariate_normal(mean=means[idx], cov=covs[idx])
    out[idx] = log_w[idx] + mvn.logpdf(np.asarray(x, np.float64)[idx[:-1]])
  return out


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
@pytest.mark.parametrize("n,d", [(1, 1), (1, 4), (3, 2), (6, 5)])
def test_log_prob_matches_scipy(covariance, n, d):
  rng = np.random.default_rng(n * 10 + d)
  params = _random_params(rng, (2, 3), n, d, covariance)
  x = jnp.asarray(rng.standard_normal((2, 3, d)) * 2.0, jnp.float32)
  comp = _scipy_component_log_probs(params, x)
  got = mixture_log_prob(params, x)
  assert got.shape == (2, 3) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, special.logsumexp(comp, axis=-1), rtol=1e-5, atol=1e-5)
  resp = responsibilities(params, x)
  np.testing.assert_allclose(resp, special.softmax(comp, axis=-1), atol=1e-5)
  np.testing.assert_allclose(np.sum(resp, -1), 1.0, rtol=1e-6)


def _scipy_shared_gmm(x, means, logits=None, log_scales=None):
  """log sum_l softmax(logits)_l N(x; mu_l, diag exp(2 log_scales_l)), scipy float64, for
  mixture parameters shared by every point: x [..., D], means [L, D] -> [...]."""
  num, dim = means.shape
  log_w = (np.full(num, -np.log(num)) if logits is None
           else special.log_softmax(np.asarray(logits, np.float64)))
  var = (np.ones((num, dim)) if log_scales is None
         else np.exp(2.0 * np.asarray(log_scales, np.float64)))
  flat = np.asarray(x, np.float64).reshape(-1, dim)
  comp = np.stack([log_w[l] + stats.multivariate_normal(means[l], np.diag(var[l])).logpdf(flat)
                   for l in range(num)], axis=-1).reshape(x.shape[:-1] + (num,))
  return special.logsumexp(comp, axis=-1)


def test_diagonal_gmm_log_prob_broadcasts():
  """Shared mixture parameters broadcast over points; the codec's prior density
  (`gmm_log_prob`, eq. 4) with and without weights and scales: all against scipy."""
  rng = np.random.default_rng(0)
  x = (rng.standard_normal((4, 5, 3)) * 2.0).astype(np.float32)
  means = rng.standard_normal((2, 3)).astype(np.float32)
  log_scales = (rng.standard_normal((2, 3)) * 0.3).astype(np.float32)
  logits = rng.standard_normal(2).astype(np.float32)
  want = _scipy_shared_gmm(x, means, logits, log_scales)
  shared = diagonal_gmm_log_prob(x, logits, means, log_scales)
  assert shared.shape == (4, 5)
  np.testing.assert_allclose(shared, want, rtol=1e-5, atol=1e-5)
  per_frame = diagonal_gmm_log_prob(x, np.broadcast_to(logits, (4, 5, 2)),
                                    np.broadcast_to(means, (4, 5, 2, 3)),
                                    np.broadcast_to(log_scales, (4, 5, 2, 3)))
  np.testing.assert_allclose(per_frame, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(gmm_log_prob(x, means, logits, log_scales), want, rtol=1e-5,
                             atol=1e-5)
  # Normalised log-weights pass unchanged; None means equal weights / unit variances.
  np.testing.assert_allclose(gmm_log_prob(x, means, special.log_softmax(logits), log_scales),
                             want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(gmm_log_prob(x, means), _scipy_shared_gmm(x, means), rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(gmm_log_prob(x, means, None, log_scales),
                             _scipy_shared_gmm(x, means, None, log_scales), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match=r"means must be \[L, D\]"):
    gmm_log_prob(x, means[None])


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_log_prob_stable_for_small_scales(covariance):
  rng = np.random.default_rng(1)
  n, d = 3, 4
  params = _random_params(rng, (1, 2), n, d, covariance, scale=1e-3)
  params = params.replace(scales=jnp.full_like(params.scales, 1e-3))
  if covariance == "full":
    params = params.replace(scale_tril=params.scale_tril.at[..., jnp.arange(d),
                                                            jnp.arange(d)].set(1e-3))
  x = np.asarray(params.means[:, :, 0]) + 5.0  # thousands of scales from every mean
  got = mixture_log_prob(params, jnp.asarray(x, jnp.float32))
  # Analytic float64: z = L^-1 (x - mu), log N = -|z|^2/2 - log det L - D/2 log 2 pi.
  means = np.asarray(params.means, np.float64)
  covs = _covs(params)
  diff = x[..., None, :].astype(np.float64) - means
  tril = np.linalg.cholesky(covs)
  z = np.linalg.solve(tril, diff[..., None])[..., 0]
  log_det = np.sum(np.log(np.diagonal(tril, axis1=-2, axis2=-1)), -1)
  comp = (special.log_softmax(np.asarray(params.logits, np.float64), -1)
          - 0.5 * np.sum(z ** 2, -1) - log_det - 0.5 * d * np.log(2 * np.pi))
  want = special.logsumexp(comp, -1)
  assert np.all(want < -1e6)
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_nll_mask_ignores_padding(covariance):
  rng = np.random.default_rng(2)
  params = _random_params(rng, (2, 5), 3, 4, covariance)
  x = rng.standard_normal((2, 5, 4)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
  logp = np.asarray(mixture_log_prob(params, x))
  want = -(logp * mask).sum() / mask.sum()
  np.testing.assert_allclose(mixture_nll(params, x, mask), want, rtol=1e-6)
  x_padded = x.copy()
  x_padded[0, 3:] = 1e30  # would be -inf log-density; must not leak into the loss
  np.testing.assert_allclose(mixture_nll(params, x_padded, mask), want, rtol=1e-6)
  np.testing.assert_allclose(mixture_nll(params, x_padded, mask, per_dim=True), want / 4,
                             rtol=1e-6)
  np.testing.assert_allclose(mixture_nll(params, x), -logp.mean(), rtol=1e-6)
  assert float(mixture_nll(params, x, np.zeros_like(mask))) == 0.0


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_sampling_moments(covariance):
  rng = np.random.default_rng(3)
  n, d, num = 3, 3, 200_000
  params = _random_params(rng, (1, 1), n, d, covariance)
  batch = jax.tree.map(lambda a: jnp.broadcast_to(a, (num,) + a.shape[1:]), params)
  x, comp = jax.jit(sample_mixture, static_argnames="return_component")(
      jax.random.key(0), batch, return_component=True)
  x, comp = np.asarray(x[:, 0], np.float64), np.asarray(comp[:, 0])
  assert x.shape == (num, d)
  # Component frequencies ~ softmax weights (binomial std <= 0.0012).
  w = special.softmax(np.asarray(params.logits[0, 0], np.float64))
  np.testing.assert_allclose(np.bincount(comp, minlength=n) / num, w, atol=0.006)
  # Mixture moments: E x = sum w mu, Cov x = sum w (Sigma + mu mu^T) - E x E x^T.
  mu, covs = np.asarray(params.means[0, 0], np.float64), _covs(params)[0, 0]
  mean = w @ mu
  cov = np.einsum("n,nij->ij", w, covs + mu[:, :, None] * mu[:, None, :]) - np.outer(mean, mean)
  np.testing.assert_allclose(np.asarray(mixture_mean(params))[0, 0], mean, rtol=1e-5)
  np.testing.assert_allclose(x.mean(0), mean, atol=6 * np.sqrt(np.diag(cov).max() / num))
  np.testing.assert_allclose(np.cov(x, rowvar=False), cov, atol=0.08)
  # Within each component: the component's mean and covariance.
  for k in range(n):
    xk = x[comp == k]
    np.testing.assert_allclose(xk.mean(0), mu[k], atol=6 * np.sqrt(covs[k].max() / len(xk)))
    np.testing.assert_allclose(np.cov(xk, rowvar=False), covs[k], atol=0.1)


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_sampling_temperatures(covariance):
  rng = np.random.default_rng(4)
  params = _random_params(rng, (4, 16), 5, 3, covariance)
  mode = np.asarray(mixture_mode_component(params))
  np.testing.assert_array_equal(mode, np.argmax(np.asarray(params.logits), -1))
  sample = jax.jit(sample_mixture, static_argnames="return_component")
  for seed in range(3):  # explicit temperatures: one compilation
    key = jax.random.key(seed)
    _, comp = sample(key, params, 0.0, 1.0, return_component=True)
    np.testing.assert_array_equal(comp, mode)  # greedy component, no division by zero
    x, comp = sample(key, params, 1.0, 0.0, return_component=True)
    means = np.take_along_axis(np.asarray(params.means), np.asarray(comp)[..., None, None],
                               axis=-2)[..., 0, :]
    np.testing.assert_array_equal(x, means)  # scale temperature 0: the chosen means exactly
  # Sampling at temperature 1 does not always pick the mode.
  _, comp = sample(jax.random.key(0), params, 1.0, 1.0, return_component=True)
  assert np.any(np.asarray(comp) != mode)


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_head_shapes_init_and_gradient(covariance):
  b, t, h, n, d = 2, 7, 16, 4, 5
  head = MixtureHead(num_components=n, latent_dim=d, covariance=covariance)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((b, t, h)), jnp.bfloat16)
  # An RBG key only because XLA:CPU compiles threefry initialisers slowly.
  variables = jax.jit(head.init)(jax.random.key(1, impl="unsafe_rbg"), x)
  boxed = variables["params"]["kernel"]
  assert isinstance(boxed, nn.Partitioned) and boxed.names == ("embed", "mlp")
  s = d if covariance == "diagonal" else d * (d + 1) // 2
  assert boxed.value.shape == (h, n * (1 + d + s))
  variables = nn.unbox(variables)
  apply = jax.jit(head.apply)
  params = apply(variables, x)
  assert params.covariance == covariance
  assert params.logits.shape == (b, t, n) and params.means.shape == (b, t, n, d)
  assert params.scales.shape == (b, t, n, d)
  for leaf in jax.tree.leaves(params):
    assert leaf.dtype == jnp.float32
  assert np.all(np.asarray(params.scales) >= head.min_scale)
  # Near-identity init: scales ~1, means and logits ~0.
  np.testing.assert_allclose(params.scales, 1.0, atol=0.3)
  assert np.abs(np.asarray(params.means)).max() < 0.5
  assert np.abs(np.asarray(params.logits)).max() < 0.5
  zero = apply(variables, jnp.zeros((1, 1, h)))
  np.testing.assert_allclose(zero.scales, 1.0, rtol=1e-6)
  np.testing.assert_allclose(zero.means, 0.0)
  if covariance == "diagonal":
    assert params.scale_tril is None
  else:
    tril = np.asarray(params.scale_tril)
    assert tril.shape == (b, t, n, d, d)
    np.testing.assert_array_equal(np.triu(tril, 1), 0.0)
    np.testing.assert_array_equal(np.diagonal(tril, axis1=-2, axis2=-1), params.scales)
    assert np.any(np.tril(tril, -1) != 0.0)

  target = np.random.default_rng(1).standard_normal((b, t, d)).astype(np.float32)
  mask = np.ones((b, t), np.float32)
  mask[0, 5:] = 0.0
  loss_fn = lambda p: mixture_nll(head.apply(p, x), target, mask)
  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(variables)
  assert np.isfinite(float(loss))
  for g in jax.tree.leaves(grads):
    assert np.all(np.isfinite(np.asarray(g))) and np.any(np.asarray(g) != 0.0)


def test_head_rejects_unknown_covariance():
  with pytest.raises(ValueError, match="covariance"):
    MixtureHead(2, 3, covariance="spherical").init(jax.random.key(0), jnp.zeros((1, 1, 4)))
  assert mixture.COVARIANCES == ("diagonal", "full")
