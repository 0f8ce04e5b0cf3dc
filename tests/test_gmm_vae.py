"""GMM-VAE (paper §3.1 eq. 4, A.5): shapes, GMM prior density and gradients, parameter count."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from configs.base import DEFAULT_RULES
from jaxtts.codec import gmm_vae
from jaxtts.codec.gmm_vae import GMMPrior, GMMVAE, gmm_log_prob, gmm_prior_nll

TINY = dict(encoder_dim=4, encoder_strides=(2, 3), decoder_dim=16, latent_dim=8)


@pytest.fixture(scope="module")
def tiny():
  model = GMMVAE(**TINY)
  wav = jnp.zeros((2, 600), jnp.float32)
  # An RBG key only because XLA:CPU compiles ~60 threefry initialisers slowly (~10 s).
  variables = jax.jit(model.init)(jax.random.key(0, impl="unsafe_rbg"), wav)
  return model, nn.unbox(variables), jax.jit(model.apply, static_argnames="method")


def _wav(batch, length, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(-0.5, 0.5, (batch, length)),
                     jnp.float32)


def test_encoder_hop_and_decoder_length(tiny):
  model, variables, apply = tiny
  assert model.hop_length == 6
  for length in (600, 605):  # a multiple of the hop, and not (right-padded like DAC)
    out = apply(variables, _wav(2, length))
    frames = -(-length // 6)
    assert out["latents"].shape == (2, frames, 8) and out["latents"].dtype == jnp.float32
    assert out["reconstruction"].shape == (2, length)
    assert float(jnp.abs(out["reconstruction"]).max()) < 1.0  # tanh output
    assert out["prior_nll"].shape == () and np.isfinite(float(out["prior_nll"]))
  x = _wav(2, 600, seed=1)
  h1 = apply(variables, x, method=GMMVAE.encode)
  assert h1.shape == (2, 600 // 6, 8)
  y = apply(variables, h1[:, :7], method=GMMVAE.decode)
  assert y.shape == (2, 7 * 6)
  # Frames are local: changing the last hop of samples leaves the first frame untouched.
  h2 = apply(variables, x.at[:, -6:].set(0.0), method=GMMVAE.encode)
  np.testing.assert_array_equal(h1[:, 0], h2[:, 0])
  assert not np.allclose(h1[:, -1], h2[:, -1])


def test_remat_bf16_and_logical_constraints(tiny):
  _, variables, apply = tiny
  x = _wav(2, 600, seed=2)
  ref = apply(variables, x)
  mesh = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
    # Same parameter tree with remat; the logical constraints resolve under the rules.
    remat_model = GMMVAE(**TINY, remat=True)

    def loss(p):
      y = remat_model.apply(p, x)["reconstruction"]
      return jnp.sum(y ** 2), y

    (_, rec), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables)
    rec16 = jax.jit(GMMVAE(**TINY, dtype=jnp.bfloat16).apply)(variables, x)["reconstruction"]
  np.testing.assert_allclose(rec, ref["reconstruction"], atol=1e-6)
  assert all(g.dtype == jnp.float32 and np.all(np.isfinite(g))
             for g in jax.tree_util.tree_leaves(grads))
  assert float(jnp.abs(grads["params"]["encoder"]["conv_in"]["v"]).sum()) > 0
  # bf16 compute, float32 parameters and outputs.
  assert rec16.dtype == jnp.float32
  np.testing.assert_allclose(rec16, ref["reconstruction"], atol=0.1)


def test_parameter_logical_names():
  shapes = jax.eval_shape(GMMVAE(**TINY).init, jax.random.key(0), jnp.zeros((1, 60)))
  params = shapes["params"]
  assert params["prior"]["means"].names == ("mixture", "latent")
  conv = params["encoder"]["block_0"]["res"]["unit_1"]["conv_0"]
  assert conv["v"].names == ("conv_kernel", "conv_in", "conv_out")
  assert params["decoder"]["block_0"]["up"]["g"].names == ("conv_in",)
  assert params["decoder"]["snake_out"]["alpha"].names == ("channels",)
  leaves = jax.tree_util.tree_leaves(shapes, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert all(isinstance(leaf, nn.Partitioned) for leaf in leaves)


def _scipy_gmm_logpdf(h, means, weights, scales):
  comps = [np.log(w) + stats.multivariate_normal(mean=mu, cov=np.diag(s ** 2)).logpdf(h)
           for w, mu, s in zip(weights, means, scales)]
  return special.logsumexp(np.stack(comps, axis=-1), axis=-1)


def test_gmm_log_prob_matches_scipy():
  rng = np.random.default_rng(0)
  num_mixtures, dim = 3, 5
  h = rng.standard_normal((4, 6, dim)) * 2
  means = rng.standard_normal((num_mixtures, dim))
  # Equal weights, identity covariances (the paper's prior).
  want = _scipy_gmm_logpdf(h, means, np.full(3, 1 / 3), np.ones((3, dim)))
  got = gmm_log_prob(h, means)
  assert got.shape == (4, 6)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  # Unequal weights (as unnormalised logits) and per-dimension scales.
  logits = rng.standard_normal(num_mixtures)
  log_scales = rng.standard_normal((num_mixtures, dim)) * 0.5
  weights = special.softmax(logits)
  want = _scipy_gmm_logpdf(h, means, weights, np.exp(log_scales))
  np.testing.assert_allclose(gmm_log_prob(h, means, logits, log_scales), want, rtol=1e-5,
                             atol=1e-4)
  np.testing.assert_allclose(gmm_log_prob(h, means, np.log(weights), log_scales), want,
                             rtol=1e-5, atol=1e-4)
  # Stable far from every mean (a naive sum of densities underflows to log 0 = -inf).
  far = gmm_log_prob(np.full((dim,), 100.0), means)
  assert np.isfinite(float(far))
  np.testing.assert_allclose(far, _scipy_gmm_logpdf(np.full((dim,), 100.0), means,
                                                    np.full(3, 1 / 3), np.ones((3, dim))),
                             rtol=1e-5)


def test_gmm_prior_nll_normalisation_and_mask():
  rng = np.random.default_rng(1)
  h = rng.standard_normal((2, 5, 4)).astype(np.float32)
  means = rng.standard_normal((3, 4)).astype(np.float32)
  logp = np.asarray(gmm_log_prob(h, means))
  np.testing.assert_allclose(gmm_prior_nll(h, means=means, per_dim=False), -logp.mean(),
                             rtol=1e-6)
  np.testing.assert_allclose(gmm_prior_nll(h, means=means), -logp.mean() / 4, rtol=1e-6)
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
  h_padded = h.copy()
  h_padded[0, 3:] = 1e3  # padded frames must not count
  np.testing.assert_allclose(gmm_prior_nll(h_padded, mask, means=means),
                             -(logp * mask).sum() / mask.sum() / 4, rtol=1e-6)
  lengths = np.array([17, 30])
  np.testing.assert_array_equal(gmm_vae.frame_mask_from_lengths(lengths, 5, 6), mask)


def test_prior_gradient_pulls_means_toward_data():
  rng = np.random.default_rng(2)
  dim = 8
  centres = rng.standard_normal((3, dim)) * 4
  h = (centres[rng.integers(0, 3, (4, 50))] + 0.3 * rng.standard_normal((4, 50, dim)))
  h = jnp.asarray(h, jnp.float32)
  prior = GMMPrior(num_mixtures=3, latent_dim=dim)
  params = nn.unbox(prior.init(jax.random.key(0), h))["params"]
  assert set(params) == {"means"} and params["means"].shape == (3, dim)
  loss = jax.jit(lambda p: prior.apply({"params": p}, h))
  nll0, grads = jax.jit(jax.value_and_grad(loss))(params)
  assert np.all(np.isfinite(grads["means"])) and float(jnp.abs(grads["means"]).sum()) > 0
  new = jax.tree_util.tree_map(lambda p, g: p - 1.0 * g, params, grads)
  assert float(loss(new)) < float(nll0)
  # The gradient w.r.t. the latents points each latent toward the means (h <- h - lr * grad).
  grad_h = jax.jit(jax.grad(lambda x: prior.apply({"params": params}, x)))(h)
  assert np.all(np.isfinite(grad_h))
  assert float(prior.apply({"params": params}, h - 1.0 * grad_h)) < float(nll0)


def test_prior_optional_weights_and_scales():
  prior = GMMPrior(num_mixtures=2, latent_dim=3, learn_weights=True, learn_scales=True)
  h = jnp.ones((1, 2, 3))
  variables = prior.init(jax.random.key(0), h)
  assert variables["params"]["logits"].names == ("mixture",)
  assert variables["params"]["log_scales"].names == ("mixture", "latent")
  params = nn.unbox(variables)["params"]
  params = dict(params, logits=jnp.array([0.3, -0.2]), log_scales=jnp.full((2, 3), 0.4))
  got = prior.apply({"params": params}, h, method=GMMPrior.log_prob)
  want = _scipy_gmm_logpdf(np.ones((1, 2, 3)), np.asarray(params["means"]),
                           special.softmax([0.3, -0.2]), np.full((2, 3), math.exp(0.4)))
  np.testing.assert_allclose(got, np.reshape(want, (1, 2)), rtol=1e-5)


def _conv(cin, cout, k):
  return k * cin * cout + 2 * cout  # v, g (per Cout), b


def _conv_t(cin, cout, k):
  return k * cin * cout + cin + cout  # v, g (per Cin, torch weight_norm dim=0), b


def _stack(c):
  return 3 * (_conv(c, c, 7) + _conv(c, c, 1) + 2 * c)


def _analytic_counts(encoder_dim, strides, decoder_dim, latent_dim, mixtures):
  enc, c = _conv(1, encoder_dim, 7), encoder_dim
  for s in strides:
    enc += _stack(c) + c + _conv(c, 2 * c, 2 * s)
    c *= 2
  enc += c + _conv(c, latent_dim, 3)
  dec, c = _conv(latent_dim, decoder_dim, 7), decoder_dim
  for s in reversed(strides):
    dec += c + _conv_t(c, c // 2, 2 * s) + _stack(c // 2)
    c //= 2
  dec += c + _conv(c, 1, 7)
  return enc, dec, mixtures * latent_dim


def test_paper_parameter_count():
  """A.5: 76.5M = 22.4M encoder + 54.1M decoder (DAC without quantizer, latent 1024)."""
  model = GMMVAE()  # paper defaults: 64, (2, 4, 8, 8), 1536, latent 64 * 2**4 = 1024
  assert model.resolved_latent_dim == 1024 and model.resolved_decoder_strides == (8, 8, 4, 2)
  shapes = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1024))))
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))
  enc, dec, prior = (count(shapes["params"][k]) for k in ("encoder", "decoder", "prior"))
  assert (enc, dec, prior) == _analytic_counts(64, (2, 4, 8, 8), 1536, 1024, 3)
  assert (enc, dec, prior) == (22_307_968, 54_104_162, 3_072)
  # Decoder: 54.10M vs 54.1M. Encoder: 22.31M vs 22.4M (-0.4 %; DAC's nine 1024->8 quantizer
  # input projections, 73,872 parameters, would make it 22.38M). Total within 0.2 %.
  assert abs(dec - 54.1e6) <= 0.05e6
  assert abs(enc - 22.4e6) / 22.4e6 < 0.005
  assert abs(enc + dec + prior - 76.5e6) / 76.5e6 < 0.002
