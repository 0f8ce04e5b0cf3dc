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
  def fn(tokens, masked, conditional):
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
  total = 0
  for alpha, layers in ((1.0, 1), (0.0, 1), (1.0, 6)):
    for _ in range(layers):
      total += int(sampler.decode_level(_toy_logits([]), given, target, valid,
                                        jax.random.key(0), num_steps=4, mask_id=MASK,
                                        cfg_alpha=alpha).nfe)
  assert total == 60
