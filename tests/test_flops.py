"""Analytic model FLOPs (`jaxtts.tasks.flops`) against hand formulas, an exact count of the
matrix products in the traced models, and XLA's cost analysis; the peak-FLOP/s table."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtts.codec.discriminators import build_discriminators
from jaxtts.tasks import flops
from jaxtts.tasks.clone import CLONETask
from jaxtts.tasks.gmm_lm import build_model as build_gmm_lm
from jaxtts.tasks.gmm_vae import GMMVAETask, build_model as build_gmm_vae
from jaxtts.train import mfu
from jaxtts.train.config import build_config


def _sub_jaxprs(eqn):
  """(jaxpr, multiplicity) of the programs an equation calls (pjit, remat, custom_jvp, scan)."""
  times = int(eqn.params.get("length", 1)) if eqn.primitive.name == "scan" else 1
  for v in eqn.params.values():
    for item in (v if isinstance(v, (tuple, list)) else (v,)):
      if hasattr(item, "eqns"):
        yield item, times
      elif hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns"):
        yield item.jaxpr, times


def _real_taps(out_len, kernel, stride, rhs_dil, pad_lo, in_len, lhs_dil):
  """(output, tap) pairs of one spatial dim whose input is a real (not dilation or padding)
  element of an input-dilated convolution."""
  o = np.arange(out_len)[:, None]
  k = np.arange(kernel)[None, :]
  i = o * stride + k * rhs_dil - pad_lo
  return int(np.sum((i >= 0) & (i <= (in_len - 1) * lhs_dil) & (i % lhs_dil == 0)))


def matmul_flops(jaxpr) -> float:
  """2 x multiply-adds of every dot_general and convolution in ``jaxpr`` (recursively).
  Convolutions count whole windows (padding included) unless input-dilated (transposed
  convolutions), which count only the taps on real input elements."""
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in contract)
    elif name == "conv_general_dilated":
      lhs_spec, rhs_spec, out_spec = eqn.params["dimension_numbers"]
      lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
      out = eqn.outvars[0].aval.shape
      taps = 1
      for d in range(len(out_spec) - 2):
        o_len, k_len = out[out_spec[2 + d]], rhs[rhs_spec[2 + d]]
        ld = eqn.params["lhs_dilation"][d]
        if ld == 1:
          taps *= o_len * k_len
        else:
          taps *= _real_taps(o_len, k_len, eqn.params["window_strides"][d],
                             eqn.params["rhs_dilation"][d], eqn.params["padding"][d][0],
                             lhs[lhs_spec[2 + d]], ld)
      total += 2.0 * out[out_spec[0]] * out[out_spec[1]] * rhs[rhs_spec[1]] * taps
    for sub, times in _sub_jaxprs(eqn):
      total += times * matmul_flops(sub)
  return total


# ------------------------------------------------------------------------------ the models ---

def test_gmm_vae_hand_formula():
  """E=2, strides (2, 2), D=3, decoder 4, one 8-sample clip, layer by layer (2 x MACs):
  encoder conv_in 224; block 0: residual units 3 x (448 + 64), down 256; block 1: 3 x (896 +
  128), down 512; conv_out 288. Decoder conv_in 336; block 0: up 2*4*2*(2*4 - 2) = 96, units 3
  x (224 + 32); block 1: up 2*2*1*(4*4 - 2) = 56, units 3 x (112 + 16); conv_out 112."""
  cfg = build_config("configs/gmm_vae.py:tiny", [
      "--config.model.encoder_dim=2", "--config.model.encoder_strides=(2,2)",
      "--config.model.latent_dim=3", "--config.model.decoder_dim=4"])
  encoder = 224 + 3 * (448 + 64) + 256 + 3 * (896 + 128) + 512 + 288
  decoder = 336 + 96 + 3 * (224 + 32) + 56 + 3 * (112 + 16) + 112
  assert flops.gmm_vae_forward(cfg.model, 1, 8) == encoder + decoder == 7640


def test_gmm_lm_hand_formula():
  """One encoder and one decoder layer, d = E = 4, ffn 8, 2 heads, kernel 3, rotary, J = 2
  phonemes, I = 3 frames, D = 2, A = 2, one component. Per layer over T positions: FFNs
  2 x (2T*4*8 + 2T*8*4) = 256T, conv module 2T*4*8 + 2T*4*4 = 96T (its depthwise conv is
  elementwise, not counted), projections
  4 x 2T*16 = 128T, scores + values 2 x 2*T*T*4 = 16 T^2 (half when causal). Encoder (T=2)
  1024; energies 2*3*2*2 + 2*2*4*2 + 2*3*2*2 = 80; context 2*3*2*4 + W_x 2*3*2*4 = 96;
  decoder (T=3, causal) 1512; head 2*3*4*(1*(1 + 2*2) + 1) = 144."""
  cfg = build_config("configs/gmm_lm.py:tiny", [
      "--config.model.encoder_layers=1", "--config.model.decoder_layers=1",
      "--config.model.encoder_dim=4", "--config.model.decoder_dim=4",
      "--config.model.encoder_ffn_dim=8", "--config.model.decoder_ffn_dim=8",
      "--config.model.encoder_heads=2", "--config.model.decoder_heads=2",
      "--config.model.kernel_size=3", "--config.model.latent_dim=2",
      "--config.model.num_components=1", "--config.alignment.energy_dim=2",
      "--config.model.frames_per_step=1"])
  encoder = 256 * 2 + 96 * 2 + 128 * 2 + 16 * 4
  decoder = 256 * 3 + 96 * 3 + 128 * 3 + 8 * 9
  want = encoder + 80 + 96 + decoder + 144
  assert want == 2856
  assert flops.gmm_lm_forward(cfg, 1, 3, 2) == want
  # Two 1-dim codec frames per step: the same network on 3 steps of 2 dims.
  cfg.model.frames_per_step, cfg.model.latent_dim = 2, 1
  assert flops.gmm_lm_forward(cfg, 1, 6, 2) == want


def _xla_flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


@pytest.fixture(scope="module")
def vae():
  cfg = build_config("configs/gmm_vae.py:tiny", ["--config.data.segment_samples=4000"])
  model = build_gmm_vae(cfg)
  audio = jnp.zeros((2, 4000))
  params = model.init(jax.random.key(0), audio)["params"]
  forward = lambda p, x: model.apply({"params": p}, x,
                                     method=lambda m, x: m.decode(m.encode(x)))
  return cfg, forward, params, audio


def test_gmm_vae_count_equals_traced_products_and_xla(vae):
  """The count equals the dot/conv products of the traced encoder + decoder exactly, and XLA's
  cost analysis of the compiled forward (no remat) within [0.8, 1.25]x: convolutions are
  nearly all of the work; the rest is Snake, weight norm and padding arithmetic (+3 % here)."""
  cfg, forward, params, audio = vae
  count = flops.gmm_vae_forward(cfg.model, 2, 4000)
  assert matmul_flops(jax.make_jaxpr(forward)(params, audio).jaxpr) == pytest.approx(count,
                                                                                     rel=1e-9)
  assert 0.8 <= _xla_flops(forward, params, audio) / count <= 1.25


def test_vocos_decoder_count_equals_traced_products():
  """The same for the GMM-VAE with the Vocos decoder (model.decoder=vocos): the input conv,
  the pointwise layers and the head; the depthwise convolutions are elementwise
  multiply-adds (`jaxtts.nn.conv.depthwise_conv1d`) and are not products."""
  cfg = build_config("configs/gmm_vae.py:tiny", [
      "--config.data.segment_samples=4000", "--config.model.decoder=vocos",
      "--config.model.vocos.dim=24", "--config.model.vocos.intermediate_dim=40",
      "--config.model.vocos.num_layers=2"])
  model = build_gmm_vae(cfg)
  audio = jnp.zeros((2, 4000))
  params = jax.eval_shape(model.init, jax.random.key(0), audio)["params"]
  forward = lambda p, x: model.apply({"params": p}, x,
                                     method=lambda m, x: m.decode(m.encode(x)))
  count = flops.gmm_vae_forward(cfg.model, 2, 4000)
  vocos = 2 * 20 * 2 * (7 * 16 * 24 + 2 * (2 * 24 * 40) + 24 * 802)
  assert matmul_flops(jax.make_jaxpr(forward)(params, audio).jaxpr) == pytest.approx(count,
                                                                                     rel=1e-9)
  assert flops.vocos_forward(cfg.model.vocos, 2, 20, 16, 200) == vocos


def test_discriminator_count_equals_traced_products_and_xla(vae):
  """As above for the period and band discriminators (XLA: -5 % here; the STFTs' FFTs are
  not products and XLA counts them little)."""
  cfg, _, _, audio = vae
  disc = build_discriminators(cfg.discriminator)
  params = disc.init(jax.random.key(0), audio)["params"]
  forward = lambda p, x: disc.apply({"params": p}, x)
  count = flops.discriminators_forward(cfg.discriminator, 2, 4000)
  assert matmul_flops(jax.make_jaxpr(forward)(params, audio).jaxpr) == pytest.approx(count,
                                                                                     rel=1e-9)
  assert 0.8 <= _xla_flops(forward, params, audio) / count <= 1.25


@pytest.mark.parametrize("position,xla_check", [("rotary", True), ("relative_xl", False)])
def test_gmm_lm_count_equals_traced_products(position, xla_check):
  """Exact against the traced teacher-forced forward once the causal decoder's unused half of
  the T x T scores and values (counted by the program, not by MFU) is added back; XLA's cost
  analysis within [0.8, 1.25]x (+6 % here: layer norms, softmax, Swish, the alignment scan)."""
  cfg = build_config("configs/gmm_lm.py:tiny", [f"--config.model.position={position}"])
  model = build_gmm_lm(cfg)
  r = int(cfg.model.frames_per_step)  # the network's steps: r stacked codec frames each
  assert r == 2
  b, i, j, d = 2, 40, 12, int(cfg.model.latent_dim) * r
  latents, phonemes = jnp.zeros((b, i, d)), jnp.ones((b, j), jnp.int32)
  lmask, pmask = jnp.ones((b, i), bool), jnp.ones((b, j), bool)
  params = model.init({"params": jax.random.key(0), "alignment": jax.random.key(1)}, latents,
                      lmask, phonemes, pmask)["params"]
  forward = lambda p, x: model.apply({"params": p}, x, lmask, phonemes, pmask, 1.0, True,
                                     rngs={"alignment": jax.random.key(2)})
  count = flops.gmm_lm_forward(cfg, b, i * r, j)
  unused_causal = 0.5 * 2 * (2.0 * b * i * i * cfg.model.decoder_dim) * cfg.model.decoder_layers
  traced = matmul_flops(jax.make_jaxpr(forward)(params, latents).jaxpr)
  assert traced == pytest.approx(count + unused_causal, rel=1e-9)
  if xla_check:
    assert 0.8 <= _xla_flops(forward, params, latents) / count <= 1.25


def test_task_step_counts_three_forwards_and_the_gan():
  cfg = build_config("configs/gmm_vae.py:tiny", ["--config.data.segment_samples=4000"])
  task = GMMVAETask(cfg)
  g = flops.gmm_vae_forward(cfg.model, 8, 4000)
  d = flops.discriminators_forward(cfg.discriminator, 8, 4000)
  assert task.flops_per_step({"audio": (8, 4000), "audio_len": (8,)}) == 3 * g + 9 * d


def test_peak_table():
  class Dev:
    def __init__(self, kind, platform="gpu"):
      self.device_kind, self.platform = kind, platform
  assert mfu.peak_flops_per_device(0.0, Dev("NVIDIA H100 80GB HBM3")) == 989e12
  assert mfu.peak_flops_per_device(0.0, Dev("NVIDIA H100 PCIe")) == 756e12
  assert mfu.peak_flops_per_device(0.0, Dev("NVIDIA H200")) == 989e12
  assert mfu.peak_flops_per_device(0.0, Dev("NVIDIA A100-SXM4-40GB")) == 312e12
  assert mfu.peak_flops_per_device(0.0, Dev("TPU v5 lite", "tpu")) == 197e12
  assert mfu.peak_flops_per_device(0.0, Dev("TPU v5p", "tpu")) == 459e12
  assert mfu.peak_flops_per_device(0.0, Dev("TPU v4", "tpu")) == 275e12
  assert mfu.peak_flops_per_device(0.0, Dev("TPU v6 lite", "tpu")) == 918e12
  assert mfu.peak_flops_per_device(0.0, Dev("cpu", "cpu")) is None
  assert mfu.peak_flops_per_device(0.0, Dev("Some GPU")) is None
  assert mfu.peak_flops_per_device(5e12, Dev("cpu", "cpu")) == 5e12
  assert mfu.utilisation(1e12, 2.0, 4e12) == 0.5 and mfu.utilisation(1e12, 2.0, None) is None


def test_vocos_encoder_count_equals_traced_products():
  """model.encoder=vocos: the STFT encoder's backbone over 401 log-magnitude bins and its
  projection to the latent, beside the Vocos decoder (hand formula and traced products)."""
  cfg = build_config("configs/gmm_vae.py:tiny", [
      "--config.data.segment_samples=4000", "--config.model.decoder=vocos",
      "--config.model.encoder=vocos", "--config.model.vocos.dim=24",
      "--config.model.vocos.intermediate_dim=40", "--config.model.vocos.num_layers=2",
      "--config.model.vocos_encoder.dim=8", "--config.model.vocos_encoder.intermediate_dim=12",
      "--config.model.vocos_encoder.num_layers=1"])
  model = build_gmm_vae(cfg)
  audio = jnp.zeros((2, 4000))
  params = jax.eval_shape(model.init, jax.random.key(0), audio)["params"]
  forward = lambda p, x: model.apply({"params": p}, x,
                                     method=lambda m, x: m.decode(m.encode(x)))
  encoder = 2 * 20 * 2 * (7 * 401 * 8 + (2 * 8 * 12) + 8 * 16)
  assert flops.vocos_encoder_forward(cfg.model, 2, 20, 16, 200) == encoder
  decoder = flops.vocos_forward(cfg.model.vocos, 2, 20, 16, 200)
  assert flops.gmm_vae_forward(cfg.model, 2, 4000) == encoder + decoder
  assert matmul_flops(jax.make_jaxpr(forward)(params, audio).jaxpr) == pytest.approx(
      encoder + decoder, rel=1e-9)


# ------------------------------------------------------------------------------ CLONE --------

_CLONE_HIFIGAN = [  # rates (2, 10, 10): the first stage's padding 3 > its stride 2
    "--config.model.decoder=hifigan", "--config.model.hifigan_upsample_rates=(2,10,10)",
    "--config.model.hifigan_upsample_kernel_sizes=(8,20,10)",
    "--config.model.hifigan_channels=16", "--config.model.hifigan_resblock_kernel_sizes=(3,5)",
    "--config.model.hifigan_resblock_dilations=((1,3),(1,2))"]


@pytest.mark.parametrize("overrides", [
    [],                                                          # tiny: Vocos, reference encoder
    _CLONE_HIFIGAN + ["--config.model.speaker_encoder=table", "--config.model.num_speakers=4",
                      "--config.model.alignment=mas", "--config.model.aligner_mels=12",
                      "--config.model.flow_mean_only=True"],
    ["--config.model.excitation=True"],                          # source-filter Vocos, F0 head
], ids=["vocos", "hifigan_table_mas", "vocos_excitation"])
def test_clone_count_equals_traced_loss_products(overrides):
  """`flops.clone_forward` equals the dot/conv products of the task's whole training loss
  (traced, not compiled; parameters from eval_shape) once the products that are not model
  FLOPs are added back: the three log-mels of the mel losses on the ``seg + 1`` frames of the
  window and, with MAS, the aligner's log-mel of the whole clip (mel filterbanks,
  ``2 hop + 1`` bins at n_fft 4 hop), and ``phone_pool``'s one-hot per-phoneme mean
  ``2 B F P H``."""
  cfg = build_config("configs/clone.py:tiny", overrides)
  task = CLONETask(cfg)
  batch = {k: jnp.asarray(v) for k, v in task.example_batch(2).items()}
  params = jax.eval_shape(task.init_params, jax.random.key(0), batch)["generator"]
  loss = lambda p, x: task.losses(p, x, jax.random.key(1), True)[0]
  traced = matmul_flops(jax.make_jaxpr(loss)(params, batch).jaxpr)
  m, (b, s), p = cfg.model, batch["audio"].shape, batch["phonemes"].shape[1]
  hop, bins = m.hop_length, 2 * m.hop_length + 1
  f, seg = s // hop, min(cfg.loss.segment_frames, s // hop)
  not_model = 3 * 2.0 * b * (seg + 1) * bins * cfg.loss.mel_bins + 2.0 * b * f * p * m.hidden
  if m.alignment == "mas":
    not_model += 2.0 * b * (s // hop + 1) * bins * m.aligner_mels
  assert traced == pytest.approx(flops.clone_forward(cfg, b, s, p) + not_model, rel=1e-9)


def test_clone_discriminators_count_equals_traced_products():
  """The paper preset's discriminators (DAC's periods, no STFT bands, 2 PQMF sub-bands) on a
  decoded window: exact once the PQMF analysis (a fixed filterbank, 63 taps per band output)
  is added back; and a HiFi-GAN transposed conv by hand (3 inputs, stride 2, K 8, padding 3:
  24 taps less 3 + 1 off each end)."""
  assert flops.conv_transpose1d(1, 3, 2, 1, 1, kernel=8, padding=3, output_padding=0) == 32
  dc = build_config("configs/clone.py:paper").discriminator
  disc = build_discriminators(dc)
  audio = jnp.zeros((4, 1600))
  params = jax.eval_shape(disc.init, jax.random.key(0), audio)["params"]
  traced = matmul_flops(jax.make_jaxpr(lambda q, x: disc.apply({"params": q}, x))(
      params, audio).jaxpr)
  pqmf = 2.0 * 4 * 800 * 2 * 63
  assert traced == pytest.approx(flops.discriminators_forward(dc, 4, 1600) + pqmf, rel=1e-9)


def test_clone_task_step_counts_three_forwards_and_the_gan():
  """3 F_G on the batch and 9 F_D on the ``2B`` decoded and real windows of ``seg hop``
  samples (both paths' windows, and the recording's twice, `CLONETask.losses`)."""
  cfg = build_config("configs/clone.py:tiny", ["--config.discriminator.enabled=True"])
  task = CLONETask(cfg)
  g = flops.clone_forward(cfg, 8, 48000, 96)
  d = flops.discriminators_forward(cfg.discriminator, 16, 8 * 200)
  shapes = {"audio": (8, 48000), "audio_len": (8,), "phonemes": (8, 96), "durations": (8, 96)}
  assert task.flops_per_step(shapes) == 3 * g + 9 * d
  assert CLONETask(build_config("configs/clone.py:tiny")).flops_per_step(shapes) == 3 * g
