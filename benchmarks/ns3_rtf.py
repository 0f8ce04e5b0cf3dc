"""NaturalSpeech 3 generation RTF against GMM-LM decoding on the same texts; one JSON line.

    python benchmarks/ns3_rtf.py [--ns3-config configs/ns3.py:tiny] [--ns3.a.b=value ...] \
        [--gmm-lm-config configs/gmm_lm.py:tiny] [--gmm-lm.a.b=value ...] \
        [--seconds 6 --prompt-seconds 3 --phonemes-per-second 12 --batch 1 --repeats 3] \
        [--seed 0] [--out RESULT.json] [--dry-run]

Config overrides: ``--ns3.a.b=value`` goes to the NS3 config as ``--config.a.b=value`` and
``--gmm-lm.a.b=value`` to the GMM-LM config (either also as ``--ns3.a.b value``), in the
`jaxtts.train.config.build_config` syntax. ``--dry-run`` builds the NS3 model only, counts its
parameters with ``jax.eval_shape`` (nothing is compiled or allocated) and prints them.

Both models have randomly initialised parameters (`NS3Task.init_params`; GMM-LM's
``model.init`` with rngs ``{"params", "alignment"}``, as `benchmarks/gmm_lm_decode.py`). The
same texts: ``batch`` rows of ``round(prompt_seconds x pps)`` prompt phonemes then
``round(seconds x pps)`` target phonemes, random ids in ``[2, min(vocabularies))`` (0 is
padding; one draw, fed to both models). Both figures are **model only**: NS3's FACodec
decoding and GMM-LM's codec decoding are excluded (`benchmarks/codec_rtf.py` measures the
decoders).

NS3 (`jaxtts.diffusion.generate`, the sampler settings of the preset's ``config.synthesis``;
NS3's appendix A.2 values give 4 x 2 + 4 + 6 x 4 x 2 = 60 function evaluations):

* prompt: ``prompt_seconds x 80`` frames of random codes in ``[0, codebook_size)`` (80 frames/s
  = 16 kHz / FACodec's hop 200, NS3's data contract), its phone durations spread evenly over
  those frames, random phone-level prosody codes.
* ``phone_seconds``: `generate.phone_level` as is (phoneme encoder, prosody codes, duration
  tokens: it predicts the target durations).
* ``frame_seconds``: `generate.frame_level` with the target durations **spread evenly so that
  the target is exactly ``seconds x 80`` frames**, not the predicted ones: random parameters
  predict arbitrary durations (``predicted_target_frames`` reports them), and this keeps the
  audio length known and identical across runs and models. The frame stage (48 of the 60
  evaluations) is thus timed on exactly ``--seconds`` of audio per row.
* ``rtf`` = (phone_seconds + frame_seconds) / audio seconds (``batch x seconds``).

GMM-LM (`jaxtts.gmm_lm.decode.generate`, as `benchmarks/gmm_lm_decode.py`): a prompt of
``prompt_seconds`` of random latents with the prompt phonemes' count (``prompt_phoneme_len``),
``max_frames`` = ``seconds`` x its frame rate, ``stop_threshold=1.1`` (the stop logit never
ends a row). A row can still end early when the random-init alignment passes the last
phoneme (``stopped_by.passed_end``; at 12 phonemes/s it advances about as fast as the text
lasts); ``rtf`` is from the frames actually produced (``audio_seconds``).

Timing: each jitted program is compiled ahead of time (``compile_seconds``, separate), called
once untimed, then ``--repeats`` times with fresh keys, each call ended by
``jax.block_until_ready``; the per-call means are reported. ``rtf`` < 1 is faster than real
time; ``rtf_ratio_ns3_over_gmm_lm`` > 1 means NS3 is slower. Caveats: random parameters (the
compute per step is that of a trained model; only the durations and GMM-LM's stopping differ);
one process, one device, both models measured back to back in the same run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxtts.diffusion import generate  # noqa: E402
from jaxtts.gmm_lm import decode as decode_lib  # noqa: E402
from jaxtts.gmm_lm.model import from_config as gmm_lm_from_config  # noqa: E402
from jaxtts.tasks.ns3 import NS3Task  # noqa: E402
from jaxtts.train import config as config_lib  # noqa: E402
from jaxtts.train.state import count_params  # noqa: E402

NS3_FRAME_RATE = 16000 / 200  # FACodec's hop at 16 kHz: NS3's frame rate (frames/s)
PREFIXES = {"--ns3.": "ns3", "--gmm-lm.": "gmm_lm"}


def split_overrides(rest: list[str]) -> dict[str, list[str]]:
  """``--ns3.a.b=v`` / ``--gmm-lm.a.b v`` -> ``{"ns3": ["--config.a.b=v"], "gmm_lm": [...]}``."""
  out = {"ns3": [], "gmm_lm": []}
  i = 0
  while i < len(rest):
    arg = rest[i]
    prefix = next((p for p in PREFIXES if arg.startswith(p)), None)
    if prefix is None:
      raise SystemExit(f"unknown argument {arg!r} (config overrides are --ns3.a.b=value or "
                       f"--gmm-lm.a.b=value)")
    body = arg[len(prefix):]
    if "=" not in body:
      if i + 1 >= len(rest):
        raise SystemExit(f"{arg} needs a value")
      body, i = f"{body}={rest[i + 1]}", i + 1
    out[PREFIXES[prefix]].append(f"--config.{body}")
    i += 1
  return out


def spread(total: int, n: int) -> np.ndarray:
  """``total`` frames over ``n`` phones as evenly as integers allow -> ``[n]`` int32."""
  d = np.full((n,), total // n, np.int32)
  d[:total % n] += 1
  return d


def timed(fn, keys):
  """(mean wall seconds of ``fn(key)`` over ``keys``, the outputs): each call blocked on."""
  wall, outs = 0.0, []
  for key in keys:
    t0 = time.perf_counter()
    outs.append(jax.block_until_ready(fn(key)))
    wall += time.perf_counter() - t0
  return wall / len(keys), outs


def ns3_params_shape(cfg):
  """(task, the parameters' ShapeDtypeStructs) without allocating them."""
  task = NS3Task(cfg)
  shapes = jax.eval_shape(task.init_params, jax.random.PRNGKey(0), task.example_batch(1))
  return task, shapes["model"]


def by_network(params) -> dict[str, int]:
  return {name: count_params(sub) for name, sub in params.items()}


def bench_ns3(cfg, prompt_ids: np.ndarray, target_ids: np.ndarray, args) -> dict:
  """``prompt_ids [B, Pp]``, ``target_ids [B, Pt]`` -> the NS3 figures."""
  task = NS3Task(cfg)
  model, m = task.model, cfg.model
  settings = generate.Settings.from_config(cfg.synthesis)
  duration_prompt = bool(cfg.diffusion.duration_prompt)
  b, pp = prompt_ids.shape
  pt = target_ids.shape[1]
  p = pp + pt
  fp = int(round(args.prompt_seconds * NS3_FRAME_RATE))
  ft = int(round(args.seconds * NS3_FRAME_RATE))
  t = fp + ft
  qp, q = int(m.phone_prosody_levels), int(m.num_code_levels)
  rng = np.random.default_rng(args.seed + 1)

  phonemes = np.concatenate([prompt_ids, target_ids], 1).astype(np.int32)        # [B, P]
  phonemes = np.minimum(phonemes, int(m.num_phones) - 1)
  phone_len = np.full((b,), p, np.int32)
  prompt_phones = np.full((b,), pp, np.int32)
  prompt_durations = spread(fp, pp)                                               # [Pp]
  phone_codes = np.zeros((b, p, qp + 1), np.int32)                                # [B, P, Qp+1]
  phone_codes[:, :pp, :qp] = rng.integers(0, int(m.codebook_size), (b, pp, qp))
  phone_codes[:, :pp, qp] = np.minimum(prompt_durations, int(m.max_duration))
  durations = np.tile(np.concatenate([prompt_durations, spread(ft, pt)]), (b, 1))  # [B, P]
  frame_len = np.full((b,), t, np.int32)
  prompt_frames = np.full((b,), fp, np.int32)
  frame_codes = np.zeros((b, t, q), np.int32)                                     # [B, T, Q]
  frame_codes[:, :fp] = rng.integers(0, int(m.codebook_size), (b, fp, q))

  params = jax.jit(task.init_params)(jax.random.PRNGKey(args.seed),
                                     task.example_batch(1))["model"]
  phone_fn = jax.jit(functools.partial(generate.phone_level, model),
                     static_argnames=("settings", "duration_prompt"))
  frame_fn = jax.jit(functools.partial(generate.frame_level, model),
                     static_argnames=("settings",))
  phone_args = (params, phonemes, phone_len, prompt_phones, phone_codes)
  t0 = time.perf_counter()
  phone_c = phone_fn.lower(*phone_args, jax.random.PRNGKey(0), settings=settings,
                           duration_prompt=duration_prompt).compile()
  phone_compile = time.perf_counter() - t0
  enc_shape = jax.ShapeDtypeStruct((b, p, int(m.encoder_dim)), model.dtype)
  frame_tail = (durations, frame_len, prompt_frames, frame_codes)
  t0 = time.perf_counter()
  frame_c = frame_fn.lower(params, enc_shape, *frame_tail, jax.random.PRNGKey(0),
                           settings=settings).compile()
  frame_compile = time.perf_counter() - t0

  run_phone = lambda key: phone_c(*phone_args, key)  # static args are baked in
  enc, _, _ = jax.block_until_ready(run_phone(jax.random.PRNGKey(1)))  # warm-up
  run_frame = lambda key: frame_c(params, enc, *frame_tail, key)
  jax.block_until_ready(run_frame(jax.random.PRNGKey(1)))
  keys = [jax.random.PRNGKey(100 + r) for r in range(args.repeats)]
  phone_s, phone_outs = timed(run_phone, keys)
  frame_s, frame_outs = timed(run_frame, keys)

  nfe_phone, nfe_frame = int(phone_outs[-1][2]), int(frame_outs[-1][1])
  expected = sum(settings.nfe(qp, q, m.duration_loss == "l2").values())
  if nfe_phone + nfe_frame != expected:
    raise SystemExit(f"NS3 made {nfe_phone} + {nfe_frame} function evaluations; the settings "
                     f"{settings} give {expected}")
  codes = np.asarray(frame_outs[-1][0])
  if codes.min() < 0 or codes.max() >= int(m.codebook_size):
    raise SystemExit("frame_level produced codes outside the codebook (undecoded frames?)")
  predicted = np.asarray(phone_outs[-1][1])[:, pp:, qp].sum(axis=1)
  audio_s = b * ft / NS3_FRAME_RATE
  return {
      "config": args.ns3_config, "overrides": args.overrides["ns3"],
      "compute_dtype": cfg.train.compute_dtype, "params": count_params(params),
      "params_by_network": by_network(params),
      "settings": {k: getattr(settings, k) for k in generate.SETTINGS},
      "nfe": nfe_phone + nfe_frame, "nfe_phone": nfe_phone, "nfe_frame": nfe_frame,
      "phonemes": p, "prompt_phonemes": pp, "prompt_frames": fp, "target_frames": ft,
      "frame_rate": NS3_FRAME_RATE,
      "predicted_target_frames": predicted.tolist(),
      "over_max_total_seconds": t / NS3_FRAME_RATE > float(cfg.synthesis.max_total_seconds),
      "compile_seconds": round(phone_compile + frame_compile, 2),
      "compile_seconds_by_stage": {"phone": round(phone_compile, 2),
                                   "frame": round(frame_compile, 2)},
      "phone_seconds": round(phone_s, 4), "frame_seconds": round(frame_s, 4),
      "wall_seconds": round(phone_s + frame_s, 4),
      "audio_seconds": audio_s, "rtf": round((phone_s + frame_s) / audio_s, 5)}


def bench_gmm_lm(cfg, prompt_ids: np.ndarray, target_ids: np.ndarray, args) -> dict:
  """``prompt_ids [B, Pp]``, ``target_ids [B, Pt]`` -> the GMM-LM figures."""
  model = gmm_lm_from_config(cfg, dropout=0.0)
  stay_mode = cfg.synthesis.stay_mode
  frame_rate = cfg.data.sample_rate / cfg.model.latent_hop
  b, pp = prompt_ids.shape
  d = int(cfg.model.latent_dim)
  p = max(1, int(round(args.prompt_seconds * frame_rate)))
  max_frames = max(1, int(round(args.seconds * frame_rate)))
  rng = np.random.default_rng(args.seed + 2)
  prompt = jnp.asarray(rng.standard_normal((b, p, d)), jnp.float32)              # [B, Fp, D]
  prompt_len = jnp.full((b,), p, jnp.int32)
  ids = np.minimum(np.concatenate([prompt_ids, target_ids], 1), int(cfg.model.vocab_size) - 1)
  phonemes = jnp.asarray(ids, jnp.int32)                                          # [B, J]
  j = phonemes.shape[1]
  phoneme_len = jnp.full((b,), j, jnp.int32)
  prompt_phoneme_len = jnp.full((b,), pp, jnp.int32)

  k_params, k_align = jax.random.split(jax.random.PRNGKey(args.seed))
  init = jax.jit(lambda kp, ka: model.init({"params": kp, "alignment": ka}, prompt[:1, :8],
                                           jnp.ones((1, 8), bool), phonemes[:1, :8],
                                           jnp.ones((1, 8), bool)))
  params = init(k_params, k_align)["params"]
  kwargs = dict(max_frames=max_frames, weight_temperature=cfg.synthesis.weight_temperature,
                scale_temperature=cfg.synthesis.scale_temperature, stop_threshold=1.1,
                stay_mode=stay_mode, prompt_phoneme_len=prompt_phoneme_len,
                stop_on_last_phoneme_only=cfg.synthesis.stop_on_last_phoneme_only)
  call_args = (model, params, prompt, prompt_len, phonemes, phoneme_len)
  t0 = time.perf_counter()
  compiled = decode_lib.generate.lower(*call_args, jax.random.PRNGKey(0), **kwargs).compile()
  compile_s = time.perf_counter() - t0
  dynamic = {k: v for k, v in kwargs.items() if k not in ("max_frames", "stay_mode")}
  run = lambda key: compiled(*call_args[1:], key, **dynamic)  # static args are baked in

  jax.block_until_ready(run(jax.random.PRNGKey(1)))  # warm-up
  keys = [jax.random.PRNGKey(100 + r) for r in range(args.repeats)]
  wall, outs = timed(run, keys)
  if not np.isfinite(np.asarray(outs[-1]["frames"])).all():
    raise SystemExit("GMM-LM generate produced non-finite frames")
  frames = sum(int(np.asarray(o["lengths"]).sum()) for o in outs) / len(outs)
  stopped = sum((np.asarray(o["stopped_by"]).tolist() for o in outs), [])
  audio_s = frames / frame_rate
  return {
      "config": args.gmm_lm_config, "overrides": args.overrides["gmm_lm"],
      "compute_dtype": cfg.train.compute_dtype, "stay_mode": stay_mode,
      "params": count_params(params), "frame_rate": frame_rate, "latent_dim": d,
      "phonemes": j, "prompt_phonemes": pp, "prompt_frames": p, "max_frames": max_frames,
      "generated_frames_per_row": round(frames / b, 1),
      "stopped_by": {name: stopped.count(code) for code, name in
                     ((0, "stop_logit"), (1, "passed_end"), (2, "max_frames"))},
      "compile_seconds": round(compile_s, 2), "wall_seconds": round(wall, 4),
      "audio_seconds": round(audio_s, 4), "rtf": round(wall / audio_s, 5)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--ns3-config", default="configs/ns3.py:tiny")
  parser.add_argument("--gmm-lm-config", default="configs/gmm_lm.py:tiny")
  parser.add_argument("--seconds", type=float, default=6.0, help="target speech per row")
  parser.add_argument("--prompt-seconds", type=float, default=3.0)
  parser.add_argument("--phonemes-per-second", type=float, default=12.0)
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=None, help="also write the JSON line to this path")
  parser.add_argument("--dry-run", action="store_true",
                      help="build the NS3 model, count its parameters (jax.eval_shape), exit")
  args, rest = parser.parse_known_args(argv)
  args.overrides = split_overrides(rest)
  ns3_cfg = config_lib.build_config(args.ns3_config, args.overrides["ns3"])
  if args.dry_run:
    _, shapes = ns3_params_shape(ns3_cfg)
    n = count_params(shapes)
    print(json.dumps({"benchmark": "ns3_rtf", "dry_run": True, "config": args.ns3_config,
                      "overrides": args.overrides["ns3"], "params": n,
                      "params_millions": round(n / 1e6, 1),
                      "params_by_network": by_network(shapes)}))
    return 0
  gmm_cfg = config_lib.build_config(args.gmm_lm_config, args.overrides["gmm_lm"])

  b = args.batch
  pp = max(1, int(round(args.prompt_seconds * args.phonemes_per_second)))
  pt = max(1, int(round(args.seconds * args.phonemes_per_second)))
  vocab = min(int(ns3_cfg.model.num_phones), int(gmm_cfg.model.vocab_size))
  rng = np.random.default_rng(args.seed)
  ids = rng.integers(2, vocab, size=(b, pp + pt))  # the same texts for both models
  prompt_ids, target_ids = ids[:, :pp], ids[:, pp:]

  ns3 = bench_ns3(ns3_cfg, prompt_ids, target_ids, args)
  gmm = bench_gmm_lm(gmm_cfg, prompt_ids, target_ids, args)
  dev = jax.devices()[0]
  result = {
      "benchmark": "ns3_rtf", "device": f"{dev.platform}:{dev.device_kind}",
      "platform": dev.platform, "device_kind": dev.device_kind, "devices": jax.device_count(),
      "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
      "jax": jax.__version__, "model_only": True,
      "seconds": args.seconds, "prompt_seconds": args.prompt_seconds,
      "phonemes_per_second": args.phonemes_per_second, "batch": b, "repeats": args.repeats,
      "seed": args.seed, "ns3": ns3, "gmm_lm": gmm,
      "rtf_ratio_ns3_over_gmm_lm": round(ns3["rtf"] / gmm["rtf"], 3),
      "ns3_paper_rtf_v100": 0.296}
  line = json.dumps(result)
  print(line)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      f.write(json.dumps(result, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
