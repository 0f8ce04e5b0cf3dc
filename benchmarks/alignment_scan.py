"""Monotonic-alignment recurrence: jitted ``lax.scan`` vs per-frame Python loops; one JSON line.

    python benchmarks/alignment_scan.py [--batch 16 --frames 1024 --phonemes 256 --repeats 10]

Objective (GMM-LM §3.3, Algorithm 1 steps 2-8): ``e [B, I, J]`` -> ``sample_stay`` (st_gumbel,
eqs. 10-11) -> alignment recurrence -> ``sum(alignment_context(alpha, Y) * W)``. Timed:

* ``scan_fwd_bwd_ms``: ``jax.jit(jax.value_and_grad(objective))`` with ``monotonic_alignment``
  (compile excluded).
* ``loop_jax_eager_fwd_bwd_ms``: the same objective and ``jax.value_and_grad``, not jitted, with
  the recurrence as a Python loop over frames calling ``alignment_step`` (JAX ops dispatched
  eagerly, one step at a time; its first call, which compiles the per-op kernels, is excluded).
* ``scan_fwd_ms`` vs ``loop_numpy_fwd_ms``: forward alignment only, jitted scan vs
  ``monotonic_alignment_reference`` (NumPy loop over rows and frames), on the same ``u``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxtts.alignment import monotonic as mono  # noqa: E402


def loop_alignment(u: jax.Array, phoneme_mask: jax.Array) -> jax.Array:
  """``monotonic_alignment`` as a Python loop of ``alignment_step`` calls; ``[B, I, J]``."""
  alpha = mono.initial_alignment(phoneme_mask)
  out = []
  for u_i in jnp.split(u, u.shape[1], axis=1):  # one op (per-index slicing compiles per i)
    alpha = mono.alignment_step(alpha, u_i[:, 0], phoneme_mask)
    out.append(alpha)
  return jnp.stack(out, axis=1)


def _time(fn, repeats: int):
  """(mean milliseconds per call of ``fn`` after one untimed warm-up call, last result)."""
  out = jax.block_until_ready(fn())
  t0 = time.perf_counter()
  for _ in range(repeats):
    out = jax.block_until_ready(fn())
  return 1e3 * (time.perf_counter() - t0) / repeats, out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--frames", type=int, default=1024)
  parser.add_argument("--phonemes", type=int, default=256)
  parser.add_argument("--dim", type=int, default=256, help="phoneme feature size D")
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--loop-repeats", type=int, default=2)
  parser.add_argument("--temperature", type=float, default=1.0)
  args = parser.parse_args(argv)
  b, i, j, d = args.batch, args.frames, args.phonemes, args.dim
  rng = np.random.default_rng(0)
  lengths = rng.integers(max(1, j // 2), j + 1, size=b)
  mask = jnp.asarray(np.arange(j)[None, :] < lengths[:, None])
  # mean stay ~ frames / phonemes so paths cross the utterance (logit(1 - J / I))
  stay = max(1.0 - j / i, 0.5)
  e = jnp.asarray(rng.standard_normal((b, i, j)) + np.log(stay / (1 - stay)), jnp.float32)
  feats = jnp.asarray(rng.standard_normal((b, j, d)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((b, i, d)), jnp.float32)
  key = jax.random.PRNGKey(0)

  def objective(e, key, mask, feats, w, align_fn):  # arrays as arguments: no constant folding
    u = mono.sample_stay(key, e, args.temperature, mode="st_gumbel")
    return jnp.sum(mono.alignment_context(align_fn(u, mask), feats) * w)

  inputs = (e, key, mask, feats, w)
  scan_vg = jax.jit(jax.value_and_grad(
      lambda *a: objective(*a, align_fn=mono.monotonic_alignment)))
  t0 = time.perf_counter()
  jax.block_until_ready(scan_vg(*inputs))
  compile_s = time.perf_counter() - t0
  scan_ms, (v_scan, g_scan) = _time(lambda: scan_vg(*inputs), args.repeats)
  loop_vg = jax.value_and_grad(lambda *a: objective(*a, align_fn=loop_alignment))
  loop_ms, (v_loop, g_loop) = _time(lambda: loop_vg(*inputs), args.loop_repeats)

  u = jax.jit(lambda k, e: mono.sample_stay(k, e, args.temperature))(key, e)
  scan_fwd = jax.jit(mono.monotonic_alignment)
  scan_fwd_ms, alpha = _time(lambda: scan_fwd(u, mask), args.repeats)
  u_np, mask_np = np.asarray(u), np.asarray(mask)
  numpy_ms, alpha_np = _time(lambda: mono.monotonic_alignment_reference(u_np, mask_np),
                             args.loop_repeats)
  alpha = np.asarray(alpha)
  stats = mono.alignment_stats(alpha, jnp.ones((b, i), bool), mask)
  dev = jax.devices()[0]
  print(json.dumps({
      "benchmark": "alignment_scan", "platform": dev.platform, "device_kind": dev.device_kind,
      "batch": b, "frames": i, "phonemes": j, "dim": d, "mode": "st_gumbel",
      "scan_compile_seconds": round(compile_s, 2),
      "scan_fwd_bwd_ms": round(scan_ms, 3),
      "loop_jax_eager_fwd_bwd_ms": round(loop_ms, 3),
      "fwd_bwd_speedup": round(loop_ms / scan_ms, 1),
      "scan_fwd_ms": round(scan_fwd_ms, 3),
      "loop_numpy_fwd_ms": round(numpy_ms, 3),
      "fwd_speedup": round(numpy_ms / scan_fwd_ms, 1),
      "baselines": "loop_jax_eager_fwd_bwd: un-jitted jax.value_and_grad through a Python loop "
                   "of alignment_step (one JAX dispatch per op per frame); loop_numpy_fwd: "
                   "monotonic_alignment_reference, NumPy, forward only",
      "scan_matches_loop": bool(np.array_equal(alpha, alpha_np)
                                and np.allclose(g_scan, g_loop, rtol=1e-4, atol=1e-4)
                                and np.isclose(v_scan, v_loop, rtol=1e-5)),
      "reached_end": round(float(stats["reached_end"]), 3),
      "visited_fraction": round(float(stats["visited_fraction"]), 3),
      "repeats": args.repeats, "loop_repeats": args.loop_repeats}))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
