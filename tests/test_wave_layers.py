"""PQMF (against NumPy convolution and its published cutoff), CLONE's multi-band discriminator,
and the HiFi-GAN wave decoder (against a NumPy transcription of torch's conv semantics)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtts.audio.pqmf import optimal_cutoff, pqmf_analysis, pqmf_filters, pqmf_synthesis
from jaxtts.codec import losses
from jaxtts.codec.discriminators import Discriminators
from jaxtts.nn.hifigan import HiFiGANDecoder
from jaxtts.nn.subband import ScaleDiscriminator, SubBandDiscriminator


# ------------------------------------------------------------------------------------ PQMF

def test_optimal_cutoff_reproduces_multiband_melgan():
  # Multi-band MelGAN's released PQMF (4 bands, 62 taps, Kaiser beta 9) uses cutoff 0.142,
  # the minimiser of Lin & Vaidyanathan's objective; ours finds it from the objective.
  assert optimal_cutoff(4, 62, 9.0) == pytest.approx(0.142, abs=1e-3)
  assert 0.25 < optimal_cutoff(2, 62, 9.0) < 0.29


@pytest.mark.parametrize("n_bands,length", [(2, 1001), (4, 1024)])
def test_analysis_matches_numpy_convolution(n_bands, length):
  x = np.random.default_rng(n_bands).standard_normal((2, length))
  h, _ = pqmf_filters(n_bands)
  taps = h.shape[1] - 1
  ref = np.stack([
      np.stack([np.convolve(row, h[k])[taps // 2:taps // 2 + length][::n_bands]
                for k in range(n_bands)], -1) for row in x])
  out = np.asarray(pqmf_analysis(jnp.asarray(x, jnp.float32), n_bands))
  assert out.shape == (2, -(-length // n_bands), n_bands)
  np.testing.assert_allclose(out, ref, atol=2e-5)


@pytest.mark.parametrize("n_bands", [2, 4])
def test_synthesis_reconstructs_and_bands_separate(n_bands):
  length = 4096
  x = np.random.default_rng(0).standard_normal((1, length)).astype(np.float32)
  y = np.asarray(pqmf_synthesis(pqmf_analysis(jnp.asarray(x), n_bands)))
  core = slice(128, length - 128)
  snr = 10 * np.log10(np.sum(x[0, core] ** 2) / np.sum((x - y)[0, core] ** 2))
  assert y.shape == x.shape and snr > 50, snr
  # A tone in the middle of band k puts (almost) all its energy in band k.
  t = np.arange(length)
  for k in range(n_bands):
    tone = np.sin(np.pi * (k + 0.5) / n_bands * t)[None].astype(np.float32)
    energy = np.sum(np.square(np.asarray(pqmf_analysis(jnp.asarray(tone), n_bands))[0, 64:-64]),
                    axis=0)
    assert energy[k] / energy.sum() > 0.999, (k, energy)


# ------------------------------------------------------------------- multi-band discriminator

def test_subband_discriminator_judges_each_pqmf_band_with_its_own_stack():
  wav = jnp.asarray(np.random.default_rng(1).standard_normal((2, 1600)), jnp.float32)
  disc = SubBandDiscriminator(2, channels=(4, 4, 4, 4), strides=(4, 2))
  params = nn.unbox(disc.init(jax.random.key(0), wav))["params"]
  outs = disc.apply({"params": params}, wav)
  bands = pqmf_analysis(wav, 2)
  assert len(outs) == 2
  for k, maps in enumerate(outs):
    ref = ScaleDiscriminator((4, 4, 4, 4), (4, 2)).apply({"params": params[f"band_{k}"]},
                                                          bands[..., k:k + 1])
    assert [m.shape for m in maps] == [r.shape for r in ref]
    assert maps[-1].shape == (2, 800 // 8, 1)
    for m, r in zip(maps, ref):
      np.testing.assert_allclose(np.asarray(m), np.asarray(r), rtol=1e-5, atol=1e-6)
  # In the ensemble, the bands follow the MPDs; losses and gradients reach the waveform.
  ens = Discriminators(periods=(2,), window_lengths=(), mpd_channels=(4, 4), subbands=2,
                       subband_channels=(4, 4, 4, 4), subband_strides=(4, 2))
  ep = nn.unbox(ens.init(jax.random.key(1), wav))["params"]
  assert sorted(ep) == ["mpd_2", "subband"] and sorted(ep["subband"]) == ["band_0", "band_1"]
  grad = jax.grad(lambda w: losses.generator_adversarial_loss(ens.apply({"params": ep}, w)))(wav)
  assert len(ens.apply({"params": ep}, wav)) == 3 and float(jnp.sum(jnp.abs(grad))) > 0


# ------------------------------------------------------------------------------- HiFi-GAN

def _wn(v, g, axes):
  return g.reshape([-1 if a not in axes else 1 for a in range(v.ndim)]) * v / np.sqrt(
      np.sum(v ** 2, axis=axes, keepdims=True))


def _conv(x, p, dilation=1):
  """torch Conv1d, 'same' padding, weight norm over (K, Cin): x [T, Cin] -> [T, Cout]."""
  w = _wn(np.asarray(p["v"], np.float64), np.asarray(p["g"], np.float64), (0, 1))
  k = w.shape[0]
  pad = (k - 1) * dilation // 2
  xp = np.pad(x, ((pad, pad), (0, 0)))
  y = sum(xp[i * dilation:i * dilation + x.shape[0]] @ w[i] for i in range(k))
  return y + (np.asarray(p["b"]) if "b" in p else 0.0)


def _conv_transpose(x, p, stride, padding):
  """torch ConvTranspose1d: ``y[t·s + k - p] += x[t] @ w[k]``; weight norm over (K, Cout)."""
  w = _wn(np.asarray(p["v"], np.float64), np.asarray(p["g"], np.float64), (0, 2))
  k = w.shape[0]
  full = np.zeros(((x.shape[0] - 1) * stride + k, w.shape[2]))
  for t in range(x.shape[0]):
    for i in range(k):
      full[t * stride + i] += x[t] @ w[i]
  return full[padding:padding + x.shape[0] * stride] + np.asarray(p["b"])


def _lrelu(x, slope):
  return np.where(x > 0, x, slope * x)


def test_hifigan_matches_a_numpy_transcription_of_vits_generator():
  rates, kernels, resk, resd = (2, 3), (4, 5), (3, 5), ((1, 2), (1, 3))
  dec = HiFiGANDecoder(rates, kernels, 8, resk, resd)
  x = np.random.default_rng(2).standard_normal((2, 5, 3)).astype(np.float32)
  params = nn.unbox(dec.init(jax.random.key(0), jnp.asarray(x)))["params"]
  # Redraw every parameter at unit scale: at HiFi-GAN's N(0, 0.01) init the residual branches
  # are near zero and a wrong branch would hide under the tolerance.
  leaves, tree = jax.tree.flatten(params)
  rng = np.random.default_rng(3)
  params = jax.tree.unflatten(tree, [jnp.asarray(rng.standard_normal(l.shape), jnp.float32)
                                     for l in leaves])
  params["conv_post"]["g"] = 0.02 * params["conv_post"]["g"]   # keep tanh off saturation
  out = np.asarray(dec.apply({"params": params}, jnp.asarray(x)))
  assert out.shape == (2, 5 * 6) and dec.hop_length == 6
  for b in range(2):
    h = _conv(x[b].astype(np.float64), params["conv_pre"])
    for i, (u, k) in enumerate(zip(rates, kernels)):
      h = _conv_transpose(_lrelu(h, 0.1), params[f"up_{i}"], u, (k - u) // 2)
      acc = 0.0
      for j, (rk, rd) in enumerate(zip(resk, resd)):
        r, p = h, params[f"resblock_{i}_{j}"]
        for n, d in enumerate(rd):
          y = _conv(_lrelu(r, 0.1), p[f"conv1_{n}"], d)
          r = r + _conv(_lrelu(y, 0.1), p[f"conv2_{n}"])
        acc = acc + r
      h = acc / len(resk)
    ref = np.tanh(_conv(_lrelu(h, 0.01), params["conv_post"]))[:, 0]
    np.testing.assert_allclose(out[b], ref, rtol=1e-4, atol=1e-5)


def test_hifigan_refuses_shapes_it_cannot_build():
  x = jnp.zeros((1, 4, 3))
  with pytest.raises(ValueError, match="even difference"):
    HiFiGANDecoder((5,), (10,), 8, (3,), ((1,),)).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="differ in length"):
    HiFiGANDecoder((2, 2), (4,), 8, (3,), ((1,),)).init(jax.random.key(0), x)


# --------------------------------------------------------------- source-filter excitation

def test_harmonic_excitation_matches_a_sum_of_cosines():
  from jaxtts.audio.excitation import harmonic_excitation
  hop, sr = 200, 16000
  f0 = np.array([[110.0, 123.0, 0.0, 260.0, 3100.0]], np.float32)
  voiced = np.array([[True, True, True, True, True]])      # f0 = 0 is unvoiced regardless
  out = np.asarray(harmonic_excitation(jnp.asarray(f0), jnp.asarray(voiced), hop, sr))
  f = np.repeat(f0[0].astype(np.float64), hop)
  phi = 2 * np.pi * np.cumsum(f / sr)
  ref = np.zeros_like(f)
  for t in range(len(f)):
    if f[t] > 0:
      n = int(min(np.floor(sr / 2 / f[t]), 200))
      ref[t] = np.sum(np.cos(np.arange(1, n + 1) * phi[t])) / np.sqrt(n / 2)
  assert out.shape == (1, 5 * hop)
  np.testing.assert_allclose(out[0], ref, atol=2e-3 * np.abs(ref).max())
  assert (out[0, 2 * hop:3 * hop] == 0).all()
  # Unit RMS whatever the pitch: frames of whole periods (80 Hz and 160 Hz at hop 200).
  whole = np.asarray(harmonic_excitation(jnp.asarray([[80.0, 160.0]]), jnp.ones((1, 2), bool),
                                         hop, sr))[0]
  for k in range(2):
    # (80 Hz puts harmonic 100 on Nyquist, where cos² averages 1, not 1/2: +0.5 %)
    assert np.sqrt(np.mean(whole[k * hop:(k + 1) * hop] ** 2)) == pytest.approx(1.0, rel=1e-2)


def test_excited_vocos_passes_its_source_through_when_the_filter_is_one():
  """Noise head silenced, harmonic filter H = 1: the decoder's output is the excitation itself
  (the same-frames STFT / inverse STFT pair reconstructs it)."""
  from jaxtts.audio.excitation import harmonic_excitation
  from jaxtts.nn.vocos import VocosDecoder
  hop = 50
  dec = VocosDecoder(hop, dim=8, intermediate_dim=8, num_layers=1, excitation=True,
                     sample_rate=16000)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 12, 3)), jnp.float32)
  f0 = jnp.asarray(np.linspace(120, 180, 12)[None], jnp.float32)
  voiced = jnp.ones((1, 12), bool)
  params = nn.unbox(dec.init(jax.random.key(0), x, f0=f0, voiced=voiced))["params"]
  k = 4 * hop // 2 + 1
  params["head"] = {"kernel": jnp.zeros_like(params["head"]["kernel"]),
                    "bias": jnp.concatenate([jnp.full((k,), -30.0), jnp.zeros((k,))])}
  params["harmonic_head"] = jax.tree.map(jnp.zeros_like, params["harmonic_head"])
  out = np.asarray(dec.apply({"params": params}, x, f0=f0, voiced=voiced))
  src = np.asarray(harmonic_excitation(f0, voiced, hop, 16000))
  core = slice(2 * hop, 10 * hop)   # away from the reflect-padded edges
  np.testing.assert_allclose(out[0, core], src[0, core], atol=1e-3)
  with pytest.raises(ValueError, match="needs the frame f0"):
    dec.apply({"params": params}, x)
