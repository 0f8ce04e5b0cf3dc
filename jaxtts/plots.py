"""Figures for TensorBoard, reports and notebooks: arrays and spectrograms to PNG.

Every figure has its own Agg canvas (no pyplot state, no backend switch, so a notebook's
inline plots keep working) and is written atomically (`jaxtts.files.atomic_write`).
"""

from __future__ import annotations

import os
from typing import Sequence

import librosa
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxtts.files import atomic_write

# The display spectrogram of every plot: 80 mel bins, 1024-point FFT, 50 ms window, and a hop
# of 1/80 s (200 samples at 16 kHz, the corpus' frame hop).
MEL_BINS = 80
MEL_N_FFT = 1024
MEL_FRAMES_PER_SECOND = 80


def figure(**kwargs) -> Figure:
  """A matplotlib Figure on its own Agg canvas."""
  fig = Figure(**kwargs)
  FigureCanvasAgg(fig)
  return fig


def save_figure(fig: Figure, path: str, **kwargs) -> None:
  """Writes ``fig`` to ``path`` (PNG unless the extension says otherwise), atomically."""
  if not os.path.splitext(path)[1]:
    kwargs.setdefault("format", "png")  # else savefig would append ".png" to the temp name
  atomic_write(path, lambda tmp: fig.savefig(tmp, **kwargs))


def save_image(path: str, array: np.ndarray, *, title: str = "", xlabel: str = "",
               ylabel: str = "") -> np.ndarray:
  """Draws a 2-D array ``[x, y]`` (x horizontal) to PNG; returns the RGB pixels [H, W, 3]."""
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


def display_mel(audio: np.ndarray, sample_rate: int) -> np.ndarray:
  """The display log-mel spectrogram ``[frames, 80]`` (dB, top 80 dB) of a waveform ``[T]``."""
  mel = librosa.feature.melspectrogram(
      y=np.asarray(audio, np.float32), sr=sample_rate, n_fft=MEL_N_FFT,
      hop_length=max(1, sample_rate // MEL_FRAMES_PER_SECOND), n_mels=MEL_BINS)
  return librosa.power_to_db(mel + 1e-10, ref=1.0, top_db=80.0).T


def save_mels(path: str, named_audio: Sequence[tuple[str, np.ndarray]],
              sample_rate: int) -> None:
  """`display_mel` of each ``(title, audio)``, stacked vertically in one PNG."""
  fig = figure(figsize=(8, 2.2 * len(named_audio)))
  axes = fig.subplots(len(named_audio), 1, squeeze=False)
  for ax, (title, audio) in zip(axes[:, 0], named_audio):
    ax.imshow(display_mel(audio, sample_rate).T, origin="lower", aspect="auto",
              interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_ylabel("mel bin")
  axes[-1, 0].set_xlabel("frame")
  fig.tight_layout()
  save_figure(fig, path, dpi=90)
