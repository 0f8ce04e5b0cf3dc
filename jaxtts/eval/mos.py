"""Reference-free quality: DNSMOS (Reddy et al., ICASSP 2022), a MOS predictor.

DNSMOS P.835 predicts, on the 1-5 MOS scale, the signal quality (``sig_mos``), the background
noise quality (``bak_mos``) and the overall quality (``ovrl_mos``) of a 16 kHz clip; a second
network predicts a P.808 overall MOS (``p808_mos``). It was trained on human ratings of noisy
and enhanced speech, so it is a proxy for naturalness/quality, not a substitute for the
human MOS/CMOS of the zero-shot TTS papers (the GMM-LM paper's naturalness MOS, NaturalSpeech's
CMOS); use it to compare systems on the same texts. Higher is better.

This wraps ``speechmos.dnsmos.run`` (the official ONNX models shipped in the ``speechmos``
wheel, run with onnxruntime on CPU). DNSMOS scores 9.01 s windows with a 1 s hop and averages
them. A clip shorter than 9.01 s is tiled (repeated end to end) until it is long enough, as in
Microsoft's reference script ``dnsmos_local.py``; so a short clip is scored as if looped, and
the seam between repeats is part of what is scored. An empty clip raises ``ValueError``.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from jaxtts.eval.backends import AudioLike, EVAL_SAMPLE_RATE, import_backend, load_audio

DNSMOS_KEYS = ("ovrl_mos", "sig_mos", "bak_mos", "p808_mos")
DNSMOS_WINDOW_SECONDS = 9.01


def dnsmos(audio: AudioLike, sample_rate: Optional[int] = None) -> Dict[str, float]:
  """DNSMOS P.835 and P.808 scores (floats, clipped to the 1-5 MOS scale) of one clip.

  Args:
    audio: a path, or an array [T] (int16 or float in [-1, 1]; clipped) with its
      ``sample_rate``; resampled to 16 kHz.

  Returns:
    ``{"ovrl_mos", "sig_mos", "bak_mos", "p808_mos"}``.

  Raises:
    ValueError: an empty clip (DNSMOS would loop forever trying to tile it).
  """
  wav = load_audio(audio, sample_rate, EVAL_SAMPLE_RATE)
  if wav.size == 0:
    raise ValueError("dnsmos: empty audio")
  speechmos_dnsmos = import_backend("speechmos.dnsmos", "speechmos")
  scores = speechmos_dnsmos.run(np.clip(wav, -1.0, 1.0), sr=EVAL_SAMPLE_RATE)
  # The P.808 score is the network's raw output and the P.835 ones a polynomial of it: both can
  # leave the 1-5 MOS scale by a little on degenerate audio. Clipped here, where computed.
  return {k: float(np.clip(scores[k], 1.0, 5.0)) for k in DNSMOS_KEYS}
