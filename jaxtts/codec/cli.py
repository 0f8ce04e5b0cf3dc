"""`jaxtts-codec {encode,decode,reconstruct,encode-dataset} --workdir DIR ...`

  encode          --input WAV --out NPZ|NPY      wav -> the codec's representation (.npz: one
                                                 array per field; .npy: a single-field
                                                 codec's array, e.g. latents [F, D])
  decode          --input NPZ|NPY --out WAV      representation -> wav (.npy: the codec's one
                                                 per-frame field, e.g. latents [F, D])
  reconstruct     --input WAV --out WAV [--metrics JSON]   wav -> wav + reconstruction metrics
  convert         --source WAV --prompt WAV --out WAV   zero-shot voice conversion (codecs
                                                 with a timbre, e.g. FACodec): the source's
                                                 codes decoded with the prompt's timbre
  encode-dataset  --data-dir CORPUS --out DIR [--splits ...]
                  shards -> stage-2 shards with the representation added, for stage-2
                  training (`jaxtts.codec.dataset`; resumable, split over processes).

`--workdir` is a `jaxtts-train` workdir of a codec task (`jaxtts.codec.registry`; its config
and latest checkpoint, `--step` picks another). Audio at another sample rate is resampled
(and logged) unless `--no-resample`, which makes it an error. Errors are one line on stderr
(exit 2); library logs appear with `--verbose`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from jaxtts import logs
from jaxtts.audio import io
from jaxtts.codec.base import Codec
from jaxtts.codec.dataset import encode_dataset
from jaxtts.codec.registry import load_codec
from jaxtts.eval import codec_metrics
from jaxtts.files import atomic_write, write_json


def read_representation(codec: Codec, path: str) -> dict[str, np.ndarray]:
  """An ``.npz`` of fields, or an ``.npy`` holding the codec's single per-frame field."""
  if path.endswith(".npy"):
    frame_fields = [k for k, f in codec.representation.fields.items() if f.per_frame]
    if len(codec.representation.fields) != 1:
      raise ValueError(f"--input {path}: this {codec.name} codec takes fields "
                       f"{sorted(codec.representation.fields)}; pass an .npz")
    return {frame_fields[0]: np.load(path)}
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def run(args) -> dict:
  codec = load_codec(args.workdir, args.step)
  t0 = time.perf_counter()
  if args.command == "encode":
    wav = codec.load(args.input, not args.no_resample)
    rep = codec.encode(wav)
    if args.out.endswith(".npy"):  # the one field of a single-field codec (GMM-VAE latents)
      if len(rep) != 1:
        raise ValueError(f"--out {args.out}: this {codec.name} codec returns fields "
                         f"{sorted(rep)}; write an .npz")
      atomic_write(args.out, lambda tmp: np.save(tmp, next(iter(rep.values()))))
    else:
      atomic_write(args.out, lambda tmp: np.savez(tmp, **rep))
    result = {"fields": {k: list(v.shape) for k, v in rep.items()},
              "frames": codec.num_frames(len(wav))}
    if codec.representation.dim is not None:
      result["dim"] = int(codec.representation.dim)
  elif args.command == "decode":
    wav = codec.decode(read_representation(codec, args.input))
    io.save_wav(args.out, wav, codec.sample_rate)
    result = {"samples": int(len(wav))}
  elif args.command == "reconstruct":
    wav = codec.load(args.input, not args.no_resample)
    recon = codec.resynthesize(wav)
    io.save_wav(args.out, recon, codec.sample_rate)
    kwargs = {"metrics": tuple(args.metric_names)} if args.metric_names else {}
    result = codec_metrics.compute_all(recon, wav, codec.sample_rate, **kwargs)
    write_json(args.metrics or os.path.splitext(args.out)[0] + ".json", result)
  elif args.command == "convert":
    if not hasattr(codec, "convert"):
      raise ValueError(f"convert: the {codec.name} codec of {args.workdir} has no timbre to "
                       "swap (voice conversion needs a codec such as FACodec)")
    source = codec.load(args.source, not args.no_resample)
    prompt = codec.load(args.prompt, not args.no_resample)
    wav = codec.convert(source, prompt, prompt_name=f"--prompt {args.prompt}")
    io.save_wav(args.out, wav, codec.sample_rate)
    result = {"samples": int(len(wav)), "source_seconds": round(len(source) / codec.sample_rate, 3),
              "prompt_seconds": round(len(prompt) / codec.sample_rate, 3)}
  else:
    result = encode_dataset(codec, args.data_dir, args.out, args.splits, args.process_index,
                            args.process_count)
  result["seconds"] = round(time.perf_counter() - t0, 3)
  return result


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="jaxtts-codec", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)
  for name in ("encode", "decode", "reconstruct", "convert", "encode-dataset"):
    s = sub.add_parser(name)
    s.add_argument("--workdir", required=True)
    s.add_argument("--step", type=int, default=None)
    s.add_argument("--verbose", action="store_true", help="show library logs (Orbax, JAX)")
    if name == "encode-dataset":
      s.add_argument("--data-dir", required=True)
      s.add_argument("--out", required=True)
      s.add_argument("--splits", nargs="+", default=["train", "valid", "test_zero_shot"])
      s.add_argument("--process-index", type=int, default=0)
      s.add_argument("--process-count", type=int, default=1)
    elif name == "convert":
      s.add_argument("--source", required=True, help="the speech to convert (WAV)")
      s.add_argument("--prompt", required=True, help="the target voice (WAV)")
      s.add_argument("--out", required=True)
      s.add_argument("--no-resample", action="store_true",
                     help="reject audio at another sample rate instead of resampling")
    else:
      s.add_argument("--input", required=True)
      s.add_argument("--out", required=True)
      s.add_argument("--no-resample", action="store_true",
                     help="reject audio at another sample rate instead of resampling")
    if name == "reconstruct":
      s.add_argument("--metrics", default=None, help="JSON path (default: OUT with .json)")
      s.add_argument("--metric-names", nargs="+", default=None)
  return p


def main(argv=None) -> int:
  args = parser().parse_args(argv)
  logs.setup_logging(args.verbose)
  try:
    result = run(args)
  except (ValueError, FileNotFoundError) as e:
    print(f"jaxtts-codec: {e}", file=sys.stderr)
    return 2
  print(json.dumps(result, sort_keys=True))
  return 0


if __name__ == "__main__":
  sys.exit(main())
