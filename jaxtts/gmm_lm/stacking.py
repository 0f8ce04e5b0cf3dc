"""Frames per decoder step (Tacotron's reduction factor, Wang et al. 2017, §3.3): the GMM-LM
models ``r`` consecutive codec frames as one step of ``r * D`` dims.

GMM-LM (Lin & He, ICLR 2025) runs one step per codec frame, at the paper codec's 31.25
frames/s (16 kHz, hop 512). The espeak codec runs at 80 frames/s (hop 200), where neighbouring
frames are nearly equal: the next frame is predicted from the previous one almost without the
text, so the alignment gets little gradient. Stacking ``r`` frames restores the paper's step
rate (``r = 2``: 40 steps/s, about 4 steps per espeak phoneme) and halves the decoder's
sequence. ``r = 1`` is the paper. Works on NumPy and JAX arrays alike (reshapes only).
"""

from __future__ import annotations

from typing import Any


def stack_frames(latents: Any, lengths: Any, r: int) -> tuple[Any, Any]:
  """``latents [B, I, D]``, ``lengths [B]`` -> ``[B, I // r, r * D]``, ``lengths // r``.

  Step ``k`` holds frames ``k r .. k r + r - 1`` in order (``[h_{kr}; h_{kr+1}; ...]``). The
  last ``I mod r`` frames of the buffer and each row's last ``length mod r`` real frames
  (under ``r`` frames, 25 ms at 80 frames/s for ``r = 2``) are dropped: a partial step would
  need a per-dimension mask in the mixture likelihood.
  """
  r = int(r)
  if r == 1:
    return latents, lengths
  b, i, d = latents.shape
  steps = i // r
  return latents[:, :steps * r].reshape(b, steps, r * d), lengths // r


def unstack_frames(stacked: Any, r: int) -> Any:
  """``[..., F, r * D]`` -> ``[..., F * r, D]`` (the inverse of `stack_frames`' reshape)."""
  r = int(r)
  if r == 1:
    return stacked
  *lead, f, rd = stacked.shape
  if rd % r:
    raise ValueError(f"unstack_frames: last dim {rd} is not a multiple of r={r}")
  return stacked.reshape(*lead, f * r, rd // r)


def frames_per_step(cfg: Any) -> int:
  """``model.frames_per_step`` (1 in workdirs from before the field: the paper's)."""
  r = int(cfg.model.get("frames_per_step", 1))
  if r < 1:
    raise ValueError(f"config.model.frames_per_step must be >= 1, got {r}")
  return r
