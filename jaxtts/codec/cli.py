"""`jaxtts-codec {encode,decode,reconstruct,encode-dataset} --workdir DIR ...`

  encode          --input WAV --out NPY          wav -> latents [F, D] (float32 .npy)
  decode          --input NPY --out WAV          latents [F, D] -> wav
  reconstruct     --input WAV --out WAV [--metrics JSON]   wav -> wav + reconstruction metrics
  encode-dataset  --data-dir CORPUS --out DIR [--splits ...]
                  shards -> latent shards with the same records plus `latents` [F, D] float32,
                  for stage-2 training. Shards are split over processes (`--process-index`,
                  `--process-count`); a finished shard is skipped on rerun (resumable); each
                  shard is written to a temporary name and renamed when complete.

`--workdir` is a `jaxtts-train` workdir of the gmm_vae task (its config and latest checkpoint;
`--step` picks another). Audio at another sample rate is resampled (and logged) unless
`--no-resample`, which makes it an error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time

import numpy as np

log = logging.getLogger("jaxtts.codec")


class Codec:
  """A trained GMM-VAE for inference: encode/decode single utterances with few shapes."""

  def __init__(self, workdir: str, step: int | None = None):
    import jax  # pylint: disable=import-outside-toplevel

    from jaxtts.train import restore  # pylint: disable=import-outside-toplevel
    self.trainer, self.params = restore.load_trained(workdir, step)
    task = self.trainer.task
    if task.cfg.task != "gmm_vae":
      raise ValueError(f"{workdir}: task {task.cfg.task!r} is not a gmm_vae codec")
    self.model, self.sample_rate = task.model, task.sample_rate
    self.hop, self.latent_dim = self.model.hop_length, self.model.resolved_latent_dim
    g = self.params["generator"]
    self._encode = jax.jit(lambda x: self.model.apply({"params": g}, x,
                                                      method=self.model.encode))
    self._decode = jax.jit(lambda h: self.model.apply({"params": g}, h,
                                                      method=self.model.decode))

  @staticmethod
  def _bucket(n: int, unit: int) -> int:
    """Rounds a length up to whole units (about a second), so a corpus compiles a handful of
    shapes. The zero padding sits past the end; latents of the last frames can differ
    slightly from an unpadded encode (the encoder's receptive field sees the padding)."""
    return max(unit, -(-n // unit) * unit)

  @property
  def _frames_per_unit(self) -> int:
    return -(-self.sample_rate // self.hop)

  def encode(self, wav: np.ndarray) -> np.ndarray:
    """``wav [T] float -> latents [ceil(T / hop), D] float32``."""
    wav = np.asarray(wav, np.float32)
    if wav.ndim != 1 or not len(wav):
      raise ValueError(f"encode expects a non-empty mono waveform [T], got shape {wav.shape}")
    unit = self._frames_per_unit * self.hop
    padded = np.pad(wav, (0, self._bucket(len(wav), unit) - len(wav)))
    frames = -(-len(wav) // self.hop)
    return np.asarray(self._encode(padded[None]))[0, :frames]

  def decode(self, latents: np.ndarray) -> np.ndarray:
    """``latents [F, D] -> wav [F * hop] float32``; the wrong D is an error."""
    latents = np.asarray(latents, np.float32)
    if latents.ndim != 2 or latents.shape[1] != self.latent_dim:
      raise ValueError(f"decode expects latents [frames, {self.latent_dim}] for this codec, "
                       f"got shape {latents.shape}")
    frames = len(latents)
    padded = np.pad(latents, ((0, self._bucket(frames, self._frames_per_unit) - frames), (0, 0)))
    return np.asarray(self._decode(padded[None]))[0, :frames * self.hop]

  def load(self, path: str, resample: bool) -> np.ndarray:
    from jaxtts.audio import io  # pylint: disable=import-outside-toplevel
    rate = io.wav_sample_rate(path)
    if rate != self.sample_rate and resample:
      log.warning("%s: resampling %d Hz -> %d Hz", path, rate, self.sample_rate)
    return io.load_wav(path, self.sample_rate, resample=resample)


def reconstruction_metrics(estimate: np.ndarray, reference: np.ndarray, sample_rate: int,
                           metrics=None) -> dict:
  from jaxtts.eval import codec_metrics  # pylint: disable=import-outside-toplevel
  kwargs = {} if metrics is None else {"metrics": tuple(metrics)}
  return codec_metrics.compute_all(estimate, reference, sample_rate, **kwargs)


def encode_dataset(codec: Codec, data_dir: str, out_dir: str, splits, process_index: int,
                   process_count: int) -> dict:
  """Writes `<out>/<split>-*.array_record` with `latents` added and a manifest (process 0)."""
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  from jaxtts.data import records  # pylint: disable=import-outside-toplevel
  from jaxtts.data.source import CorpusSource, read_manifest  # pylint: disable=import-outside-toplevel
  manifest = read_manifest(data_dir)
  os.makedirs(out_dir, exist_ok=True)
  done = skipped = 0
  for split in splits:
    source = CorpusSource(data_dir, split, sample_rate=codec.sample_rate)
    mine = [i for i in range(len(source.shard_paths)) if i % process_count == process_index]
    offsets = np.concatenate([[0], np.cumsum(source.shard_sizes)])
    for shard in mine:
      name = os.path.basename(source.shard_paths[shard])
      final = os.path.join(out_dir, name)
      if os.path.exists(final):
        skipped += 1
        continue
      tmp = final + f".tmp-{process_index}"
      writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
      for i in tqdm(range(offsets[shard], offsets[shard + 1]), desc=name,
                    disable=process_index != 0, leave=False):
        example = source.example(int(i))
        latents = codec.encode(example["audio"].astype(np.float32) / 32768.0)
        writer.write(records.encode_example({**example, "latents": latents}))
      writer.close()
      os.replace(tmp, final)
      done += 1
  if process_index == 0:
    out_manifest = dict(manifest)
    out_manifest["latents"] = {
        "dim": codec.latent_dim, "hop_length": codec.hop,
        "frame_rate": codec.sample_rate / codec.hop,
        "codec_workdir": os.path.abspath(codec.trainer.workdir)}
    out_manifest["splits"] = {s: manifest["splits"][s] for s in splits}
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
      json.dump(out_manifest, f, indent=1, sort_keys=True)
      f.write("\n")
    for s in splits:
      index = os.path.join(data_dir, f"{s}.speaker_index.npy")
      if os.path.exists(index):
        shutil.copyfile(index, os.path.join(out_dir, os.path.basename(index)))
  return {"shards_written": done, "shards_skipped": skipped}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="jaxtts-codec", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  for name in ("encode", "decode", "reconstruct", "encode-dataset"):
    p = sub.add_parser(name)
    p.add_argument("--workdir", required=True)
    p.add_argument("--step", type=int, default=None)
    if name == "encode-dataset":
      p.add_argument("--data-dir", required=True)
      p.add_argument("--out", required=True)
      p.add_argument("--splits", nargs="+", default=["train", "valid", "test_zero_shot"])
      p.add_argument("--process-index", type=int, default=0)
      p.add_argument("--process-count", type=int, default=1)
    else:
      p.add_argument("--input", required=True)
      p.add_argument("--out", required=True)
      p.add_argument("--no-resample", action="store_true",
                     help="reject audio at another sample rate instead of resampling")
    if name == "reconstruct":
      p.add_argument("--metrics", default=None, help="JSON path (default: OUT with .json)")
      p.add_argument("--metric-names", nargs="+", default=None)
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
  codec = Codec(args.workdir, args.step)
  from jaxtts.audio import io  # pylint: disable=import-outside-toplevel
  t0 = time.perf_counter()
  if args.command == "encode":
    latents = codec.encode(codec.load(args.input, not args.no_resample))
    np.save(args.out, latents)
    result = {"frames": int(latents.shape[0]), "dim": int(latents.shape[1])}
  elif args.command == "decode":
    wav = codec.decode(np.load(args.input))
    io.save_wav(args.out, wav, codec.sample_rate)
    result = {"samples": int(len(wav))}
  elif args.command == "reconstruct":
    wav = codec.load(args.input, not args.no_resample)
    recon = codec.decode(codec.encode(wav))[:len(wav)]
    io.save_wav(args.out, recon, codec.sample_rate)
    result = reconstruction_metrics(recon, wav, codec.sample_rate, args.metric_names)
    path = args.metrics or os.path.splitext(args.out)[0] + ".json"
    with open(path, "w") as f:
      json.dump(result, f, indent=1, sort_keys=True)
  else:
    result = encode_dataset(codec, args.data_dir, args.out, args.splits, args.process_index,
                            args.process_count)
  result["seconds"] = round(time.perf_counter() - t0, 3)
  print(json.dumps(result, sort_keys=True))
  return 0


if __name__ == "__main__":
  sys.exit(main())
