"""`jaxtts-synthesize`: zero-shot synthesis with a trained GMM-LM workdir.

One utterance:
  jaxtts-synthesize --workdir LM --text T --prompt-audio WAV [--prompt-text T] --out OUT.wav
  writes OUT.wav, OUT.json and OUT.alignment.png.

A batch:
  jaxtts-synthesize --workdir LM --manifest IN.jsonl --out-dir DIR [--batch-size N]
  IN.jsonl holds one object per utterance: {"id", "text", "prompt_audio", "prompt_text"};
  optional "prompt_phonemes" (phoneme ids of the prompt audio, instead of "prompt_text", as
  `jaxtts.infer.prompts.write_prompt_manifest` writes them) and "target_phonemes" (ids
  instead of "text"). A relative "prompt_audio" is relative to the manifest's folder. Writes
  DIR/<id>.wav, DIR/<id>.json (durations, phonemes, alignment, timings, stopped_by),
  DIR/<id>.alignment.png and DIR/failures.json ([{"id", "line", "reason"}] of the rows that
  failed; the others still run). Exit status 0 when every row succeeded, 1 otherwise.

Without a prompt transcript (--prompt-text / "prompt_text") the transcript is read from a
.txt file beside the prompt audio; with neither, the request is an error (no ASR here).
`--codec-workdir` defaults to the codec named by the LM's latent manifest. Every output is
written to a temporary name and renamed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import numpy as np

log = logging.getLogger("jaxtts.infer")


def _atomic(path: str, write) -> None:
  """Calls ``write(tmp)`` on a temporary name with ``path``'s extension, then renames."""
  root, ext = os.path.splitext(path)
  tmp = f"{root}.tmp-{os.getpid()}{ext}"
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _write_json(path: str, obj: Any) -> None:
  def write(tmp):
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(obj, f, indent=1, sort_keys=True, ensure_ascii=False)
      f.write("\n")
  _atomic(path, write)


def result_json(result: dict) -> dict:
  """The JSON-serializable part of a `Synthesizer.synthesize` result (all but ``wav``)."""
  out = {k: v for k, v in result.items() if k != "wav"}
  for k in ("durations", "alignment"):
    out[k] = np.asarray(out[k]).tolist()
  out["seconds"] = len(result["wav"]) / result["sample_rate"]
  return out


def write_outputs(result: dict, wav_path: str) -> dict:
  """Writes ``X.wav``, ``X.json`` and ``X.alignment.png`` for ``wav_path = X.wav``."""
  from jaxtts.audio.io import save_wav  # pylint: disable=import-outside-toplevel
  from jaxtts.infer.synthesize import save_alignment_image  # pylint: disable=import-outside-toplevel
  root = os.path.splitext(wav_path)[0]
  os.makedirs(os.path.dirname(os.path.abspath(wav_path)), exist_ok=True)
  _atomic(wav_path, lambda tmp: save_wav(tmp, np.clip(result["wav"], -1.0, 1.0),
                                         result["sample_rate"]))
  summary = result_json(result)
  _write_json(root + ".json", summary)
  _atomic(root + ".alignment.png",
          lambda tmp: save_alignment_image(tmp, result, os.path.basename(root)))
  return summary


def read_manifest(path: str) -> tuple[list[tuple[int, dict]], list[dict]]:
  """Rows ``(line, request kwargs + id)`` and failures ``{"id", "line", "reason"}``."""
  rows, failures, seen = [], [], set()
  base = os.path.dirname(os.path.abspath(path))
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
        if not isinstance(obj, dict):
          raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
      except ValueError as e:
        failures.append({"id": None, "line": line_no, "reason": f"bad JSON: {e}"})
        continue
      rid = obj.get("id")
      missing = [k for k in ("id", "prompt_audio") if not obj.get(k)]
      if "text" not in obj and "target_phonemes" not in obj:
        missing.append("text")
      if missing:
        failures.append({"id": rid, "line": line_no, "reason": f"missing field(s) {missing}"})
        continue
      rid = str(rid)
      if rid in seen or os.sep in rid or rid.startswith("."):
        failures.append({"id": rid, "line": line_no,
                         "reason": "duplicate id" if rid in seen else "id is not a file name"})
        continue
      seen.add(rid)
      rows.append((line_no, {
          "id": rid, "text": obj.get("text"),
          "prompt_audio": os.path.join(base, obj["prompt_audio"]),
          "prompt_text": obj.get("prompt_text"), "prompt_phonemes": obj.get("prompt_phonemes"),
          "target_phonemes": obj.get("target_phonemes")}))
  return rows, failures


def run_manifest(synth, args, options: dict) -> int:
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  os.makedirs(args.out_dir, exist_ok=True)
  rows, failures = read_manifest(args.manifest)
  for fail in failures:
    log.error("%s line %d (id %r): %s", args.manifest, fail["line"], fail["id"], fail["reason"])
  ok = 0
  bar = tqdm(total=len(rows), desc="synthesize", disable=args.no_progress)
  for start in range(0, len(rows), args.batch_size):
    batch = []
    for line_no, row in rows[start:start + args.batch_size]:
      kwargs = {k: v for k, v in row.items() if k != "id"}
      try:
        batch.append((line_no, row["id"], synth.prepare(max_seconds=options["max_seconds"],
                                                        **kwargs)))
      except (ValueError, OSError) as e:
        log.error("%s line %d (id %r): %s", args.manifest, line_no, row["id"], e)
        failures.append({"id": row["id"], "line": line_no, "reason": str(e)})
        bar.update(1)
    if not batch:
      continue
    try:
      results = synth.synthesize_batch([r for _, _, r in batch], seed=args.seed + start,
                                       **options)
    except Exception as e:  # pylint: disable=broad-except
      log.exception("batch of rows %s failed", [rid for _, rid, _ in batch])
      results = [e] * len(batch)
    for (line_no, rid, _), result in zip(batch, results):
      try:
        if isinstance(result, Exception):
          raise result
        write_outputs(result, os.path.join(args.out_dir, f"{rid}.wav"))
        ok += 1
      except Exception as e:  # pylint: disable=broad-except
        failures.append({"id": rid, "line": line_no, "reason": f"{type(e).__name__}: {e}"})
    bar.update(len(batch))
  bar.close()
  failures.sort(key=lambda x: x["line"])
  _write_json(os.path.join(args.out_dir, "failures.json"), failures)
  print(json.dumps({"succeeded": ok, "failed": len(failures), "out_dir": args.out_dir}))
  return 0 if not failures else 1


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="jaxtts-synthesize", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="trained gmm_lm workdir")
  parser.add_argument("--codec-workdir", default=None)
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--text")
  parser.add_argument("--prompt-audio")
  parser.add_argument("--prompt-text", default=None)
  parser.add_argument("--out", help="output wav (single utterance)")
  parser.add_argument("--manifest", help="JSONL requests (batch mode)")
  parser.add_argument("--out-dir", help="output folder (batch mode)")
  parser.add_argument("--batch-size", type=int, default=4, help="rows per generate call")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--max-seconds", type=float, default=None,
                      help="generated audio at most (default: config.synthesis.max_seconds)")
  parser.add_argument("--weight-temperature", type=float, default=None)
  parser.add_argument("--scale-temperature", type=float, default=None)
  parser.add_argument("--stay-mode", choices=("st_gumbel", "threshold"), default=None)
  parser.add_argument("--no-progress", action="store_true")
  args = parser.parse_args(argv)
  batch_mode = args.manifest is not None
  if batch_mode and (args.out_dir is None or args.text or args.prompt_audio or args.out):
    parser.error("--manifest takes --out-dir (and not --text/--prompt-audio/--out)")
  if not batch_mode and not (args.text is not None and args.prompt_audio and args.out):
    parser.error("give --text, --prompt-audio and --out (or --manifest and --out-dir)")
  if args.batch_size < 1:
    parser.error("--batch-size must be >= 1")
  if batch_mode and not os.path.isfile(args.manifest):
    parser.exit(1, f"jaxtts-synthesize: error: --manifest: no such file {args.manifest!r}\n")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

  from jaxtts.infer.synthesize import Synthesizer  # pylint: disable=import-outside-toplevel
  options = {"max_seconds": args.max_seconds, "weight_temperature": args.weight_temperature,
             "scale_temperature": args.scale_temperature, "stay_mode": args.stay_mode}
  try:
    synth = Synthesizer(args.workdir, args.codec_workdir, args.step)
    if batch_mode:
      return run_manifest(synth, args, options)
    result = synth.synthesize(args.text, args.prompt_audio, args.prompt_text, seed=args.seed,
                              **options)
  except (ValueError, OSError) as e:
    parser.exit(1, f"jaxtts-synthesize: error: {e}\n")
  summary = write_outputs(result, args.out)
  print(json.dumps({"out": args.out, "seconds": summary["seconds"], "frames": summary["frames"],
                    "stopped_by": summary["stopped_by"], "timings": summary["timings"]}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
