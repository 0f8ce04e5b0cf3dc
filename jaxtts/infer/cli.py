"""`jaxtts-synthesize`: zero-shot synthesis with any trained generator workdir
(`jaxtts.infer.registry`: the workdir's task picks the generator).

One utterance:
  jaxtts-synthesize --workdir LM --text T --prompt-audio WAV [--prompt-text T] --out OUT.wav
  writes OUT.wav, OUT.json and OUT.alignment.png.

A batch:
  jaxtts-synthesize --workdir LM --manifest IN.jsonl --out-dir DIR [--batch-size N]
  IN.jsonl holds one object per utterance: {"id", "text", "prompt_audio", "prompt_text"};
  optional "prompt_phonemes" (phoneme ids of the prompt audio, instead of "prompt_text", as
  `jaxtts.infer.prompts.write_prompt_manifest` writes them) and "target_phonemes" (ids
  instead of "text"), "prosody_reference_audio" and "prosody_reference_durations" (CLONE's
  prosody transfer, `--option prosody=reference`; also --prosody-reference-audio /
  --prosody-reference-durations for one utterance). A relative "prompt_audio" or
  "prosody_reference_audio" is relative to the manifest's folder. Writes
  DIR/<id>.wav, DIR/<id>.json (durations, phonemes, alignment, timings, stopped_by),
  DIR/<id>.alignment.png and DIR/failures.json ([{"id", "line", "reason"}] of the rows that
  failed; the others still run). Exit status 0 when every row succeeded, 1 otherwise.

Without a prompt transcript (--prompt-text / "prompt_text") the transcript is read from a
.txt file beside the prompt audio; with neither, the request is an error (no ASR here).
Generators that take no transcript refuse one. `--codec-workdir` (or `--component
ROLE=DIR`) names the other workdirs a pipeline needs; a code model's codec defaults to the
one named by its training manifest. Generator options: `--max-seconds`, `--option
NAME=VALUE` (e.g. `weight_temperature=0.8`; the flags below are shorthands for them).
Every output is written to a temporary name and renamed. Errors are one line (exit 1);
library logs appear with `--verbose`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import numpy as np
from tqdm import tqdm

from jaxtts import logs
from jaxtts.audio.io import save_wav
from jaxtts.files import atomic_write, write_json
from jaxtts.infer.base import save_alignment_image
from jaxtts.infer.registry import load_generator

log = logging.getLogger("jaxtts.infer")


def result_json(result: dict) -> dict:
  """The JSON-serializable part of a generator's result (all but ``wav``)."""
  out = {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v)
         for k, v in result.items() if k != "wav"}
  out["seconds"] = len(result["wav"]) / result["sample_rate"]
  return out


def write_outputs(result: dict, wav_path: str) -> dict:
  """Writes ``X.wav``, ``X.json`` and (with an alignment) ``X.alignment.png`` for
  ``wav_path = X.wav``."""
  root = os.path.splitext(wav_path)[0]
  os.makedirs(os.path.dirname(os.path.abspath(wav_path)), exist_ok=True)
  atomic_write(wav_path, lambda tmp: save_wav(tmp, np.clip(result["wav"], -1.0, 1.0),
                                              result["sample_rate"]))
  summary = result_json(result)
  write_json(root + ".json", summary, ensure_ascii=False)
  save_alignment_image(root + ".alignment.png", result, os.path.basename(root))
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
          "target_phonemes": obj.get("target_phonemes"),
          "prosody_reference_audio": (os.path.join(base, obj["prosody_reference_audio"])
                                      if obj.get("prosody_reference_audio") else None),
          "prosody_reference_durations": obj.get("prosody_reference_durations")}))
  return rows, failures


def run_manifest(generator, args, options: dict) -> int:
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
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if options.get("max_seconds") is not None:
          kwargs["max_seconds"] = options["max_seconds"]
        batch.append((line_no, row["id"], generator.prepare(kwargs)))
      except (ValueError, OSError) as e:
        log.error("%s line %d (id %r): %s", args.manifest, line_no, row["id"], e)
        failures.append({"id": row["id"], "line": line_no, "reason": str(e)})
        bar.update(1)
    if not batch:
      continue
    try:
      results = generator.synthesize_batch([r for _, _, r in batch], seed=args.seed + start,
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
  write_json(os.path.join(args.out_dir, "failures.json"), failures, ensure_ascii=False)
  print(json.dumps({"succeeded": ok, "failed": len(failures), "out_dir": args.out_dir}))
  return 0 if not failures else 1


def parse_options(pairs) -> dict[str, Any]:
  """``NAME=VALUE`` pairs; values are parsed as JSON when they can be (numbers, booleans)."""
  out = {}
  for pair in pairs or ():
    name, sep, value = pair.partition("=")
    if not sep or not name:
      raise ValueError(f"--option {pair!r}: expected NAME=VALUE")
    try:
      out[name] = json.loads(value)
    except ValueError:
      out[name] = value
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="jaxtts-synthesize", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="trained generator workdir")
  parser.add_argument("--codec-workdir", default=None, help="the codec component")
  parser.add_argument("--component", action="append", default=[], metavar="ROLE=DIR",
                      help="another component workdir of a pipeline generator")
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--text")
  parser.add_argument("--prompt-audio")
  parser.add_argument("--prompt-text", default=None)
  parser.add_argument("--prosody-reference-audio", default=None,
                      help="another reading of --text whose prosody to transfer (CLONE: "
                           "--option prosody=reference)")
  parser.add_argument("--prosody-reference-durations", default=None, metavar="D1,D2,...",
                      help="its frames per phoneme, where the workdir has no aligner")
  parser.add_argument("--out", help="output wav (single utterance)")
  parser.add_argument("--manifest", help="JSONL requests (batch mode)")
  parser.add_argument("--out-dir", help="output folder (batch mode)")
  parser.add_argument("--batch-size", type=int, default=4, help="rows per generate call")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--max-seconds", type=float, default=None,
                      help="generated audio at most (default: the generator's config)")
  parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                      help="a generator option (see the generator's synthesize_batch)")
  parser.add_argument("--weight-temperature", type=float, default=None)
  parser.add_argument("--scale-temperature", type=float, default=None)
  parser.add_argument("--stay-mode", default=None)
  parser.add_argument("--no-progress", action="store_true")
  parser.add_argument("--verbose", action="store_true", help="show library logs")
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
  logs.setup_logging(args.verbose)
  try:
    options = {"max_seconds": args.max_seconds, "weight_temperature": args.weight_temperature,
               "scale_temperature": args.scale_temperature, "stay_mode": args.stay_mode,
               **parse_options(args.option)}
    options = {k: v for k, v in options.items() if v is not None}
    components = dict(pair.split("=", 1) for pair in args.component if "=" in pair)
    bad = [pair for pair in args.component if "=" not in pair]
    if bad:
      raise ValueError(f"--component {bad[0]!r}: expected ROLE=DIR")
    if args.codec_workdir:
      components["codec"] = args.codec_workdir
    generator = load_generator(args.workdir, args.step, components=components)
    if batch_mode:
      return run_manifest(generator, args, options)
    request = {"text": args.text, "prompt_audio": args.prompt_audio}
    if args.prompt_text is not None:
      request["prompt_text"] = args.prompt_text
    if args.prosody_reference_audio is not None:
      request["prosody_reference_audio"] = args.prosody_reference_audio
    if args.prosody_reference_durations is not None:
      try:
        request["prosody_reference_durations"] = [
            int(d) for d in args.prosody_reference_durations.split(",")]
      except ValueError:
        raise ValueError(f"--prosody-reference-durations "
                         f"{args.prosody_reference_durations!r}: expected integers "
                         f"separated by commas") from None
    result = generator.synthesize(request, seed=args.seed, options=options)
  except (ValueError, OSError) as e:
    parser.exit(1, f"jaxtts-synthesize: error: {e}\n")
  summary = write_outputs(result, args.out)
  print(json.dumps({"out": args.out, "seconds": summary["seconds"],
                    **{k: summary[k] for k in ("frames", "stopped_by") if k in summary},
                    "timings": summary["timings"]}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
