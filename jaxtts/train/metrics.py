"""Metric sinks: `metrics.jsonl`, TensorBoard (scalars, audio, images) on process 0.

Tasks hand the writer plain arrays; it knows nothing of speech. Images are 2-D arrays
(e.g. a log-mel spectrogram [frames, bins] or an alignment [frames, phonemes]) drawn with a
colormap and written both to TensorBoard and as PNG files under `samples/`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np

from jaxtts.audio.io import save_wav
from jaxtts.files import atomic_open
from jaxtts.plots import save_image


class MetricWriter:

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self.workdir = workdir
    self.is_main = jax.process_index() == 0
    self._tb = None
    if self.is_main:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    self._jsonl_path = os.path.join(workdir, "metrics.jsonl")

  def truncate_after(self, step: int) -> None:
    """Drops log lines past `step` (a resumed run re-logs them; no duplicates remain)."""
    if not self.is_main or not os.path.exists(self._jsonl_path):
      return
    with open(self._jsonl_path) as f:
      lines = [l for l in f if l.strip() and json.loads(l)["step"] <= step]
    with atomic_open(self._jsonl_path, "w") as f:
      f.writelines(lines)

  def scalars(self, step: int, values: Mapping[str, Any]) -> None:
    if not self.is_main:
      return
    values = {k: float(v) for k, v in values.items()}
    with open(self._jsonl_path, "a") as f:
      f.write(json.dumps({"step": int(step), **values}, sort_keys=True) + "\n")
    if self._tb is not None:
      for k, v in values.items():
        self._tb.add_scalar(k, v, step)

  def audio(self, step: int, name: str, wav: np.ndarray, sample_rate: int) -> str | None:
    """Writes `samples/step_<N>/<name>.wav` and a TensorBoard audio summary."""
    if not self.is_main:
      return None
    path = os.path.join(self.workdir, "samples", f"step_{step:07d}", f"{name}.wav")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    wav = np.clip(np.asarray(wav, np.float32), -1.0, 1.0)
    save_wav(path, wav, sample_rate)
    if self._tb is not None:
      self._tb.add_audio(name, wav, step, sample_rate=sample_rate)
    return path

  def image(self, step: int, name: str, array: np.ndarray, *, xlabel: str = "",
            ylabel: str = "") -> str | None:
    """Writes a 2-D array [x, y] as `samples/step_<N>/<name>.png` and to TensorBoard."""
    if not self.is_main:
      return None
    path = os.path.join(self.workdir, "samples", f"step_{step:07d}", f"{name}.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rgb = save_image(path, array, title=name, xlabel=xlabel, ylabel=ylabel)
    if self._tb is not None:
      self._tb.add_image(name, rgb, step, dataformats="HWC")
    return path

  def text(self, step: int, name: str, value: str) -> None:
    if self.is_main and self._tb is not None:
      self._tb.add_text(name, value, step)

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
