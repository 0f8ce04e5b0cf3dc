"""Weight-normalised convolutions and Snake against NumPy references (torch semantics)."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from scipy import special

from jaxtts.audio import spectral
from jaxtts.nn.conv import Conv1d, ConvTranspose1d, conv_padding
from jaxtts.nn.snake import Snake
from jaxtts.nn.vocos import (ConvNeXtBlock, VocosDecoder, VocosEncoder, same_frames_stft,
                             spectrum_from_head)


def np_conv1d(x, w, b, stride, dilation, pad):
  """out[b, t, o] = sum_{k, i} xpad[b, t * stride + k * dilation, i] w[k, i, o] + b[o]."""
  x = np.pad(x, ((0, 0), pad, (0, 0)))
  k = w.shape[0]
  n = (x.shape[1] - (k - 1) * dilation - 1) // stride + 1
  out = np.zeros((x.shape[0], n, w.shape[2]))
  for t in range(n):
    for j in range(k):
      out[:, t] += x[:, t * stride + j * dilation] @ w[j]
  return out + b


def np_conv_transpose1d(x, w, b, stride, padding, output_padding):
  """torch.nn.ConvTranspose1d: y[t * stride + k - padding] += x[t] @ w[k]."""
  batch, length, _ = x.shape
  k = w.shape[0]
  out_len = (length - 1) * stride - 2 * padding + k + output_padding
  full = np.zeros((batch, (length - 1) * stride + k + output_padding, w.shape[2]))
  for t in range(length):
    for j in range(k):
      full[:, t * stride + j] += x[:, t] @ w[j]
  return full[:, padding:padding + out_len] + b


def wn(v, g, axes):
  norm = np.sqrt(np.sum(v.astype(np.float64) ** 2, axis=axes, keepdims=True))
  shape = [1, 1, 1]
  shape[[a for a in range(3) if a not in axes][0]] = -1
  return v * g.reshape(shape) / norm


def random_params(rng, params):
  """Random values for every leaf of a (shape) tree (g and alpha kept positive)."""
  out = {}
  for name, value in params.items():
    if isinstance(value, dict):
      out[name] = random_params(rng, value)
    else:
      arr = rng.standard_normal(value.shape).astype(np.float32)
      out[name] = np.abs(arr) + 0.5 if name in ("g", "alpha") else arr
  return out


@pytest.mark.parametrize("kernel, stride, dilation, length", [
    (7, 1, 1, 23), (7, 1, 3, 23), (7, 1, 9, 40), (1, 1, 1, 9), (3, 1, 1, 10),
    (4, 2, 1, 21), (16, 8, 1, 70), (10, 5, 1, 37), (6, 3, 1, 30),
])
def test_conv1d_matches_numpy(kernel, stride, dilation, length):
  rng = np.random.default_rng(kernel * 100 + stride * 10 + dilation)
  x = rng.standard_normal((2, length, 3)).astype(np.float32)
  layer = Conv1d(5, kernel, stride=stride, dilation=dilation)
  shapes = nn.unbox(jax.eval_shape(layer.init, jax.random.key(0), x))["params"]
  params = random_params(rng, shapes)
  got = np.asarray(layer.apply({"params": params}, x))
  w = wn(params["v"], params["g"], axes=(0, 1))
  pad = conv_padding(kernel, stride, dilation)
  want = np_conv1d(x, w, params["b"], stride, dilation, pad)
  assert got.shape == (2, length // stride, 5)  # 'same' for stride 1, T // stride otherwise
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel,padding", [(7, (3, 3)), (4, (3, 0)), (31, (15, 15))])
def test_depthwise_conv1d_matches_grouped_convolution(kernel, padding):
  """The shifted-sum depthwise convolution equals lax's grouped convolution, forward and
  kernel gradient (the grouped form's gradient is wrong when its batch is sharded)."""
  from jax import lax
  from jaxtts.nn.conv import depthwise_conv1d
  rng = np.random.default_rng(kernel)
  x = jnp.asarray(rng.standard_normal((2, 40, 6)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((kernel, 6)), jnp.float32)
  ref = lambda w, x: lax.conv_general_dilated(  # noqa: E731
      x, w[:, None, :], (1,), [padding], dimension_numbers=("NWC", "WIO", "NWC"),
      feature_group_count=6)
  np.testing.assert_allclose(np.asarray(depthwise_conv1d(x, w, padding)),
                             np.asarray(ref(w, x)), rtol=1e-5, atol=1e-5)
  g = lambda f: jax.grad(lambda w: jnp.sum(jnp.sin(f(w, x))))(w)  # noqa: E731
  np.testing.assert_allclose(np.asarray(g(lambda w, x: depthwise_conv1d(x, w, padding))),
                             np.asarray(g(ref)), rtol=1e-4, atol=1e-4)


def test_conv1d_dac_padding():
  # DAC pads ceil(stride / 2) on the left of its k = 2 * stride downsampling convolutions.
  assert conv_padding(16, 8) == (4, 4)
  assert conv_padding(4, 2) == (1, 1)
  assert conv_padding(10, 5) == (3, 2)
  assert conv_padding(7, 1, 9) == (27, 27)


def test_conv1d_init_weight_norm_identity_and_logical_names():
  x = jnp.ones((1, 8, 4))
  variables = Conv1d(6, 7).init(jax.random.key(1), x)
  boxed = variables["params"]
  assert boxed["v"].names == ("conv_kernel", "conv_in", "conv_out")
  assert boxed["g"].names == ("conv_out",)
  assert boxed["b"].names == ("conv_out",)
  params = nn.unbox(variables)["params"]
  assert params["v"].dtype == jnp.float32 and params["v"].shape == (7, 4, 6)
  # At init g = ||v|| (per output channel) so the effective kernel is v; U(+-1/sqrt(K*Cin)).
  np.testing.assert_allclose(params["g"], np.linalg.norm(params["v"].reshape(28, 6), axis=0),
                             rtol=1e-6)
  assert np.abs(params["v"]).max() <= 1 / math.sqrt(28)
  np.testing.assert_array_equal(params["b"], 0)


def test_conv1d_bf16_compute():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 32, 8)).astype(np.float32)
  layer32 = Conv1d(8, 7, dilation=3)
  params = nn.unbox(layer32.init(jax.random.key(0), x))
  y32 = layer32.apply(params, x)
  y16 = Conv1d(8, 7, dilation=3, dtype=jnp.bfloat16).apply(params, x.astype(jnp.bfloat16))
  assert y16.dtype == jnp.bfloat16
  scale = float(jnp.abs(y32).max())
  np.testing.assert_allclose(np.asarray(y16, np.float32), y32, atol=5e-2 * scale)


@pytest.mark.parametrize("stride, length", [(2, 7), (4, 5), (8, 3), (5, 6), (3, 4), (1, 9)])
def test_conv_transpose1d_matches_numpy(stride, length):
  rng = np.random.default_rng(stride)
  x = rng.standard_normal((2, length, 4)).astype(np.float32)
  layer = ConvTranspose1d(3, stride)
  variables = jax.eval_shape(layer.init, jax.random.key(0), x)
  assert variables["params"]["v"].names == ("conv_kernel", "conv_in", "conv_out")
  assert variables["params"]["g"].names == ("conv_in",)  # torch weight_norm dim=0: per Cin
  params = random_params(rng, nn.unbox(variables)["params"])
  got = np.asarray(layer.apply({"params": params}, x))
  assert got.shape == (2, length * stride, 3)  # exactly T * stride, odd strides included
  w = wn(params["v"], params["g"], axes=(0, 2))
  want = np_conv_transpose1d(x, w, params["b"], stride, math.ceil(stride / 2), stride % 2)
  assert want.shape == got.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_transpose1d_init_is_v():
  x = jnp.ones((1, 3, 6))
  params = nn.unbox(ConvTranspose1d(4, 2).init(jax.random.key(2), x))["params"]
  assert params["v"].shape == (4, 6, 4) and params["g"].shape == (6,)
  np.testing.assert_allclose(params["g"], np.linalg.norm(
      np.transpose(params["v"], (1, 0, 2)).reshape(6, -1), axis=1), rtol=1e-6)


def test_snake_matches_numpy():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 10, 6)).astype(np.float32) * 3
  layer = Snake()
  variables = layer.init(jax.random.key(0), x)
  assert variables["params"]["alpha"].names == ("channels",)
  alpha = np.asarray(nn.unbox(variables)["params"]["alpha"])
  np.testing.assert_array_equal(alpha, 1.0)
  alpha = np.abs(rng.standard_normal(6)).astype(np.float32) + 0.1
  got = layer.apply({"params": {"alpha": alpha}}, x)
  want = x + 1.0 / (alpha + 1e-9) * np.sin(alpha * x) ** 2
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  y16 = layer.apply({"params": {"alpha": alpha}}, x.astype(jnp.bfloat16))
  assert y16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y16, np.float32), want, rtol=2e-2, atol=5e-2)


def test_snake_beta_matches_numpy_and_starts_as_snake_at_alpha_one():
  """SnakeBeta (the released FACodec's activation): x + exp(-β) sin²(exp(α) x) with log-scale
  per-channel α, β initialised to 0, where it equals Snake with α = 1."""
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 10, 6)).astype(np.float32) * 3
  layer = Snake(beta=True)
  variables = nn.unbox(layer.init(jax.random.key(0), x))
  assert set(variables["params"]) == {"log_alpha", "log_beta"}
  np.testing.assert_allclose(layer.apply(variables, x), x + np.sin(x) ** 2, rtol=1e-6,
                             atol=1e-6)
  log_alpha, log_beta = rng.standard_normal((2, 6)).astype(np.float32) * 0.5
  got = layer.apply({"params": {"log_alpha": log_alpha, "log_beta": log_beta}}, x)
  want = x + np.exp(-log_beta) * np.sin(np.exp(log_alpha) * x) ** 2
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- Vocos head ----

def test_vocos_decoder_shapes_and_logical_names():
  """[B, F, C] -> [B, F * hop] float32 (n_fft = 4 hop by default), every parameter named."""
  model = VocosDecoder(hop_length=50, dim=16, intermediate_dim=24, num_layers=2)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 7, 5)), jnp.float32)
  variables = model.init(jax.random.key(0), x)
  wav = model.apply(variables, x)
  assert wav.shape == (2, 350) and wav.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(wav)))
  params = variables["params"]
  assert params["head"]["kernel"].names == ("embed", "spectrum")
  assert params["head"]["kernel"].value.shape == (16, 202)
  assert params["backbone"]["block_1"]["depthwise"]["kernel"].value.shape == (7, 1, 16)
  np.testing.assert_allclose(params["backbone"]["block_0"]["gamma"].value, 0.5)  # 1/layers
  leaves = jax.tree_util.tree_leaves(variables, is_leaf=lambda v: isinstance(v, nn.Partitioned))
  assert all(isinstance(leaf, nn.Partitioned) for leaf in leaves)


def test_vocos_head_perfect_reconstruction():
  """The head's path from (log|S|, phase) to audio inverts an analysis STFT: the outputs
  [log|S|, angle S] of Vocos-'same' frames of a signal give the signal back (the phase
  through cos and sin, so any 2 pi wrap is the same)."""
  hop, n_fft, count = 40, 160, 25
  x = (np.random.default_rng(1).standard_normal((1, count * hop)) * 0.3).astype(np.float32)
  pad = (n_fft - hop) // 2
  spec = spectral.stft(np.pad(x, ((0, 0), (pad, n_fft))), n_fft, hop, center=False)[:, :count]
  spec = np.asarray(spec) + 1e-6  # no exact zeros, whose log is -inf
  out = np.concatenate([np.log(np.abs(spec)), np.angle(spec) + 2 * np.pi], axis=-1)
  got = spectral.istft(spectrum_from_head(jnp.asarray(out)), n_fft, hop, padding="same")
  np.testing.assert_allclose(np.asarray(got), x, atol=1e-4)


def test_same_frames_stft_matches_librosa_and_istft_same_inverts_it():
  """The encoder's analysis frames are librosa's (center=False) of the reflect-padded signal,
  one per hop, and they are exactly the frames `istft(padding="same")` writes: the pair is an
  identity on the signal."""
  hop, n_fft, count = 40, 160, 25
  x = (np.random.default_rng(2).standard_normal((2, count * hop)) * 0.3).astype(np.float32)
  spec = np.asarray(same_frames_stft(jnp.asarray(x), n_fft, hop))
  assert spec.shape == (2, count, n_fft // 2 + 1)
  left = (n_fft - hop) // 2
  padded = np.pad(x[0], (left, n_fft - hop - left), mode="reflect")
  want = librosa.stft(padded, n_fft=n_fft, hop_length=hop, center=False, window="hann").T
  np.testing.assert_allclose(spec[0], want, atol=2e-4)
  back = spectral.istft(jnp.asarray(spec), n_fft, hop, padding="same")
  np.testing.assert_allclose(np.asarray(back), x, atol=1e-5)
  with pytest.raises(ValueError, match="multiple of the hop"):
    same_frames_stft(jnp.zeros((1, 50)), n_fft, hop)


def test_vocos_encoder_shapes_and_logical_names():
  """[B, T] -> [B, T // hop, out_dim] float32, the backbone over n_fft // 2 + 1 bins."""
  model = VocosEncoder(hop_length=50, out_dim=6, dim=16, intermediate_dim=24, num_layers=2)
  x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 350)), jnp.float32)
  variables = model.init(jax.random.key(0), x)
  h = model.apply(variables, x)
  assert h.shape == (2, 7, 6) and h.dtype == jnp.float32
  params = variables["params"]
  assert params["backbone"]["embed"]["kernel"].value.shape == (7, 101, 16)
  assert params["project"]["kernel"].names == ("embed", "latent")
  leaves = jax.tree_util.tree_leaves(variables, is_leaf=lambda v: isinstance(v, nn.Partitioned))
  assert all(isinstance(leaf, nn.Partitioned) for leaf in leaves)


def test_vocos_head_clips_the_magnitude_like_vocos():
  out = jnp.asarray([[10.0, -1.0, 0.3, 2.0]])  # log|S| = (10, -1), phase = (0.3, 2)
  got = np.asarray(spectrum_from_head(out))
  want = np.minimum(np.exp([10.0, -1.0]), 100.0) * np.exp(1j * np.asarray([0.3, 2.0]))
  np.testing.assert_allclose(got[0], want, rtol=1e-6)


def test_convnext_block_matches_numpy():
  """x + gamma * W2 GELU(W1 LN(depthwise_k7(x)) + b1) + b2, 'same' zero padding."""
  block = ConvNeXtBlock(intermediate_dim=6, layer_scale=0.25)
  x = np.random.default_rng(2).standard_normal((1, 9, 4)).astype(np.float32)
  variables = block.init(jax.random.key(1), x)
  p = jax.tree.map(np.asarray, nn.unbox(variables)["params"])
  k = p["depthwise"]["kernel"][:, 0, :]  # [7, C]
  xp = np.pad(x[0], ((3, 3), (0, 0)))
  y = np.stack([np.sum(xp[t:t + 7] * k, axis=0) for t in range(9)]) + p["depthwise"]["bias"]
  mu, var = y.mean(-1, keepdims=True), y.var(-1, keepdims=True)
  y = (y - mu) / np.sqrt(var + 1e-6) * p["norm"]["scale"] + p["norm"]["bias"]
  y = y @ p["pointwise_in"]["kernel"] + p["pointwise_in"]["bias"]
  y = 0.5 * y * (1 + special.erf(y / np.sqrt(2)))
  y = y @ p["pointwise_out"]["kernel"] + p["pointwise_out"]["bias"]
  want = x[0] + 0.25 * y
  np.testing.assert_allclose(np.asarray(block.apply(variables, x))[0], want, atol=1e-5)
