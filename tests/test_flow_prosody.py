"""CLONE's shared layers and losses: the coupling flow's inverse and log-determinant, the WN
stack's masking, the duration predictor, and eqs. 16-17 against SciPy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from jaxtts.nn.duration import DurationPredictor, duration_loss
from jaxtts.nn.flow import CouplingFlow
from jaxtts.nn.wavenet import WaveNet
from jaxtts.prosody.kl import flow_prior_kl, prosody_predictor_kl


def _randomise_post(params, key):
  """Couplings start as the identity (zero last projection); give them random ones."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  keys = iter(jax.random.split(key, len(flat)))
  def visit(path, leaf):
    names = [getattr(p, "key", "") for p in path]
    key = next(keys)
    return leaf + 0.3 * jax.random.normal(key, leaf.shape) if "post" in names else leaf
  return jax.tree_util.tree_map_with_path(visit, params)


@pytest.mark.parametrize("mean_only", [False, True])
def test_coupling_flow_inverts_and_its_logdet_is_the_jacobians(mean_only):
  b, t, c, cg = 1, 5, 4, 3
  flow = CouplingFlow(num_flows=2, hidden=8, kernel_size=3, num_layers=2, mean_only=mean_only)
  x = jax.random.normal(jax.random.key(0), (b, t, c))
  mask = jnp.array([1, 1, 1, 1, 0], jnp.float32)[None, :, None]
  cond = jax.random.normal(jax.random.key(1), (b, t, cg))
  params = jax.jit(flow.init)(jax.random.key(2), x, mask, cond)
  params = _randomise_post(params, jax.random.key(3))
  apply = jax.jit(flow.apply, static_argnames=("inverse",))
  x = x * mask
  y, logdet = apply(params, x, mask, cond)
  x_back, logdet_back = apply(params, y, mask, cond, inverse=True)
  np.testing.assert_allclose(np.asarray(x_back), np.asarray(x), atol=1e-5)
  np.testing.assert_allclose(np.asarray(logdet_back), -np.asarray(logdet), rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(y - x)).max() > 1e-2        # the flow is not the identity

  valid = 4
  def on_valid(v):
    full = jnp.zeros((b, t, c)).at[0, :valid].set(v.reshape(valid, c))
    return apply(params, full, mask, cond)[0][0, :valid].reshape(-1)
  jac = jax.jit(jax.jacfwd(on_valid))(x[0, :valid].reshape(-1))
  sign, want = jnp.linalg.slogdet(jac)
  assert float(sign) == 1.0
  np.testing.assert_allclose(float(logdet[0]), float(want), rtol=1e-4, atol=1e-5)
  if mean_only:
    assert float(logdet[0]) == 0.0


def test_wavenet_padded_frames_do_not_reach_valid_ones_and_global_cond_broadcasts():
  net = WaveNet(hidden=6, kernel_size=5, num_layers=3, dilation_rate=2)
  x = jax.random.normal(jax.random.key(0), (1, 20, 6))
  g = jax.random.normal(jax.random.key(1), (1, 3))
  full = jnp.ones((1, 20, 1))
  params = jax.jit(net.init)(jax.random.key(2), x, full, g)
  apply = jax.jit(net.apply)
  short = apply(params, x[:, :12], full[:, :12], g)
  padded_x = x.at[:, 12:].set(7.0)                      # garbage past the valid frames
  mask = (jnp.arange(20) < 12).astype(jnp.float32)[None, :, None]
  padded = apply(params, padded_x * mask, mask, g)
  np.testing.assert_allclose(np.asarray(padded[:, :12]), np.asarray(short), atol=1e-5)
  assert np.all(np.asarray(padded[:, 12:]) == 0)
  tiled = apply(params, x, full, jnp.repeat(g[:, None], 20, axis=1))
  np.testing.assert_allclose(np.asarray(tiled), np.asarray(apply(params, x, full, g)),
                             atol=1e-6)


def test_duration_predictor_masks_padding_and_its_loss_is_vits_mse():
  dp = DurationPredictor(filters=8, kernel_size=3, dropout=0.0)
  x = jax.random.normal(jax.random.key(0), (2, 7, 5))
  mask = (jnp.arange(7)[None] < jnp.array([[7], [4]])).astype(jnp.float32)[..., None]
  params = jax.jit(dp.init)(jax.random.key(1), x, mask)
  apply = jax.jit(dp.apply)
  log_w = apply(params, x.at[1, 4:].set(9.0), mask)
  alone = apply(params, x[1:, :4], jnp.ones((1, 4, 1)))
  np.testing.assert_allclose(np.asarray(log_w[1, :4]), np.asarray(alone[0]), atol=1e-5)
  assert np.all(np.asarray(log_w[1, 4:]) == 0)
  durations = jnp.array([[1, 2, 3, 4, 5, 6, 7], [3, 1, 2, 2, 0, 0, 0]])
  m = np.asarray(mask[..., 0])
  want = np.sum((np.asarray(log_w) - np.log(np.asarray(durations) + 1e-6)) ** 2 * m) / m.sum()
  np.testing.assert_allclose(float(duration_loss(log_w, durations, mask[..., 0])), want,
                             rtol=1e-5)


def _kl_quad(mu_p, sd_p, mu_q, sd_q):
  """KL(N(mu_p, sd_p) || N(mu_q, sd_q)) by numerical integration."""
  p, q = stats.norm(mu_p, sd_p), stats.norm(mu_q, sd_q)
  lo, hi = mu_p - 12 * sd_p, mu_p + 12 * sd_p
  return integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), lo, hi)[0]


def test_eq17_prosody_predictor_kl_against_numerical_integration():
  rng = np.random.default_rng(0)
  mu_pp, mu_q = rng.normal(size=(2, 1, 3, 2))
  ls_pp, ls_q = rng.normal(scale=0.5, size=(2, 1, 3, 2))
  mask = np.array([1, 1, 0], np.float32)[None, :, None]
  got = prosody_predictor_kl(*(jnp.asarray(a) for a in (mu_pp, ls_pp, mu_q, ls_q, mask)))
  want = sum(_kl_quad(mu_pp[0, p, d], np.exp(ls_pp[0, p, d]), mu_q[0, p, d], np.exp(ls_q[0, p, d]))
             for p in range(2) for d in range(2)) / 2
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_eq16_flow_prior_kl_is_an_unbiased_sample_of_the_true_kl():
  # An affine flow f(z) = a z + b makes the prior N(-b/a, 1/|a|) and log|det| = log|a|, so the
  # mean of eq. 16 over samples z ~ q must be KL(q || prior), computed here by quadrature.
  mu_q, sd_q, a, b = 0.4, 0.7, 1.8, -0.3
  n = 200_000
  z = mu_q + sd_q * np.random.default_rng(1).standard_normal(n)
  z_p = (a * z + b).reshape(n, 1, 1)
  got = flow_prior_kl(jnp.asarray(z_p), jnp.full((n, 1, 1), np.log(sd_q)),
                      jnp.full((n,), np.log(a)), jnp.ones((n, 1, 1)))
  want = _kl_quad(mu_q, sd_q, -b / a, 1 / a)
  np.testing.assert_allclose(float(got), want, atol=1.5e-2)
  # Masking and normalisation: the per-phoneme mean over valid phonemes only.
  z_p2, ls2 = np.array([[[0.5], [2.0], [9.0]]]), np.array([[[0.1], [-0.2], [5.0]]])
  mask2 = np.array([[[1.0], [1.0], [0.0]]])
  got2 = flow_prior_kl(jnp.asarray(z_p2), jnp.asarray(ls2), jnp.array([0.3]), jnp.asarray(mask2))
  want2 = (np.sum((-ls2 - 0.5 + 0.5 * z_p2 ** 2)[:, :2]) - 0.3) / 2
  np.testing.assert_allclose(float(got2), want2, rtol=1e-6)
