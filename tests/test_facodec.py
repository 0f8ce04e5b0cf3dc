"""The FACodec generator (`jaxtts.codec.facodec`): codes and timbre in, audio out; the
ablation switches; detail dropout."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtts.codec.facodec import FACodec

# The STFT encoder and Vocos head compile in a fraction of the DAC convolutions' time.
SMALL = dict(encoder_dim=4, encoder_strides=(8, 25), hidden_dim=16, decoder_dim=16,
             codebook_size=32, timbre_layers=1, timbre_heads=2, timbre_ffn_dim=32, num_phones=5,
             num_speakers=3, encoder_type="vocos", decoder_type="vocos", vocos_dim=16,
             vocos_intermediate_dim=24, vocos_layers=2, spectral_encoder_dim=16,
             spectral_encoder_intermediate_dim=24, spectral_encoder_layers=1)


def _audio(batch=2, samples=1600, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(samples) / 16000.0
  return jnp.asarray(np.stack([0.3 * np.sin(2 * np.pi * (120 + 30 * i) * t)
                               + 0.02 * rng.standard_normal(samples) for i in range(batch)]),
                     jnp.float32)


@pytest.fixture(scope="module")
def codec():
  model = FACodec(**SMALL)
  audio = _audio()
  variables = nn.meta.unbox(jax.jit(model.init)({"params": jax.random.key(1)}, audio))
  return model, variables, audio


def test_encode_decode_equals_the_forward_reconstruction(codec):
  """codes [B, F, 6] in the paper's order and timbre [B, H]; decode(encode(x)) is the
  (eval-mode) forward's reconstruction; decode checks the codebook count."""
  model, variables, audio = codec
  enc = jax.jit(lambda v, x: model.apply(v, x, method=FACodec.encode))(variables, audio)
  assert enc["codes"].shape == (2, 8, 6) and enc["codes"].dtype == jnp.int32
  assert enc["timbre"].shape == (2, 16)
  assert int(enc["codes"].min()) >= 0 and int(enc["codes"].max()) < 32
  out = jax.jit(lambda v, x: model.apply(v, x))(variables, audio)
  np.testing.assert_array_equal(np.asarray(out["codes"]), np.asarray(enc["codes"]))
  np.testing.assert_array_equal(np.asarray(out["branch_codes"]["content"]),
                                np.asarray(enc["codes"][..., 1:3]))
  wav = jax.jit(lambda v, c, t: model.apply(v, c, t, method=FACodec.decode))(
      variables, enc["codes"], enc["timbre"])
  np.testing.assert_allclose(np.asarray(wav), np.asarray(out["reconstruction"]), atol=1e-6)
  with pytest.raises(ValueError, match=r"codes must be \[B, F, 6\]"):
    model.apply(variables, enc["codes"][..., :3], enc["timbre"], method=FACodec.decode)


def test_timbre_changes_the_output_through_the_conditional_norm(codec):
  """Swapping the timbre vectors of two utterances changes their decoded audio once the
  conditional norm's map is not zero (at init it is: γ = 1, β = 0 for any timbre)."""
  model, variables, audio = codec
  enc = model.apply(variables, audio, method=FACodec.encode)
  swap = enc["timbre"][::-1]
  decode = lambda v, t: model.apply(v, enc["codes"], t, method=FACodec.decode)  # noqa: E731
  np.testing.assert_allclose(np.asarray(decode(variables, swap)),
                             np.asarray(decode(variables, enc["timbre"])), atol=1e-6)
  params = jax.tree.map(lambda x: x, variables["params"])
  kernel = params["timbre_norm"]["scale_shift"]["kernel"]
  params["timbre_norm"]["scale_shift"]["kernel"] = jax.random.normal(jax.random.key(5),
                                                                      kernel.shape)
  moved = {"params": params}
  assert float(jnp.abs(decode(moved, swap) - decode(moved, enc["timbre"])).max()) > 1e-4


def test_detail_dropout_drops_whole_utterances_at_its_rate(codec):
  """With p = 0.75, an utterance's train-mode reconstruction either equals the one decoded
  without detail codes (dropped) or the eval-mode one (kept), never a mix; over 256
  utterances the dropped share is 0.75 within 5 binomial standard deviations."""
  model, variables, _ = codec
  assert model.detail_dropout == 0.75
  audio = _audio(batch=256, samples=400, seed=1)
  run = jax.jit(lambda v, x, k: model.apply(v, x, train=True, rngs={"dropout": k}))
  train = np.asarray(run(variables, audio, jax.random.key(7))["reconstruction"])
  kept = np.asarray(jax.jit(lambda v, x: model.apply(v, x))(variables, audio)["reconstruction"])

  def without_detail(m, x):
    q = m.quantize(x)
    return m.decoder(m.combine(q["prosody"]["quantized"], q["content"]["quantized"], None,
                               q["timbre"]))
  dropped = np.asarray(jax.jit(lambda v, x: model.apply(v, x, method=without_detail))(
      variables, audio))
  is_dropped = np.all(np.isclose(train, dropped, atol=1e-6), axis=1)
  is_kept = np.all(np.isclose(train, kept, atol=1e-6), axis=1)
  assert np.all(is_dropped ^ is_kept)
  assert abs(is_dropped.mean() - 0.75) < 5 * np.sqrt(0.75 * 0.25 / 256)


def test_ablation_switches_change_the_parameters():
  """No bottleneck: codebooks in the hidden space and no projections; no detail codebooks:
  3 codes per frame; the released V2 prosody input: a log-mel front end."""
  audio = _audio(samples=800)
  init = lambda **kw: nn.meta.unbox(jax.eval_shape(  # noqa: E731
      FACodec(**{**SMALL, **kw}).init, {"params": jax.random.key(0)}, audio))["params"]
  p = init(encoder_type="dac", decoder_type="dac")  # the paper's DAC encoder and decoder
  assert "conv_in" in p["encoder"] and "block_1" in p["decoder"]
  p = init(bottleneck=False)
  assert p["content_vq"]["vq_0"]["codebook"].shape == (32, 16)
  assert "in_proj" not in p["content_vq"]["vq_0"]
  assert init()["content_vq"]["vq_1"]["codebook"].shape == (32, 8)
  p = init(num_detail_quantizers=0)
  assert "detail_vq" not in p and "grl_detail_phone_head" not in p
  p = init(prosody_input="mel20")
  assert p["prosody_in"]["kernel"].shape == (20, 16)
  with pytest.raises(ValueError, match="prosody_input"):
    init(prosody_input="pitch")


def test_phone_prosody_codes_pool_the_prosody_input_then_quantize(codec):
  """NS3 §3.3.1's phone-level prosody codes against a NumPy pooling of the prosody branch's
  input and the cosine lookup of its codebook (unnormalised codes: ``normalize_codes`` off)."""
  model, variables, audio = codec
  durations = jnp.array([[2, 0, 3, 1], [1, 1, 1, 0]])
  got = np.asarray(jax.jit(lambda v, a, d: model.apply(v, a, d, method=model.phone_prosody_codes))(
      variables, audio, durations))
  h = np.asarray(model.apply(variables, audio, method=lambda m, a: m.encoder(m._pad(a))))
  vq = variables["params"]["prosody_vq"]["vq_0"]
  book = np.asarray(vq["codebook"])
  book = book / np.linalg.norm(book, axis=-1, keepdims=True)
  for b in range(2):
    start = 0
    for p, n in enumerate(np.asarray(durations[b])):
      mean = h[b, start:start + n].mean(0) if n else np.zeros(h.shape[-1], np.float32)
      start += n
      z = mean @ np.asarray(vq["in_proj"]["kernel"]) + np.asarray(vq["in_proj"]["bias"])
      # A zero vector (a phone of no frames, zero bias at init) has every cosine 0: code 0.
      norm = np.linalg.norm(z)
      want = np.argmax(book @ (z / norm)) if norm > 0 else 0
      assert got[b, p, 0] == want, (b, p)
