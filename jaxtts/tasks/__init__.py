"""Task registry: `get_task(cfg)` builds the task named by `cfg.task`."""

from __future__ import annotations

import importlib

import ml_collections

# task name -> "module:Class"; modules are imported lazily so a task's heavy deps stay optional.
REGISTRY = {
    "gmm_vae": "jaxtts.tasks.gmm_vae:GMMVAETask",
    "gmm_lm": "jaxtts.tasks.gmm_lm:GMMLMTask",
    "facodec": "jaxtts.tasks.facodec:FACodecTask",
    "ns3": "jaxtts.tasks.ns3:NS3Task",
    "clone": "jaxtts.tasks.clone:CLONETask",
}


def get_task(cfg: ml_collections.ConfigDict):
  if cfg.task not in REGISTRY:
    raise ValueError(f"config.task: unknown task {cfg.task!r}; registered: "
                     f"{', '.join(sorted(REGISTRY))}")
  module, cls = REGISTRY[cfg.task].split(":")
  return getattr(importlib.import_module(module), cls)(cfg)
