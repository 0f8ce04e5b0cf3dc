"""DAC discriminators (MPD + multi-band complex STFT MRD), WNConv2d and the GAN losses.

CPU only; XLA compilation dominates. The DAC-default ensemble (5 periods, 3 window lengths,
5 bands, tiny channels) is checked by shape inference (``jax.eval_shape``) at 16/24/48 kHz plus
one real pass through its largest-window MRD (parameters drawn with NumPy in the layers' init
distributions); the real ``init``, forward, gradients and a training step run on a reduced
ensemble (period 3, window 64, DAC's 5 bands) in the ``small`` fixture.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from jaxtts.codec import losses
from jaxtts.codec.discriminators import (DAC_BANDS, BandSTFTDiscriminator, Discriminators,
                                         band_bins, build_discriminators, discriminator_config,
                                         mrd_spectrogram, preprocess)
from jaxtts.nn.conv2d import Conv2d

TINY_MPD = (4, 4, 4, 4, 4)
TINY_MRD = 4


# ----------------------------------------------------------------------------- references

def np_conv2d(x, w, b, strides, pad):
  """out[n, i, j, o] = sum_{a, c, k} xpad[n, i*sh + a, j*sw + c, k] w[a, c, k, o] + b[o]."""
  x = np.pad(x, ((0, 0), (pad[0], pad[0]), (pad[1], pad[1]), (0, 0)))
  kh, kw = w.shape[:2]
  sh, sw = strides
  h = (x.shape[1] - kh) // sh + 1
  wd = (x.shape[2] - kw) // sw + 1
  out = np.zeros((x.shape[0], h, wd, w.shape[3]))
  for i in range(h):
    for j in range(wd):
      patch = x[:, i * sh:i * sh + kh, j * sw:j * sw + kw]  # [n, kh, kw, cin]
      out[:, i, j] = np.einsum("nack,acko->no", patch, w)
  return out + b


def expected_logit_shapes(batch, length, periods, windows, bands):
  """Logits shapes from the conv arithmetic (torch: (H + 2p - k) // s + 1)."""
  shapes = []
  for p in periods:
    h = (length + p - length % p) // p
    for _ in range(4):
      h = (h + 4 - 5) // 3 + 1
    shapes.append((batch, h, p, 1))
  for w in windows:
    frames = math.ceil(length / (w // 4))
    n_bins = w // 2 + 1
    width = 0
    for lo, hi in bands:
      f = int(hi * n_bins) - int(lo * n_bins)
      for _ in range(3):
        f = (f + 8 - 9) // 2 + 1
      width += f
    shapes.append((batch, frames, width, 1))
  return shapes


def numpy_params(abstract, seed):
  """Parameters for ``abstract`` (eval_shape of init) drawn like the layers' init: v, b
  ~ U(+-1/sqrt(fan_in)), g = ||v|| per output channel."""
  rng = np.random.default_rng(seed)

  def fill(tree):
    if "v" in tree:
      v_shape = tree["v"].shape
      bound = 1.0 / math.sqrt(np.prod(v_shape[:-1]))
      v = rng.uniform(-bound, bound, v_shape).astype(np.float32)
      out = {"v": v, "g": np.sqrt(np.sum(v ** 2, axis=(0, 1, 2))).astype(np.float32)}
      if "b" in tree:
        out["b"] = rng.uniform(-bound, bound, tree["b"].shape).astype(np.float32)
      return out
    return {k: fill(t) for k, t in tree.items()}
  return {"params": fill(nn.unbox(abstract)["params"])}


@pytest.fixture(scope="module")
def small():
  """A reduced ensemble (one MPD, one MRD with DAC's 5 bands), really initialised."""
  model = Discriminators(periods=(3,), window_lengths=(64,), mpd_channels=TINY_MPD,
                         mrd_channels=TINY_MRD)
  rng = np.random.default_rng(0)
  real = jnp.asarray(0.5 * np.sin(2 * np.pi * 440 / 16000 * np.arange(700))[None]
                     * np.ones((2, 1)) + 0.05 * rng.standard_normal((2, 700)), jnp.float32)
  fake = jnp.asarray(0.3 * rng.standard_normal((2, 700)), jnp.float32)
  variables = nn.unbox(jax.jit(model.init)(jax.random.key(0, impl="unsafe_rbg"), real))
  d_real = jax.jit(model.apply)(variables, real)  # float32 D(x), shared by the tests below
  return model, variables, real, fake, d_real


# ----------------------------------------------------------------------------- layers

def test_conv2d_matches_numpy_and_init():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 11, 7, 3)).astype(np.float32)
  layer = Conv2d(5, (3, 4), strides=(2, 1), padding=(1, 2))
  boxed = layer.init(jax.random.key(0), x)
  names = {k: v.names for k, v in boxed["params"].items()}
  assert names == {"v": ("conv_kernel", "conv_kernel_w", "conv2d_in", "conv2d_out"),
                   "g": ("conv2d_out",), "b": ("conv2d_out",)}
  p = nn.unbox(boxed)["params"]
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(p))
  v = np.asarray(p["v"], np.float64)
  np.testing.assert_allclose(p["g"], np.sqrt((v ** 2).sum(axis=(0, 1, 2))), rtol=1e-6)
  bound = 1 / math.sqrt(3 * 4 * 3)
  assert np.abs(v).max() <= bound and np.abs(np.asarray(p["b"])).max() <= bound
  # Non-trivial gain: w[..., o] = g[o] v[..., o] / ||v[..., o]||.
  g = rng.uniform(0.5, 2.0, 5).astype(np.float32)
  y = layer.apply({"params": {**p, "g": g}}, x)
  w = g * v / np.sqrt((v ** 2).sum(axis=(0, 1, 2)))
  ref = np_conv2d(x.astype(np.float64), w, np.asarray(p["b"]), (2, 1), (1, 2))
  assert y.shape == ref.shape == (2, 6, 8, 5)
  np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_mrd_spectrogram_matches_audiotools_framing():
  """audiotools match_stride: reflect pad (w-h)/2 (+ right pad to a hop multiple), centred
  STFT, drop two frames each side; compared with librosa on the padded signal."""
  rng = np.random.default_rng(2)
  wav = rng.standard_normal((2, 301)).astype(np.float32)
  w, h = 64, 16
  right = math.ceil(301 / h) * h - 301
  pad = (w - h) // 2
  xp = np.pad(wav, ((0, 0), (pad, pad + right)), mode="reflect")
  ref = librosa.stft(xp, n_fft=w, hop_length=h, window="hann", center=True,
                     pad_mode="reflect")[..., 2:-2]  # [B, F, N]
  ref = np.stack([ref.real, ref.imag], axis=-1).transpose(0, 2, 1, 3)
  got = mrd_spectrogram(jnp.asarray(wav), w)
  assert got.shape == (2, math.ceil(301 / h), w // 2 + 1, 2) == ref.shape
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_band_bins_and_preprocess():
  assert band_bins(2048, DAC_BANDS) == ((0, 102), (102, 256), (256, 512), (512, 768),
                                        (768, 1025))
  with pytest.raises(ValueError):
    band_bins(16, ((0.0, 0.01), (0.01, 1.0)))  # empty first band
  x = np.random.default_rng(3).standard_normal((2, 50)) + 3.0
  y = np.asarray(preprocess(jnp.asarray(x, jnp.float32)))
  ref = x - x.mean(-1, keepdims=True)
  ref = 0.8 * ref / (np.abs(ref).max(-1, keepdims=True) + 1e-9)
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- ensemble

def test_default_parameter_count():
  model = build_discriminators(discriminator_config())
  abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4096)))
  params = nn.unbox(abstract)["params"]
  count = lambda t: sum(int(np.prod(a.shape)) for a in jax.tree.leaves(t))
  # MPD: WNConv2d (5,1) 1->32->128->512->1024->1024 + (3,1) 1024->1 (v, g, b each).
  chans = (1, 32, 128, 512, 1024, 1024)
  mpd = sum(5 * a * b + 2 * b for a, b in zip(chans[:-1], chans[1:])) + 3 * 1024 + 2
  mrd = 5 * (9 * 3 * 2 * 32 + 64 + 3 * (27 * 32 * 32 + 64) + 9 * 32 * 32 + 64) + 9 * 32 + 2
  assert count(params["mpd_2"]) == mpd == 8_221_154
  assert count(params["mrd_1024"]) == mrd == 471_330
  assert count(params) == 5 * mpd + 3 * mrd == 42_519_760
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(params))


@pytest.mark.parametrize("sample_rate", [16000, 24000, 48000])
def test_structure_and_logit_shapes(sample_rate):
  """DAC's periods/windows/bands at 0.1 s (+37 samples, not a hop multiple), tiny channels."""
  cfg = discriminator_config()
  cfg.mpd_channels, cfg.mrd_channels = TINY_MPD, TINY_MRD
  model = build_discriminators(cfg)
  length = sample_rate // 10 + 37
  wav = jnp.asarray(np.random.default_rng(sample_rate).uniform(-0.5, 0.5, (2, length)),
                    jnp.float32)
  abstract = jax.eval_shape(model.init, jax.random.key(0), wav)
  out = jax.eval_shape(model.apply, abstract, wav)
  want = expected_logit_shapes(2, length, cfg.periods, cfg.window_lengths, cfg.bands)
  assert len(out) == 5 + 3
  assert [o[-1].shape for o in out] == want
  assert [len(o) for o in out] == [6] * 5 + [26] * 3
  if sample_rate == 48000:  # a real pass through the largest window's MRD (2048, 5 bands)
    mrd = BandSTFTDiscriminator(2048, channels=TINY_MRD)
    abstract = jax.eval_shape(mrd.init, jax.random.key(0), wav)
    got = jax.jit(mrd.apply)(numpy_params(abstract, 0), wav)
    assert [f.shape for f in got] == [f.shape for f in out[5]]
    assert all(bool(jnp.all(jnp.isfinite(f))) for f in got)
    assert float(jnp.abs(got[-1]).max()) > 0


def test_bf16_compute(small):
  model, variables, real, _, out32 = small
  bf16 = model.clone(dtype=jnp.bfloat16)
  out16 = jax.jit(bf16.apply)(variables, real)
  for o16, o32 in zip(out16, out32):
    assert all(f.dtype == jnp.bfloat16 for f in o16)
    np.testing.assert_allclose(np.asarray(o16[-1], np.float32), o32[-1], atol=0.05 +
                               0.05 * float(jnp.abs(o32[-1]).max()))


# ----------------------------------------------------------------------------- losses

def random_outputs(rng, structure):
  return [[rng.standard_normal(s).astype(np.float32) for s in sub] for sub in structure]


STRUCTURE = [[(2, 5, 3, 4), (2, 3, 3, 1)], [(2, 4, 6, 2), (2, 4, 6, 2), (2, 4, 3, 1)]]


@pytest.mark.parametrize("kind", ["lsgan", "hinge"])
def test_adversarial_losses_match_numpy(kind):
  rng = np.random.default_rng(4)
  real, fake = random_outputs(rng, STRUCTURE), random_outputs(rng, STRUCTURE)
  relu = lambda x: np.maximum(x, 0.0)
  if kind == "lsgan":
    d_ref = sum(np.mean((1 - r[-1]) ** 2) + np.mean(f[-1] ** 2) for r, f in zip(real, fake))
    g_ref = sum(np.mean((1 - f[-1]) ** 2) for f in fake)
  else:
    d_ref = sum(np.mean(relu(1 - r[-1])) + np.mean(relu(1 + f[-1])) for r, f in zip(real, fake))
    g_ref = sum(np.mean(-f[-1]) for f in fake)
  d = losses.discriminator_loss(real, fake, kind=kind)
  g = losses.generator_adversarial_loss(fake, kind=kind)
  assert d.dtype == g.dtype == jnp.float32 and d.shape == g.shape == ()
  np.testing.assert_allclose(d, d_ref, rtol=1e-5)
  np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-6)
  # bf16 maps are accepted and reduced in float32.
  bf = [[jnp.asarray(a, jnp.bfloat16) for a in sub] for sub in fake]
  assert losses.generator_adversarial_loss(bf, kind=kind).dtype == jnp.float32
  with pytest.raises(ValueError):
    losses.discriminator_loss(real, fake, kind="wgan")


def test_feature_matching_matches_numpy_and_stops_real_gradient():
  rng = np.random.default_rng(5)
  real, fake = random_outputs(rng, STRUCTURE), random_outputs(rng, STRUCTURE)
  ref = sum(np.mean(np.abs(f - r)) for rs, fs in zip(real, fake)
            for r, f in zip(rs[:-1], fs[:-1]))  # logits excluded
  np.testing.assert_allclose(losses.feature_matching_loss(real, fake), ref, rtol=1e-5)
  g_real, g_fake = jax.grad(losses.feature_matching_loss, argnums=(0, 1))(real, fake)
  assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(g_real))
  # d/dfake mean|f - r| = sign(f - r) / size on intermediate maps; zero on the logits.
  for rs, fs, gs in zip(real, fake, g_fake):
    for r, f, gf in zip(rs[:-1], fs[:-1], gs[:-1]):
      np.testing.assert_allclose(gf, np.sign(f - r) / f.size, rtol=1e-6)
    assert not np.any(np.asarray(gs[-1]))


# ----------------------------------------------------------------------------- training

def test_generator_gradient_wrt_fake_waveform(small):
  """d(L_adv + 2 L_FM)/d G(z) for both kinds (one jitted forward, two pullbacks)."""
  model, variables, real, fake, d_real = small

  @jax.jit
  def grads(wav):
    def both(w):
      d_fake = model.apply(variables, w)
      fm = 2.0 * losses.feature_matching_loss(d_real, d_fake)
      return jnp.stack([losses.generator_adversarial_loss(d_fake, k) + fm for k in losses.KINDS])
    return jax.jacrev(both)(wav)  # [2, B, T]

  g = grads(fake)
  assert g.shape == (2,) + fake.shape
  assert bool(jnp.all(jnp.isfinite(g)))
  assert float(jnp.abs(g[0]).max()) > 0 and float(jnp.abs(g[1]).max()) > 0
  assert float(jnp.abs(g[0] - g[1]).max()) > 0


def test_lsgan_step_lowers_discriminator_loss(small):
  """One SGD step on the discriminator parameters, fixed D inputs x and stop_gradient(G(z))."""
  model, variables, real, fake, _ = small
  both = jnp.concatenate([real, jax.lax.stop_gradient(fake)], axis=0)  # one pass for x, G(z)
  n = real.shape[0]

  @jax.jit
  def loss_and_grad(params):
    def loss(p):
      out = model.apply({"params": p}, both)
      d_real = [[f[:n] for f in sub] for sub in out]
      d_fake = [[f[n:] for f in sub] for sub in out]
      return losses.discriminator_loss(d_real, d_fake, "lsgan")
    return jax.value_and_grad(loss)(params)

  params = variables["params"]
  before, grads = loss_and_grad(params)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(grads))
  params = jax.tree.map(lambda p, g: p - 1e-2 * g, params, grads)
  after, _ = loss_and_grad(params)
  assert float(after) < float(before), (float(before), float(after))
