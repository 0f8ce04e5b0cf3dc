"""GMM-LM autoregressive decoding real-time factor (`jaxtts.gmm_lm.decode.generate`); one JSON line.

    python benchmarks/gmm_lm_decode.py [--config configs/gmm_lm.py:tiny] [--config.a.b=value ...] \
        [--seconds 10 --prompt-seconds 3 --phonemes-per-second 12 --batch 1 --repeats 3]

The preset's model with randomly initialised parameters (``model.init`` with rngs
``{"params", "alignment"}``, as `GMMLMTask.init_params`), a prompt of ``--prompt-seconds`` of
random latents and ``--phoneme-slack`` x ``--phonemes-per-second`` x (prompt + target seconds)
random phoneme ids. ``max_frames`` = ``--seconds`` x frame rate; ``stop_threshold=1.1`` so the
stop logit never ends a row. A row can still end early when its alignment passes the last
phoneme (``stopped_by.passed_end``): the random init advances about every 6.5 frames (tiny
preset, st_gumbel), so at the tiny preset's 80 frames/s the realistic 12 phonemes/s
(``--phoneme-slack 1``) runs out of text before ``max_frames``; the default slack 1.5 leaves a
margin. The RTF is computed from the frames actually produced (``lengths``) either way.

Timing: `generate` is compiled ahead of time (``compile_seconds``), called once untimed, then
``--repeats`` times with fresh keys, each ended by ``jax.block_until_ready``:

* ``rtf`` = wall seconds / audio seconds produced (``sum(lengths) / frame_rate`` over the
  batch); < 1 is faster than real time. ``audio_seconds_per_sec`` = 1 / rtf.
* ``latency_rtf`` = wall seconds / the longest row's audio seconds (what one request in the
  batch waits per second of its speech; equals ``rtf`` for ``--batch 1``).
* ``frames_per_sec``: decoded frames per second per row (steps of the while loop / wall).
* ``prefill_seconds``: `GMMLM.prefill` alone (prompt + text into the KV cache and alignment
  state), jitted separately; included in the `generate` wall time.
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

from jaxtts.gmm_lm import decode as decode_lib  # noqa: E402
from jaxtts.gmm_lm import stacking  # noqa: E402
from jaxtts.gmm_lm.model import GMMLM  # noqa: E402
from jaxtts.gmm_lm.model import from_config  # noqa: E402
from jaxtts.nn.dtypes import DTYPES  # noqa: E402
from jaxtts.train import config as config_lib  # noqa: E402
from jaxtts.train.state import count_params  # noqa: E402


def main(argv=None) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", default="configs/gmm_lm.py:tiny")
  parser.add_argument("--seconds", type=float, default=10.0, help="speech to generate per row")
  parser.add_argument("--prompt-seconds", type=float, default=3.0)
  parser.add_argument("--phonemes-per-second", type=float, default=12.0)
  parser.add_argument("--phoneme-slack", type=float, default=1.5,
                      help="phonemes = slack x rate x (prompt + target seconds): extra text so "
                           "the random-init alignment does not pass the end (1 = realistic)")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                      help="compute dtype (default: the config's train.compute_dtype)")
  parser.add_argument("--stay-mode", choices=("st_gumbel", "threshold"), default=None,
                      help="alignment decisions (default: the config's synthesis.stay_mode)")
  parser.add_argument("--seed", type=int, default=0)
  args, rest = parser.parse_known_args(argv)
  overrides = list(rest)
  if args.dtype:
    overrides.append(f"--config.train.compute_dtype={args.dtype}")
  cfg = config_lib.build_config(args.config, overrides)
  model = from_config(cfg, dropout=0.0)
  stay_mode = args.stay_mode or cfg.synthesis.stay_mode
  # Decoder steps of model.frames_per_step codec frames each: "frames" below are steps.
  r = stacking.frames_per_step(cfg)
  frame_rate = cfg.data.sample_rate / cfg.model.latent_hop / r
  b, d = args.batch, int(cfg.model.latent_dim) * r
  p = max(1, int(round(args.prompt_seconds * frame_rate)))
  max_frames = max(1, int(round(args.seconds * frame_rate)))
  j = max(2, int(round(args.phoneme_slack * args.phonemes_per_second
                        * (args.prompt_seconds + args.seconds))))

  rng = np.random.default_rng(args.seed)
  prompt = jnp.asarray(rng.standard_normal((b, p, d)), jnp.float32)
  prompt_len = jnp.full((b,), p, jnp.int32)
  phonemes = jnp.asarray(rng.integers(2, cfg.model.vocab_size, size=(b, j)), jnp.int32)
  phoneme_len = jnp.full((b,), j, jnp.int32)

  k_params, k_align = jax.random.split(jax.random.PRNGKey(args.seed))
  init = jax.jit(lambda kp, ka: model.init({"params": kp, "alignment": ka}, prompt[:1, :8],
                                           jnp.ones((1, 8), bool), phonemes[:1, :8],
                                           jnp.ones((1, 8), bool)))
  params = init(k_params, k_align)["params"]

  kwargs = dict(max_frames=max_frames, weight_temperature=cfg.synthesis.weight_temperature,
                scale_temperature=cfg.synthesis.scale_temperature, stop_threshold=1.1,
                stay_mode=stay_mode)
  call_args = (model, params, prompt, prompt_len, phonemes, phoneme_len)
  t0 = time.perf_counter()
  compiled = decode_lib.generate.lower(*call_args, jax.random.PRNGKey(0), **kwargs).compile()
  compile_s = time.perf_counter() - t0
  dynamic = {k: v for k, v in kwargs.items() if k not in ("max_frames", "stay_mode")}
  run = lambda key: compiled(*call_args[1:], key, **dynamic)  # static args are baked in

  out = jax.block_until_ready(run(jax.random.PRNGKey(1)))  # warm-up
  wall, frames, longest, stopped = 0.0, 0, 0, []
  for r in range(args.repeats):
    key = jax.random.PRNGKey(100 + r)
    t0 = time.perf_counter()
    out = jax.block_until_ready(run(key))
    wall += time.perf_counter() - t0
    lengths = np.asarray(out["lengths"])
    frames += int(lengths.sum())
    longest += int(lengths.max())
    stopped += np.asarray(out["stopped_by"]).tolist()
  if not np.isfinite(np.asarray(out["frames"])).all():
    raise SystemExit("generate produced non-finite frames")

  # Prefill alone: the same decode-mode clone and zeroed KV cache `generate` builds.
  dec = model.clone(decode=True, dropout=0.0)
  zero_cache = decode_lib._zero_cache  # pylint: disable=protected-access

  def prefill(params, prompt, prompt_len, phonemes, phoneme_len, key):
    mask = jnp.arange(phonemes.shape[1])[None, :] < phoneme_len[:, None]
    cache = zero_cache(dec, b, p + 1 + max_frames, d, j)
    out, upd = dec.apply({"params": params, "cache": cache}, prompt, prompt_len, phonemes,
                         mask, stay_mode, method=GMMLM.prefill, rngs={"alignment": key},
                         mutable=["cache"])
    return out["alpha"], out["mixture"], upd["cache"]

  pre_args = (params, prompt, prompt_len, phonemes, phoneme_len, jax.random.PRNGKey(2))
  pre = jax.jit(prefill).lower(*pre_args).compile()
  jax.block_until_ready(pre(*pre_args))
  t0 = time.perf_counter()
  for _ in range(args.repeats):
    jax.block_until_ready(pre(*pre_args))
  prefill_s = (time.perf_counter() - t0) / args.repeats

  dev = jax.devices()[0]
  audio_s = frames / frame_rate
  print(json.dumps({
      "benchmark": "gmm_lm_decode", "config": args.config, "overrides": rest,
      "platform": dev.platform, "device_kind": dev.device_kind, "devices": jax.device_count(),
      "compute_dtype": cfg.train.compute_dtype, "stay_mode": stay_mode,
      "params": count_params(params), "latent_dim": d, "frames_per_step": r,
      "step_rate": frame_rate,
      "batch": b, "prompt_frames": p, "phonemes": j, "max_frames": max_frames,
      "compile_seconds": round(compile_s, 2), "repeats": args.repeats,
      "generated_frames_per_row": round(frames / (b * args.repeats), 1),
      "stopped_by": {name: stopped.count(code) for code, name in
                     ((0, "stop_logit"), (1, "passed_end"), (2, "max_frames"))},
      "wall_seconds": round(wall / args.repeats, 4),
      "prefill_seconds": round(prefill_s, 5),
      "rtf": round(wall / audio_s, 5),
      "latency_rtf": round(wall / (longest / frame_rate), 5),
      "audio_seconds_per_sec": round(audio_s / wall, 3),
      "frames_per_sec": round(longest / wall, 1)}))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
