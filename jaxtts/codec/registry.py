"""Codec registry: the training task of a workdir -> its inference `Codec` class.

`load_codec(workdir)` reads ``config.json``, looks the task up here and builds the codec
from the workdir's checkpoint; no trainer is built. A new codec family adds one entry.
"""

from __future__ import annotations

import importlib
from typing import Optional

from jaxtts import workdir as workdir_lib
from jaxtts.codec.base import Codec

# task name -> "module:Class"; imported on use, so one family's dependencies stay its own.
CODECS = {
    "gmm_vae": "jaxtts.codec.gmm_vae_codec:GMMVAECodec",
    "facodec": "jaxtts.codec.facodec_codec:FACodecCodec",
}


def codec_class(task: str):
  if task not in CODECS:
    raise workdir_lib.WorkdirError(f"task {task!r} is not a codec (codecs: "
                                   f"{', '.join(sorted(CODECS))})")
  module, name = CODECS[task].split(":")
  return getattr(importlib.import_module(module), name)


def load_codec(workdir: str, step: Optional[int] = None) -> Codec:
  """The codec trained in ``workdir`` (checkpoint ``step``, default the latest)."""
  cfg = workdir_lib.load_config(workdir)
  task = workdir_lib.require_task(cfg, workdir, CODECS, "a codec")
  return codec_class(task)(workdir, step, cfg=cfg)
