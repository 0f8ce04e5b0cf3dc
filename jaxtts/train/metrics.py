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
    tmp = self._jsonl_path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(lines)
    os.replace(tmp, self._jsonl_path)

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
    from jaxtts.audio.io import save_wav  # pylint: disable=import-outside-toplevel
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


def figure(**kwargs):
  """A matplotlib Figure on its own Agg canvas: no pyplot state and no backend switch (inline
  plots of a notebook that calls these writers keep working)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  fig = Figure(**kwargs)
  FigureCanvasAgg(fig)
  return fig


def save_figure(fig, path: str, **kwargs) -> None:
  """Writes ``fig`` to a temporary name beside ``path`` and renames it."""
  root, ext = os.path.splitext(path)
  tmp = f"{root}.tmp-{os.getpid()}{ext or '.png'}"
  fig.savefig(tmp, **kwargs)
  os.replace(tmp, path)


def save_image(path: str, array: np.ndarray, *, title: str = "", xlabel: str = "",
               ylabel: str = "") -> np.ndarray:
  """Draws a 2-D array [x, y] (x horizontal) to PNG; returns the RGB pixels [H, W, 3]."""
  fig = figure(figsize=(8, 3), dpi=100)
  ax = fig.subplots()
  im = ax.imshow(np.asarray(array, np.float32).T, origin="lower", aspect="auto",
                 interpolation="none")
  fig.colorbar(im, ax=ax)
  ax.set_title(title)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  fig.tight_layout()
  fig.canvas.draw()
  rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
  save_figure(fig, path)
  return rgb
