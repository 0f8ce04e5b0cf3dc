"""Monotonic alignment search: our lax.scan pair vs the Cython kernel vs a NumPy loop; JSON.

    python benchmarks/mas.py [--batch 16 --text 128 512 1024 --frames-per-phoneme 4 --repeats 5]

All run in one process on the same log-likelihoods ``L [B, F, T]`` (standard normal, every row
unpadded, ``F = 4 T``: the Super-MAS benchmark shapes), and their paths are compared.

* ``ours_ms``: `jaxtts.alignment.mas.monotonic_alignment_search`, jitted (compile excluded), on
  ``L`` already on the device in its frame-major layout ``[B, F, T]``, to the phoneme index per
  frame and the dense path ``[B, F, T]`` (float32), the same output the Cython kernel writes.
* ``ours_index_ms``: the same search to the phoneme index per frame only (no dense path), the
  output of the NumPy loop.
* ``ours_text_major_ms``: the same from ``L`` in the Cython kernel's text-major layout
  ``[B, T, F]``, the transpose inside the jitted function.
* ``cython_kernel_ms``: ``monotonic_alignment_search.core.maximum_path_c`` (the Glow-TTS / VITS
  kernel, OpenMP over the batch) on a contiguous float32 ``[B, T, F]`` NumPy array and a zeroed
  int32 path, allocated inside the timing as its wrapper does.
* ``cython_api_ms``: the package's ``maximum_path_cython(value, mask)`` on torch tensors, as a
  VITS training loop calls it (mask product and copies included).
* ``numpy_ms``: `mas.monotonic_alignment_search_reference`, a NumPy loop over frames.

``identical_paths`` is whether ours and the Cython kernel put every frame on the same phoneme.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxtts.alignment import mas  # noqa: E402


def median_ms(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1e3 * float(np.median(times))


@jax.jit
def ours(ll, frames, texts):
  index = mas.monotonic_alignment_search(ll, frames, texts)
  return index, mas.alignment_path(index, ll.shape[-1])


@jax.jit
def ours_text_major(ll_tf, frames, texts):
  return ours(jnp.swapaxes(ll_tf, 1, 2), frames, texts)


def bench(b: int, t: int, f: int, repeats: int, numpy_repeats: int) -> dict:
  import torch
  from monotonic_alignment_search import maximum_path_cython
  from monotonic_alignment_search.core import maximum_path_c

  rng = np.random.default_rng(t)
  ll = rng.standard_normal((b, f, t), dtype=np.float32)                            # [B, F, T]
  ll_tf = np.ascontiguousarray(np.swapaxes(ll, 1, 2))                              # [B, T, F]
  frames, texts = np.full(b, f, np.int32), np.full(b, t, np.int32)

  dev = [jax.device_put(x) for x in (ll, frames, texts)]
  dev_tf = jax.device_put(ll_tf)
  jax.block_until_ready(ours(*dev))
  jax.block_until_ready(ours_text_major(dev_tf, *dev[1:]))
  ours_ms = median_ms(lambda: jax.block_until_ready(ours(*dev)), repeats)
  index_only = jax.jit(mas.monotonic_alignment_search)
  jax.block_until_ready(index_only(*dev))
  ours_index_ms = median_ms(lambda: jax.block_until_ready(index_only(*dev)), repeats)
  ours_tf_ms = median_ms(lambda: jax.block_until_ready(ours_text_major(dev_tf, *dev[1:])), repeats)

  def cython_kernel():
    path = np.zeros(ll_tf.shape, np.int32)
    maximum_path_c(path, ll_tf.copy(), texts, frames)   # the kernel overwrites its values
    return path

  cython_ms = median_ms(cython_kernel, repeats)
  value, mask = torch.from_numpy(ll_tf), torch.ones(ll_tf.shape)
  cython_api_ms = median_ms(lambda: maximum_path_cython(value, mask), repeats)
  numpy_ms = median_ms(lambda: mas.monotonic_alignment_search_reference(ll, frames, texts),
                       numpy_repeats)

  index = np.asarray(ours(*dev)[0])
  cython_index = np.argmax(cython_kernel(), axis=1)
  numpy_index = mas.monotonic_alignment_search_reference(ll, frames, texts)
  return {
      "batch": b, "text": t, "frames": f,
      "ours_ms": round(ours_ms, 2), "ours_index_ms": round(ours_index_ms, 2),
      "ours_text_major_ms": round(ours_tf_ms, 2),
      "cython_kernel_ms": round(cython_ms, 2), "cython_api_ms": round(cython_api_ms, 2),
      "numpy_ms": round(numpy_ms, 2),
      "speedup_vs_cython_kernel": round(cython_ms / ours_ms, 2),
      "identical_paths": bool(np.array_equal(index, cython_index)),
      "identical_to_numpy": bool(np.array_equal(index, numpy_index)),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--text", type=int, nargs="+", default=[128, 512, 1024])
  parser.add_argument("--frames-per-phoneme", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--numpy-repeats", type=int, default=2)
  args = parser.parse_args()
  rows = [bench(args.batch, t, args.frames_per_phoneme * t, args.repeats, args.numpy_repeats)
          for t in args.text]
  print(json.dumps({
      "benchmark": "mas", "backend": jax.default_backend(), "devices": jax.device_count(),
      "cpu_count": os.cpu_count(), "machine": platform.machine(), "jax": jax.__version__,
      "results": rows}, indent=1))


if __name__ == "__main__":
  main()
