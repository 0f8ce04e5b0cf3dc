"""Codec encode/decode real-time factor (GMM-VAE or FACodec); prints one JSON line.

    python benchmarks/codec_rtf.py --config configs/gmm_vae.py:tiny [--config.a.b=value ...] \
        [--seconds 10 --batch 1 --repeats 5 --dtype bfloat16]
    python benchmarks/codec_rtf.py --config configs/facodec.py:espeak [--seconds 10 ...]
    python benchmarks/codec_rtf.py --workdir DIR [--step N] [--seconds 10 ...]

``--config``: the preset's generator with randomly initialised parameters
(the family's ``from_config``, ``model.init``); ``--workdir``: a trained `jaxtts-train`
codec workdir loaded through `jaxtts.codec.registry.load_codec` (its model and evaluation
parameters; the batched encode/decode below are jitted here, not `Codec.encode`, which takes
one utterance at a time). Input: ``--batch`` utterances of ``--seconds`` of noise (rounded up
to whole hops); decode runs on the encoder's latents (FACodec: its codes and timbre).

Figures (each jitted program compiled ahead of time, compile time reported separately, one
untimed warm-up call, then ``--repeats`` calls each ended by ``jax.block_until_ready``):

* ``encode_rtf`` / ``decode_rtf``: wall seconds per call / audio seconds in the call
  (``batch * seconds``); < 1 is faster than real time. ``*_audio_seconds_per_sec`` = 1 / rtf.
* ``*_latency_seconds``: wall seconds per call (the whole batch).
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

from jaxtts.codec import facodec, gmm_vae  # noqa: E402
from jaxtts.codec.registry import load_codec  # noqa: E402
from jaxtts.nn.dtypes import DTYPES  # noqa: E402
from jaxtts.train import config as config_lib  # noqa: E402
from jaxtts.train.state import count_params  # noqa: E402


def _time(fn, repeats: int):
  """(mean seconds per call of ``fn`` after one untimed warm-up call, last result)."""
  out = jax.block_until_ready(fn())
  t0 = time.perf_counter()
  for _ in range(repeats):
    out = jax.block_until_ready(fn())
  return (time.perf_counter() - t0) / repeats, out


def _load(args, rest):
  """(model, generator params, sample_rate, source description)."""
  if args.workdir:
    if rest:
      raise SystemExit(f"--workdir takes no config overrides, got {rest}")
    codec = load_codec(args.workdir, args.step)
    model, params = codec.model, codec.params
    if args.dtype:
      model = model.clone(dtype=DTYPES[args.dtype])
    return model, params, codec.sample_rate, {"workdir": os.path.abspath(args.workdir)}
  overrides = list(rest)
  if args.dtype:
    overrides.append(f"--config.train.compute_dtype={args.dtype}")
  cfg = config_lib.build_config(args.config, overrides)
  builders = {"gmm_vae": gmm_vae.from_config, "facodec": facodec.from_config}
  if cfg.task not in builders:
    raise SystemExit(f"--config {args.config}: task {cfg.task!r} is not a codec")
  model = builders[cfg.task](cfg)
  t = model.hop_length
  params = jax.jit(model.init)(jax.random.PRNGKey(args.seed), jnp.zeros((1, t)))["params"]
  return model, params, int(cfg.data.sample_rate), {"config": args.config, "overrides": rest}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", default="configs/gmm_vae.py:tiny")
  parser.add_argument("--workdir", default=None, help="trained gmm_vae workdir (else --config)")
  parser.add_argument("--step", type=int, default=None, help="--workdir checkpoint step")
  parser.add_argument("--seconds", type=float, default=10.0, help="audio per utterance")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                      help="compute dtype (default: the config's train.compute_dtype)")
  parser.add_argument("--seed", type=int, default=0)
  args, rest = parser.parse_known_args(argv)
  model, params, sample_rate, source = _load(args, rest)
  hop = model.hop_length
  frames = max(1, -(-int(round(args.seconds * sample_rate)) // hop))
  samples = frames * hop
  audio_seconds = args.batch * samples / sample_rate
  wav = jax.random.uniform(jax.random.PRNGKey(args.seed + 1), (args.batch, samples),
                           jnp.float32, -0.5, 0.5)

  encode = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode))
  discrete = isinstance(model, facodec.FACodec)
  if discrete:  # FACodec: decode(codes, timbre)
    decode = jax.jit(lambda p, r: model.apply({"params": p}, r["codes"], r["timbre"],
                                              method=model.decode))
  else:
    decode = jax.jit(lambda p, h: model.apply({"params": p}, h, method=model.decode))
  t0 = time.perf_counter()
  encode_c = encode.lower(params, wav).compile()
  encode_compile_s = time.perf_counter() - t0
  encode_s, latents = _time(lambda: encode_c(params, wav), args.repeats)
  t0 = time.perf_counter()
  decode_c = decode.lower(params, latents).compile()
  decode_compile_s = time.perf_counter() - t0
  decode_s, recon = _time(lambda: decode_c(params, latents), args.repeats)
  per_frame = latents["codes"] if discrete else latents
  dim = model.num_codebooks if discrete else model.resolved_latent_dim
  assert per_frame.shape == (args.batch, frames, dim), per_frame.shape
  assert recon.shape == (args.batch, samples), recon.shape

  dev = jax.devices()[0]
  groups = {k: count_params(v) for k, v in params.items()}
  print(json.dumps({
      "benchmark": "codec_rtf", **source,
      "platform": dev.platform, "device_kind": dev.device_kind, "devices": jax.device_count(),
      "dtype": str(jnp.dtype(model.dtype)), "batch": args.batch,
      "seconds_per_utterance": round(samples / sample_rate, 4), "sample_rate": sample_rate,
      "hop_length": hop, "latent_frame_rate": sample_rate / hop,
      ("codebooks" if discrete else "latent_dim"): dim, "latent_frames": frames,
      "params_total": count_params(params), "params_encoder": groups.get("encoder"),
      "params_decoder": groups.get("decoder"), "params_prior": groups.get("prior"),
      "encode_compile_seconds": round(encode_compile_s, 2),
      "decode_compile_seconds": round(decode_compile_s, 2),
      "encode_latency_seconds": round(encode_s, 5),
      "decode_latency_seconds": round(decode_s, 5),
      "encode_rtf": round(encode_s / audio_seconds, 6),
      "decode_rtf": round(decode_s / audio_seconds, 6),
      "encode_audio_seconds_per_sec": round(audio_seconds / encode_s, 2),
      "decode_audio_seconds_per_sec": round(audio_seconds / decode_s, 2),
      "repeats": args.repeats,
      "finite": bool(np.isfinite(np.asarray(recon)).all())}))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
