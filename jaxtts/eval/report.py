"""Evaluation reports: ``report.json`` + ``report.md`` (tables shaped like the papers') and
metric bar plots. Files are written to a temporary name and renamed."""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from jaxtts.files import atomic_open, json_default
from jaxtts.plots import figure, save_figure

# (key, header, format); a missing value prints as "-".
SCORE_COLUMNS = (("system", "System", "{}"), ("n", "N", "{}"), ("wer", "WER (%)", "{:.2f}"),
                 ("cer", "CER (%)", "{:.2f}"), ("sim_prompt", "SIM (prompt)", "{:.3f}"),
                 ("sim_reference", "SIM (ground truth)", "{:.3f}"),
                 ("dnsmos_ovrl", "DNSMOS OVRL", "{:.2f}"), ("seconds", "Seconds", "{:.2f}"))
ZERO_SHOT_COLUMNS = (("prompt", "Prompt", "{}"),) + SCORE_COLUMNS + (
    ("f0_mean_std_hz", "F0 spread (Hz)", "{:.1f}"),
    ("phoneme_duration_std_frames", "Duration spread (frames)", "{:.2f}"))
CODEC_COLUMNS = (("metric", "Metric", "{}"), ("mean", "Mean", "{:.3f}"), ("std", "Std", "{:.3f}"),
                 ("n", "N", "{}"), ("better", "Better", "{}"))


def _cell(row: dict, key: str, fmt: str) -> str:
  value = row.get(key)
  if value is None or (isinstance(value, float) and not np.isfinite(value)):
    return "-"
  return fmt.format(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
  """A GitHub-markdown table; columns no row has are dropped."""
  columns = [c for c in columns if any(r.get(c[0]) is not None for r in rows)]
  lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
           "|" + "|".join("---" for _ in columns) + "|"]
  lines += ["| " + " | ".join(_cell(r, k, f) for k, _, f in columns) + " |" for r in rows]
  return "\n".join(lines)


def markdown_report(title: str, result: dict[str, Any], columns, notes: Sequence[str] = ()
                    ) -> str:
  """Title, the table of ``result["table"]``, backends, counts of failed/excluded rows."""
  parts = [f"# {title}", "", markdown_table(result["table"], columns), ""]
  backends = result.get("backends") or {}
  if backends:
    parts.append("Backends: " + "; ".join(f"{k}: {json.dumps(v)}" for k, v in backends.items()
                                          if v is not None))
  counts = [f"{k.replace('num_', '').replace('_', ' ')}: {result[k]}"
            for k in ("num_failed", "num_empty_text", "num_metric_failures") if k in result]
  if counts:
    parts.append("Rows " + ", ".join(counts) + ".")
  parts += [f"- {n}" for n in notes]
  return "\n".join(parts).rstrip() + "\n"


def _write_text(path: str, text: str) -> None:
  with atomic_open(path, "w", encoding="utf-8") as f:
    f.write(text)


def write_report(out_dir: str, result: dict[str, Any]) -> None:
  """``out_dir/report.json`` (everything but the markdown) and ``out_dir/report.md``."""
  os.makedirs(out_dir, exist_ok=True)
  body = {k: v for k, v in result.items() if k != "markdown"}
  _write_text(os.path.join(out_dir, "report.json"),
              json.dumps(body, indent=1, sort_keys=True, default=json_default,
                         ensure_ascii=False) + "\n")
  _write_text(os.path.join(out_dir, "report.md"), result["markdown"])


def metric_bars(path: str, table: Sequence[dict], metrics: Sequence[tuple[str, str]],
                label_keys: Sequence[str] = ("prompt", "system")) -> None:
  """One bar panel per metric (``(key, title)``), one bar per table row."""
  metrics = [m for m in metrics if any(r.get(m[0]) is not None for r in table)]
  if not metrics:
    return
  labels = [" ".join(str(r[k]) for k in label_keys if r.get(k) is not None) for r in table]
  fig = figure(figsize=(3.2 * len(metrics), 3.2 + 0.12 * len(table)))
  axes = fig.subplots(1, len(metrics), squeeze=False)
  for ax, (key, title) in zip(axes[0], metrics):
    values = [r.get(key) if r.get(key) is not None else np.nan for r in table]
    ax.barh(np.arange(len(table)), values, color="tab:blue")
    ax.set_yticks(np.arange(len(table)), labels if ax is axes[0][0] else [""] * len(table),
                  fontsize=7)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  save_figure(fig, path, dpi=100)
