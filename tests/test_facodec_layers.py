"""FACodec's shared layers against NumPy: factorized VQ and its residual stack
(`jaxtts.nn.quantize`), gradient reversal (`jaxtts.nn.grl`), conditional LayerNorm
(`jaxtts.nn.norm`)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtts.nn.grl import gradient_reversal, reversed_features
from jaxtts.nn.norm import ConditionalLayerNorm
from jaxtts.nn.quantize import (FactorizedVQ, ResidualFVQ, code_usage, cosine_nearest,
                                reset_dead_codes)


def _init(module, *args):
  return nn.meta.unbox(module.init(jax.random.key(0), *args))


def test_cosine_nearest_ignores_norms_and_returns_the_raw_row():
  """The choice is by angle: for a vector at 5 degrees, a code at 40 degrees of the same
  length loses to a short one at 10 degrees, though it is nearer in Euclidean distance."""
  codebook = np.array([[3 * np.cos(np.radians(40)), 3 * np.sin(np.radians(40))],
                       [0.1 * np.cos(np.radians(10)), 0.1 * np.sin(np.radians(10))]], np.float32)
  z = np.array([[[3 * np.cos(np.radians(5)), 3 * np.sin(np.radians(5))]]], np.float32)
  assert np.linalg.norm(z[0, 0] - codebook[0]) < np.linalg.norm(z[0, 0] - codebook[1])
  assert int(cosine_nearest(jnp.asarray(z), jnp.asarray(codebook))[0, 0]) == 1
  rng = np.random.default_rng(0)
  z, c = rng.standard_normal((3, 5, 4)), rng.standard_normal((7, 4))
  want = np.argmax((z / np.linalg.norm(z, axis=-1, keepdims=True))
                   @ (c / np.linalg.norm(c, axis=-1, keepdims=True)).T, axis=-1)
  np.testing.assert_array_equal(np.asarray(cosine_nearest(jnp.asarray(z), jnp.asarray(c))), want)


def test_fvq_forward_losses_and_straight_through_gradient_match_numpy():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 5, 6)).astype(np.float32)
  mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], np.float32)
  vq = FactorizedVQ(dim=6, codebook_size=9, code_dim=3)
  params = _init(vq, jnp.asarray(x))["params"]
  out = vq.apply({"params": params}, jnp.asarray(x), jnp.asarray(mask))
  w_in, b_in = np.asarray(params["in_proj"]["kernel"]), np.asarray(params["in_proj"]["bias"])
  w_out, b_out = np.asarray(params["out_proj"]["kernel"]), np.asarray(params["out_proj"]["bias"])
  c = np.asarray(params["codebook"])
  z_e = x @ w_in + b_in
  k = np.argmax((z_e / np.linalg.norm(z_e, axis=-1, keepdims=True))
                @ (c / np.linalg.norm(c, axis=-1, keepdims=True)).T, axis=-1)
  np.testing.assert_array_equal(np.asarray(out["codes"]), k)
  np.testing.assert_allclose(np.asarray(out["quantized"]), c[k] @ w_out + b_out, rtol=1e-5,
                             atol=1e-5)
  sq = ((z_e - c[k]) ** 2 * mask[..., None]).sum() / (mask.sum() * 3)
  np.testing.assert_allclose(float(out["commitment_loss"]), sq, rtol=1e-5)
  np.testing.assert_allclose(float(out["codebook_loss"]), sq, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(vq.apply({"params": params}, out["codes"],
                                                 method=FactorizedVQ.decode_codes)),
                             np.asarray(out["quantized"]), rtol=1e-5, atol=1e-6)

  # Straight through: d sum(g * quantized) / dx = g W_out^T W_in^T (the lookup is skipped).
  g = rng.standard_normal(x.shape).astype(np.float32)
  dx = jax.grad(lambda v: jnp.sum(g * vq.apply({"params": params}, v)["quantized"]))(
      jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(dx), g @ w_out.T @ w_in.T, rtol=1e-4, atol=1e-5)
  # Commitment moves only the encoder side, the codebook loss only the chosen codebook rows.
  grads = jax.grad(lambda p: vq.apply({"params": p}, jnp.asarray(x))["commitment_loss"])(params)
  assert float(jnp.abs(grads["codebook"]).sum()) == 0 and float(
      jnp.abs(grads["in_proj"]["kernel"]).sum()) > 0
  grads = jax.grad(lambda p: vq.apply({"params": p}, jnp.asarray(x))["codebook_loss"])(params)
  assert float(jnp.abs(grads["in_proj"]["kernel"]).sum()) == 0
  touched = np.flatnonzero(np.abs(np.asarray(grads["codebook"])).sum(-1))
  np.testing.assert_array_equal(touched, np.unique(k))


def test_normalized_fvq_quantizes_on_the_unit_sphere():
  """``normalize``: the same cosine choice; the unit codebook row is returned and both losses
  compare unit vectors (so they lie in [0, 4] whatever the input's scale)."""
  rng = np.random.default_rng(2)
  x = rng.standard_normal((2, 5, 6)).astype(np.float32)
  vq = FactorizedVQ(dim=6, codebook_size=9, code_dim=3, normalize=True)
  params = _init(vq, jnp.asarray(x))["params"]
  w_in, b_in = np.asarray(params["in_proj"]["kernel"]), np.asarray(params["in_proj"]["bias"])
  w_out, b_out = np.asarray(params["out_proj"]["kernel"]), np.asarray(params["out_proj"]["bias"])
  unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
  c = unit(np.asarray(params["codebook"]))
  for scale in (1.0, 100.0):
    out = vq.apply({"params": params}, jnp.asarray(scale * x))
    z_e = unit(scale * x @ w_in + b_in)
    k = np.argmax(z_e @ c.T, axis=-1)
    np.testing.assert_array_equal(np.asarray(out["codes"]), k)
    np.testing.assert_allclose(np.asarray(out["quantized"]), c[k] @ w_out + b_out, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(float(out["commitment_loss"]), ((z_e - c[k]) ** 2).mean(),
                               rtol=1e-5)
    assert 0.0 <= float(out["codebook_loss"]) <= 4.0 / 3
  np.testing.assert_allclose(np.asarray(vq.apply({"params": params}, out["codes"],
                                                 method=FactorizedVQ.decode_codes)),
                             np.asarray(out["quantized"]), rtol=1e-5, atol=1e-6)


def test_fvq_without_bottleneck_codes_the_input_itself():
  x = np.random.default_rng(2).standard_normal((1, 4, 5)).astype(np.float32)
  vq = FactorizedVQ(dim=5, codebook_size=6, bottleneck=False)
  params = _init(vq, jnp.asarray(x))["params"]
  assert set(params) == {"codebook"} and params["codebook"].shape == (6, 5)
  out = vq.apply({"params": params}, jnp.asarray(x))
  c = np.asarray(params["codebook"])
  np.testing.assert_allclose(np.asarray(out["quantized"]), c[np.asarray(out["codes"])],
                             rtol=1e-6)


def test_residual_fvq_codes_successive_residuals():
  rng = np.random.default_rng(3)
  x = rng.standard_normal((2, 3, 6)).astype(np.float32)
  rvq = ResidualFVQ(dim=6, num_quantizers=3, codebook_size=5, code_dim=2)
  params = _init(rvq, jnp.asarray(x))["params"]
  out = rvq.apply({"params": params}, jnp.asarray(x))
  assert out["codes"].shape == (2, 3, 3) and out["codes"].dtype == jnp.int32
  residual, total, commit = x.copy(), 0.0, 0.0
  for i in range(3):
    vq = FactorizedVQ(dim=6, codebook_size=5, code_dim=2)
    o = vq.apply({"params": params[f"vq_{i}"]}, jnp.asarray(residual))
    np.testing.assert_array_equal(np.asarray(o["codes"]), np.asarray(out["codes"][..., i]))
    residual = residual - np.asarray(o["quantized"])
    total = total + np.asarray(o["quantized"])
    commit += float(o["commitment_loss"])
  np.testing.assert_allclose(np.asarray(out["quantized"]), total, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(out["commitment_loss"]), commit, rtol=1e-5)
  back = rvq.apply({"params": params}, out["codes"], method=ResidualFVQ.decode_codes)
  np.testing.assert_allclose(np.asarray(back), total, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="2 codebooks, expected 3"):
    rvq.apply({"params": params}, out["codes"][..., :2], method=ResidualFVQ.decode_codes)


def test_code_usage_perplexity_and_dead_codes():
  codes = np.array([[0, 0, 1, 3], [3, 3, 2, 2]])
  mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.float32)  # counts: 0:2, 1:1, 3:3
  got = code_usage(jnp.asarray(codes), 8, jnp.asarray(mask))
  p = np.array([2, 1, 3]) / 6
  np.testing.assert_allclose(float(got["perplexity"]), np.exp(-(p * np.log(p)).sum()), rtol=1e-6)
  assert float(got["used"]) == 3 and float(got["dead_fraction"]) == pytest.approx(5 / 8)


def test_dead_code_reset_restarts_only_codes_away_from_the_valid_encodings():
  """Codes whose largest cosine to the valid encodings is below the threshold (NumPy) become
  valid encodings; the others keep their rows; padded encodings neither keep a code alive nor
  are drawn; the count is the number replaced."""
  rng = np.random.default_rng(4)
  enc = rng.standard_normal((12, 3)).astype(np.float32)
  mask = np.ones(12, bool)
  mask[9:] = False
  book = rng.standard_normal((10, 3)).astype(np.float32)
  book[0] = 2.0 * enc[1]                # cosine 1 to a valid encoding: alive
  book[1] = -enc[10]                    # near only a padded one (cosine 1): dead unless valid
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
  best = (unit(book) @ unit(enc[mask]).T).max(axis=1)
  dead = best < 0.8
  assert dead.any() and not dead.all() and not dead[0]
  new, count = reset_dead_codes(jnp.asarray(book), jnp.asarray(enc), jnp.asarray(mask),
                                jax.random.key(0), 0.8)
  new = np.asarray(new)
  assert int(count) == int(dead.sum())
  np.testing.assert_array_equal(new[~dead], book[~dead])
  for row in new[dead]:
    matches = np.flatnonzero((np.abs(enc - row) < 1e-7).all(axis=1))
    assert matches.size and mask[matches].all()
  # No valid encoding: nothing changes.
  same, none = reset_dead_codes(jnp.asarray(book), jnp.asarray(enc), jnp.zeros(12, bool),
                                jax.random.key(0), 0.8)
  np.testing.assert_array_equal(np.asarray(same), book)
  assert int(none) == 0


def test_residual_fvq_returns_each_quantizer_lookup_input():
  """``encodings[..., i, :]`` is quantizer i's ``z_e``: its cosine-nearest code is code i."""
  x = jnp.asarray(np.random.default_rng(5).standard_normal((2, 4, 6)), jnp.float32)
  rvq = ResidualFVQ(dim=6, num_quantizers=2, codebook_size=7, code_dim=3)
  params = _init(rvq, x)
  out = rvq.apply(params, x)
  assert out["encodings"].shape == (2, 4, 2, 3)
  for i in range(2):
    book = params["params"][f"vq_{i}"]["codebook"]
    np.testing.assert_array_equal(np.asarray(cosine_nearest(out["encodings"][:, :, i], book)),
                                  np.asarray(out["codes"][..., i]))


def test_gradient_reversal_negates_and_scales_the_incoming_gradient():
  x = jnp.asarray(np.random.default_rng(4).standard_normal((3, 4)), jnp.float32)
  g = jnp.asarray(np.random.default_rng(5).standard_normal((3, 4)), jnp.float32)
  np.testing.assert_array_equal(np.asarray(gradient_reversal(x, 0.5)), np.asarray(x))
  dx = jax.grad(lambda v: jnp.sum(g * gradient_reversal(v, 0.5)))(x)
  np.testing.assert_allclose(np.asarray(dx), -0.5 * np.asarray(g), rtol=1e-7)
  dx = jax.jit(jax.grad(lambda v: jnp.sum(g * jnp.sin(gradient_reversal(v, 1.0)))))(x)
  np.testing.assert_allclose(np.asarray(dx), -np.asarray(g) * np.cos(np.asarray(x)), rtol=1e-6)
  off = jax.grad(lambda v: jnp.sum(g * reversed_features(v, enabled=False)))(x)
  assert float(jnp.abs(off).sum()) == 0


def test_conditional_layer_norm_matches_numpy_and_starts_as_plain_layer_norm():
  rng = np.random.default_rng(6)
  x = rng.standard_normal((2, 5, 4)).astype(np.float32)
  cond = rng.standard_normal((2, 3)).astype(np.float32)
  layer = ConditionalLayerNorm()
  params = _init(layer, jnp.asarray(x), jnp.asarray(cond))["params"]
  normed = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(np.asarray(layer.apply({"params": params}, x, cond)), normed,
                             rtol=1e-5, atol=1e-5)
  w = rng.standard_normal((3, 8)).astype(np.float32)
  b = rng.standard_normal(8).astype(np.float32)
  got = layer.apply({"params": {"scale_shift": {"kernel": w, "bias": b}}}, x, cond)
  ss = cond @ w + b
  want = ss[:, None, :4] * normed + ss[:, None, 4:]
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
  per_frame = rng.standard_normal((2, 5, 3)).astype(np.float32)
  got = layer.apply({"params": {"scale_shift": {"kernel": w, "bias": b}}}, x, per_frame)
  ss = per_frame @ w + b
  np.testing.assert_allclose(np.asarray(got), ss[..., :4] * normed + ss[..., 4:], rtol=1e-5,
                             atol=1e-5)
