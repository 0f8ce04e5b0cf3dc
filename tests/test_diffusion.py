"""NaturalSpeech 3's masked discrete diffusion (`jaxtts.diffusion`): the schedule, the training
mask rules, the re-masking rule, guidance against NumPy, and the sampler's step and
function-evaluation counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtts.diffusion import masking, sampler


def test_mask_ratio_and_masked_counts():
  t = np.linspace(0.0, 1.0, 11)
  np.testing.assert_allclose(np.asarray(masking.mask_ratio(jnp.asarray(t))),
                             np.sin(np.pi * t / 2), atol=1e-6)
  lengths = jnp.array([0, 1, 7, 100])
  for s in range(4):
    want = np.floor(np.array([0, 1, 7, 100]) * np.sin(np.pi * (1 - (s + 1) / 4) / 2))
    np.testing.assert_array_equal(np.asarray(masking.num_masked_after(jnp.asarray(s), 4,
                                                                      lengths)), want)
  assert int(masking.num_masked_after(jnp.asarray(3), 4, lengths).max()) == 0


def test_training_masks_follow_the_layer_rules():
  """Prompt visible at all layers; below the drawn level visible, above it masked on the
  target; the level masked only on the target, at least once per row; padding never visible
  and never in the loss; the masked share follows σ(t)."""
  b, t_frames, q = 64, 40, 6
  rng = np.random.default_rng(0)
  lengths = jnp.asarray(rng.integers(2, t_frames + 1, b))
  prompts = jnp.asarray(rng.integers(0, 2, b) * rng.integers(0, 20, b)) % lengths
  m = masking.training_masks(jax.random.key(0), t_frames, q, lengths, prompts)
  visible, loss, level, t = (np.asarray(x) for x in m)
  lengths, prompts = np.asarray(lengths), np.asarray(prompts)
  i = np.arange(t_frames)
  shares = []
  for r in range(b):
    valid, prompt = i < lengths[r], i < min(prompts[r], lengths[r])
    target = valid & ~prompt
    assert not visible[r, ~valid].any() and not loss[r, ~valid].any()
    assert visible[r, prompt].all()
    assert visible[r][target][:, :level[r]].all()
    assert not visible[r][target][:, level[r] + 1:].any()
    np.testing.assert_array_equal(visible[r, :, level[r]], valid & ~loss[r])
    assert not loss[r, prompt].any() and loss[r].sum() >= 1
    shares.append((loss[r].sum() - 1) / max(target.sum() - 1, 1))
  assert 0.0 < t.min() and t.max() <= 1.0 and len(set(level.tolist())) > 3
  # The masked share rises with σ(t): correlation over the rows (64 rows, fixed seed).
  corr = np.corrcoef(np.sin(np.pi * t / 2), shares)[0, 1]
  assert corr > 0.8, corr  # 0.906 for this seed


def test_level_weights_choose_the_level():
  m = masking.training_masks(jax.random.key(1), 8, 3, jnp.full((256,), 8), jnp.zeros(256, int),
                             level_weights=jnp.array([0.0, 1.0, 0.0]))
  assert set(np.asarray(m.level).tolist()) == {1}


def test_remask_lowest_confidence_never_a_decoded_or_other_position():
  confidence = jnp.array([[0.5, 0.1, 0.9, 0.2, 0.3, 0.0]])
  decoded = jnp.array([[False, True, False, False, False, False]])
  target = jnp.array([[True, True, True, True, True, False]])
  again = np.asarray(masking.remask(confidence, decoded, target, jnp.array([2])))
  # Position 1 (decoded before) and 5 (not a target) are out, though least confident.
  np.testing.assert_array_equal(again[0], [False, False, False, True, True, False])
  assert not np.asarray(masking.remask(confidence, decoded, target, jnp.array([0]))).any()


def test_guidance_and_rescale_match_numpy():
  rng = np.random.default_rng(2)
  c, u = rng.standard_normal((2, 2, 5, 7)).astype(np.float32) * [[[[1.0]]], [[[3.0]]]]
  valid = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
  alpha, phi = 1.0, 0.75
  got = np.asarray(sampler.guided_logits(jnp.asarray(c), jnp.asarray(u), alpha, phi,
                                         jnp.asarray(valid)))
  for r in range(2):
    g = c[r] + alpha * (c[r] - u[r])
    rescaled = g * c[r][valid[r]].std() / g[valid[r]].std()
    np.testing.assert_allclose(got[r][valid[r]], (phi * rescaled + (1 - phi) * g)[valid[r]],
                               rtol=1e-5, atol=1e-5)
  plain = sampler.guided_logits(jnp.asarray(c), jnp.asarray(u), 2.0, 0.0, jnp.asarray(valid))
  np.testing.assert_allclose(np.asarray(plain), c + 2.0 * (c - u), rtol=1e-6)


def test_top_k_filter():
  x = jnp.array([[3.0, 1.0, 2.0, 0.0]])
  np.testing.assert_array_equal(np.isfinite(np.asarray(sampler.top_k_filter(x, 2))),
                                [[True, False, True, False]])


VOCAB, MASK = 11, 11


def _toy_logits(calls):
  """A fixed 'model' that prefers token (position mod VOCAB), logging each call's mask."""
  def fn(tokens, masked, t, conditional):
    calls.append((np.asarray(masked), conditional))
    pos = jnp.arange(tokens.shape[1]) % VOCAB
    shift = 0.0 if conditional else 1.0
    return 4.0 * jax.nn.one_hot((pos + int(shift)) % VOCAB, VOCAB)[None].repeat(
        tokens.shape[0], 0)
  return fn


@pytest.mark.parametrize("cfg_alpha", [0.0, 1.0])
def test_decode_level_decodes_everything_and_keeps_the_prompt(cfg_alpha):
  """Each step re-masks exactly ⌊N σ(t - Δt)⌋ positions, only undecoded target ones; after the
  last step every target position is decoded and the given tokens are untouched; one model
  call per step, two with guidance."""
  b, t_frames, steps = 3, 24, 4
  lengths = jnp.array([24, 17, 5])
  prompts = jnp.array([6, 0, 2])
  valid, _, target = masking.positions(t_frames, lengths, prompts)
  given = jnp.asarray(np.random.default_rng(3).integers(0, VOCAB, (b, t_frames)))
  calls = []
  with jax.disable_jit():  # the fori_loop runs step by step, so every model call is logged
    out = sampler.decode_level(_toy_logits(calls), given, target, valid, jax.random.key(4),
                               num_steps=steps, mask_id=MASK, top_k=3, temperature=1.5,
                               cfg_alpha=cfg_alpha)
  tokens, decoded_at = np.asarray(out.tokens), np.asarray(out.decoded_at)
  target = np.asarray(target)
  assert int(out.nfe) == steps * (2 if cfg_alpha else 1) == len(calls)
  np.testing.assert_array_equal(tokens[~target], np.asarray(given)[~target])
  assert (tokens[target] < VOCAB).all() and (decoded_at[target] < steps).all()
  assert (decoded_at[~target] == -1).all()
  n = target.sum(axis=1)
  cond_masks = [m for m, conditional in calls if conditional]
  for s in range(steps):
    want = np.floor(n * np.sin(np.pi * (1 - (s + 1) / steps) / 2))
    still = (decoded_at > s) & target
    np.testing.assert_array_equal(still.sum(axis=1), want)
    # What the model saw masked at step s: exactly the positions undecoded before it.
    np.testing.assert_array_equal(cond_masks[s], (decoded_at >= s) & target)


def test_paper_settings_make_sixty_function_evaluations():
  """NS3 A.2: phone-level prosody 4 steps with guidance, duration 4 without, 6 code layers x
  4 steps with guidance: 8 + 4 + 48 = 60."""
  t_frames = 8
  lengths, prompts = jnp.array([8]), jnp.array([2])
  valid, _, target = masking.positions(t_frames, lengths, prompts)
  given = jnp.zeros((1, t_frames), jnp.int32)
  total, calls = 0, []
  with jax.disable_jit():  # the step loops run in Python: every model call is counted
    for alpha, layers in ((1.0, 1), (0.0, 1), (1.0, 6)):
      for _ in range(layers):
        total += int(sampler.decode_level(_toy_logits(calls), given, target, valid,
                                          jax.random.key(0), num_steps=4, mask_id=MASK,
                                          cfg_alpha=alpha).nfe)
  assert total == len(calls) == 60


# ------------------------------------------------------------------ the network
from functools import partial  # noqa: E402

import flax.linen as nn  # noqa: E402
import optax  # noqa: E402

from jaxtts.diffusion.model import MaskedCodeTransformer, TimeEmbedding  # noqa: E402
from jaxtts.diffusion.objective import masked_diffusion_loss  # noqa: E402
from jaxtts.nn.attention import sinusoidal_embedding  # noqa: E402

B, T, C = 3, 12, 5
VOCABS = (7, 7, 4)


@pytest.fixture(scope="module")
def tiny_net():
  """A 2-layer network over three levels (the last with a smaller vocabulary), its
  parameters (moved off their zero/one init so every path is live) and one jitted apply."""
  net = MaskedCodeTransformer(VOCABS, dim=16, num_layers=2, num_heads=2, ffn_dim=24,
                              dropout=0.0, time_dim=8)
  rng = np.random.default_rng(5)
  inputs = dict(codes=jnp.asarray(rng.integers(0, 4, (B, T, 3))),
                visible=jnp.asarray(rng.random((B, T, 3)) < 0.5),
                level=jnp.array([0, 1, 2]), t=jnp.array([0.1, 0.5, 0.9]),
                condition=jnp.asarray(rng.standard_normal((B, T, C)), jnp.float32),
                mask=jnp.asarray(np.arange(T)[None] < np.array([[12], [9], [5]])))
  params = nn.meta.unbox(net.init(jax.random.key(0), **inputs))
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(1), p.shape),
                        params)
  apply = jax.jit(lambda p, x: net.apply(p, **x))
  return net, params, inputs, apply


def test_time_embedding_matches_numpy():
  emb = TimeEmbedding(8, time_scale=1000.0)  # the network's time embedding, with AdaCLN
  t = jnp.array([0.0, 0.25, 1.0])
  params = nn.meta.unbox(emb.init(jax.random.key(0), t))["params"]
  params = jax.tree.map(lambda p: p + 0.1, params)
  s = np.asarray(sinusoidal_embedding(1000.0 * t, 8))
  h = s @ np.asarray(params["hidden"]["kernel"]) + np.asarray(params["hidden"]["bias"])
  h = h / (1.0 + np.exp(-h))
  want = h @ np.asarray(params["out"]["kernel"]) + np.asarray(params["out"]["bias"])
  np.testing.assert_allclose(np.asarray(emb.apply({"params": params}, t)), want, rtol=1e-5,
                             atol=1e-6)


def test_logits_beyond_a_level_vocabulary_are_minus_infinity(tiny_net):
  _, params, inputs, apply = tiny_net
  logits = np.asarray(apply(params, inputs))
  assert logits.shape == (B, T, max(VOCABS))
  assert np.isfinite(logits[:2]).all()                    # levels 0, 1: all 7 codes
  assert np.isneginf(logits[2, :, 4:]).all() and np.isfinite(logits[2, :, :4]).all()


def test_hidden_codes_padding_and_a_dropped_prompt_do_not_reach_the_output(tiny_net):
  """Codes where not visible and frames past the length change nothing at valid frames; time
  and level do (AdaCLN and the level embedding); a dropped prompt's codes change nothing,
  a kept one's do."""
  _, params, inputs, apply = tiny_net
  base = np.asarray(apply(params, inputs))
  valid = np.asarray(inputs["mask"])
  hidden = dict(inputs, codes=jnp.where(inputs["visible"], inputs["codes"], 6))
  np.testing.assert_allclose(np.asarray(apply(params, hidden))[valid], base[valid], atol=1e-5)
  padded = dict(inputs, codes=jnp.where(valid[..., None], inputs["codes"], 5),
                condition=jnp.where(valid[..., None], inputs["condition"], 9.0))
  np.testing.assert_allclose(np.asarray(apply(params, padded))[valid], base[valid], atol=1e-5)
  for key, value in (("t", inputs["t"] + 0.3), ("level", jnp.array([1, 0, 2]))):
    assert np.abs(np.asarray(apply(params, dict(inputs, **{key: value})))[:2]
                  - base[:2])[valid[:2]].max() > 1e-3, key
  prompt = jnp.asarray(np.arange(T)[None] < 3).repeat(B, 0)
  visible = inputs["visible"] | prompt[..., None]
  other = jnp.where(prompt[..., None], (inputs["codes"] + 1) % 4, inputs["codes"])
  for drop, same in ((True, True), (False, False)):
    x = dict(inputs, visible=visible, prompt=prompt, drop_prompt=jnp.full((B,), drop))
    a = np.asarray(apply(params, x))
    b = np.asarray(apply(params, dict(x, codes=other)))
    target = valid & ~np.asarray(prompt)
    assert np.allclose(a[target], b[target], atol=1e-5) == same, drop


def test_tiny_training_reduces_the_masked_token_loss():
  """Codes that are a function of the condition (level l at frame i: (phone_i + l) mod 4):
  60 Adam steps on the objective bring the loss on fresh masks well below its start."""
  net = MaskedCodeTransformer((4, 4), dim=16, num_layers=1, num_heads=2, ffn_dim=16,
                              dropout=0.0, time_dim=8)
  rng = np.random.default_rng(6)
  phones = rng.integers(0, 4, (8, T))
  codes = jnp.asarray(np.stack([(phones + l) % 4 for l in range(2)], -1))
  condition = jax.nn.one_hot(jnp.asarray(phones), C)
  lengths, prompts = jnp.asarray(rng.integers(6, T + 1, 8)), jnp.asarray(rng.integers(0, 3, 8))

  def loss_fn(params, key):
    def apply(codes, visible, level, t, cond, mask, prompt, drop, _):
      return net.apply(params, codes, visible, level, t, cond, mask, prompt=prompt,
                       drop_prompt=drop)
    return masked_diffusion_loss(apply, codes, lengths, prompts, condition, key)

  params = nn.meta.unbox(net.init(jax.random.key(0), codes, codes > 0, jnp.zeros(8, int),
                                  jnp.zeros(8), condition, codes[..., 0] >= 0))
  opt = optax.adam(3e-2)
  opt_state = opt.init(params)

  @partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, key):
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, key)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  eval_loss = jax.jit(lambda p: jnp.mean(jnp.stack([
      loss_fn(p, jax.random.key(1000 + i))[0] for i in range(4)])))
  before = float(eval_loss(params))
  for i in range(60):
    params, opt_state, _ = step(params, opt_state, jax.random.key(i))
  after = float(eval_loss(params))
  assert after < 0.5 * before, (before, after)


# ------------------------------------------------------------------ phone-level pieces
from jaxtts.alignment import durations as durations_lib  # noqa: E402
from jaxtts.diffusion import phones  # noqa: E402


def test_duration_tokens_round_trip_and_count_clips():
  d = jnp.array([[0, 1, 5, 30, 31, 90]])
  tokens, clipped = phones.duration_tokens(d, 31)
  np.testing.assert_array_equal(np.asarray(tokens), [[0, 1, 5, 30, 31, 31]])
  assert int(clipped) == 1
  inside = jnp.asarray(np.random.default_rng(7).integers(0, 32, (4, 9)))
  np.testing.assert_array_equal(np.asarray(phones.duration_tokens(inside, 31)[0]),
                                np.asarray(inside))


def test_length_regulator_and_phone_pooling_against_loops():
  rng = np.random.default_rng(8)
  durations = rng.integers(0, 4, (3, 6))
  durations[1, 4:] = 0                                     # a row with padded phones
  x = rng.standard_normal((3, 6, 2)).astype(np.float32)
  h = rng.standard_normal((3, 20, 2)).astype(np.float32)
  got = np.asarray(durations_lib.length_regulate(jnp.asarray(x), jnp.asarray(durations), 20))
  pooled = np.asarray(durations_lib.phone_pool(jnp.asarray(h), jnp.asarray(durations)))
  for b in range(3):
    frames = [x[b, p] for p in range(6) for _ in range(durations[b, p])]
    want = np.zeros((20, 2), np.float32)
    want[:len(frames)] = frames
    np.testing.assert_allclose(got[b], want)
    start = 0
    for p in range(6):
      n = durations[b, p]
      mean = h[b, start:start + n].mean(0) if n else np.zeros(2)
      np.testing.assert_allclose(pooled[b, p], mean, rtol=1e-5, atol=1e-6)
      start += n


def test_decode_levels_in_order_with_the_training_visibility(tiny_net):
  """Three levels decoded with the tiny network: while level q is decoded the model sees
  levels below q everywhere, level q where decoded, levels above only in the prompt, at the
  step's time; the unconditional pass drops the prompt; prompt codes are kept; every target
  code is decoded; NFE = 2 x steps summed over levels."""
  net, params, inputs, apply = tiny_net
  valid = inputs["mask"]
  prompt = valid & jnp.asarray(np.arange(T)[None] < 2)
  calls = []

  def model_fn(codes, visible, level, t, drop):
    calls.append(tuple(np.asarray(x) for x in (visible, level, t, drop)))
    x = dict(inputs, codes=codes, visible=visible, level=level, t=t, prompt=prompt,
             drop_prompt=drop)
    return apply(params, x)

  steps = (2, 3, 2)
  with jax.disable_jit():  # every model call is logged (the step loops run in Python)
    out = sampler.decode_levels(model_fn, inputs["codes"], prompt, valid, jax.random.key(9),
                                num_steps=steps, mask_id=net.mask_id, top_k=3)
  codes, prompt_np, valid_np = np.asarray(out.tokens), np.asarray(prompt), np.asarray(valid)
  target = valid_np & ~prompt_np
  assert int(out.nfe) == 2 * sum(steps) == len(calls)
  np.testing.assert_array_equal(codes[prompt_np], np.asarray(inputs["codes"])[prompt_np])
  assert (np.asarray(out.decoded_at)[target] >= 0).all()
  for l, v in enumerate(VOCABS):
    assert (codes[..., l][target] < v).all()
  i = 0
  for q, n in enumerate(steps):
    for s in range(n):
      for conditional in (True, False):
        visible, level, t, drop = calls[i]
        i += 1
        assert (level == q).all() and np.allclose(t, 1 - s / n) and (drop == (not conditional)).all()
        np.testing.assert_array_equal(visible[..., :q], np.repeat(valid_np[..., None], q, -1))
        np.testing.assert_array_equal(visible[..., q + 1:],
                                      np.repeat(prompt_np[..., None], 2 - q, -1))
        decoded_before = (np.asarray(out.decoded_at)[..., q] < s) & target
        np.testing.assert_array_equal(visible[..., q], valid_np & ~(target & ~decoded_before))


# ------------------------------------------------------------------ paper sizes
def _stack(layers, d, heads_ffn, kernel, cond_dim=None):
  """Parameters of `jaxtts.nn.transformer.TransformerStack`: per block relative-position
  attention 5 D^2 + 6 D, conv-FFN 2 k D F + F + D, two norms; and a final norm (a plain
  LayerNorm 2 D, an AdaCLN from ``cond_dim`` 2 D (cond_dim + 1))."""
  norm = 2 * d if cond_dim is None else 2 * d * (cond_dim + 1)
  block = 5 * d * d + 6 * d + 2 * kernel * d * heads_ffn + heads_ffn + d + 2 * norm
  return layers * block + norm


def _masked(levels, vocab, d, layers, ffn, kernel, cond, dt):
  return (levels * (vocab + 1) * d + cond * d + d + levels * dt
          + dt * 4 * dt + 4 * dt + 4 * dt * dt + dt + levels * d * vocab + levels * vocab
          + _stack(layers, d, ffn, kernel, dt))


def test_paper_sizes_land_near_500m_parameters():
  """NS3 A.1 sizes (the module's defaults) counted part by part against the hand formulas above:
  phoneme encoder 121.2M (6 x 512, conv-FFN 2048 of kernel 9), phone-level diffusion 119.1M
  (6 x 1024), frame-level diffusion 240.8M (12 x 1024), 481.1M in all with 100 phonemes:
  within 5 % of the paper's ~500M."""
  from jaxtts.diffusion.ns3 import NS3
  model = NS3(num_phones=100)
  b, p, t = 1, 8, 32
  args = (jnp.zeros((b, p), int), jnp.ones((b, p), bool), jnp.zeros((b, p, 2), int),
          jnp.full((b, p), 4), jnp.zeros((b, t, 6), int), jnp.ones((b, t), bool))
  shapes = nn.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), *args)))
  count = {k: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(v))
           for k, v in shapes["params"].items()}
  want = {"phone_embedding": 100 * 512,
          "phoneme_encoder": _stack(6, 512, 2048, 9),
          "phone_diffusion": _masked(2, 1024, 1024, 6, 2048, 3, 512, 256),
          "frame_diffusion": _masked(6, 1024, 1024, 12, 2048, 3, 512, 256)}
  assert count == want
  assert abs(sum(count.values()) - 500e6) < 0.05 * 500e6, sum(count.values())


def test_level_scan_matches_the_python_loop_over_levels(tiny_net):
  """Uniform steps and guidance: the fori_loop over a traced level (one compiled body)
  decodes exactly what the Python loop over levels does, with the same keys."""
  net, params, inputs, apply = tiny_net
  valid = inputs["mask"]
  prompt = valid & jnp.asarray(np.arange(T)[None] < 3)

  def model_fn(codes, visible, level, t, drop):
    return apply(params, dict(inputs, codes=codes, visible=visible, level=level, t=t,
                              prompt=prompt, drop_prompt=drop))

  runs = [jax.jit(lambda c, scan=scan: sampler.decode_levels(
      model_fn, c, prompt, valid, jax.random.key(3), num_steps=2, mask_id=net.mask_id,
      top_k=3, scan_levels=scan))(inputs["codes"]) for scan in (True, False)]
  for a, b in zip(*runs):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(runs[0].nfe) == 3 * 2 * 2
