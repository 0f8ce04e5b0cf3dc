"""Generator registry: the training task of a workdir -> its `Generator` class.

`load_generator(workdir, components=...)` reads ``config.json``, looks its task up here and
builds the generator; ``components`` names the other workdirs a pipeline needs by role
(``{"codec": DIR}``, later NaturalSpeech 3's duration/prosody model), and a generator refuses
roles it does not take. A new family adds one entry.
"""

from __future__ import annotations

import importlib
from typing import Mapping, Optional

from jaxtts import workdir as workdir_lib
from jaxtts.infer.base import Generator

# task name -> "module:Class"; imported on use, so one family's dependencies stay its own.
GENERATORS = {
    "gmm_lm": "jaxtts.infer.gmm_lm:GMMLMGenerator",
    "ns3": "jaxtts.infer.ns3:NS3Generator",
    "clone": "jaxtts.infer.clone:CLONEGenerator",
}


def generator_class(task: str, workdir: str = ""):
  if task not in GENERATORS:
    where = f"{workdir}: " if workdir else ""
    raise workdir_lib.WorkdirError(f"{where}task {task!r} has no zero-shot generator (generators: "
                                   f"{', '.join(sorted(GENERATORS))}); for a codec use "
                                   f"`jaxtts-codec` or `jaxtts-eval codec`")
  module, name = GENERATORS[task].split(":")
  return getattr(importlib.import_module(module), name)


def load_generator(workdir: str, step: Optional[int] = None, *,
                   components: Optional[Mapping[str, str]] = None,
                   component_steps: Optional[Mapping[str, int]] = None,
                   **kwargs) -> Generator:
  """The generator of ``workdir`` (its checkpoint ``step``, default the latest)."""
  cfg = workdir_lib.load_config(workdir)
  cls = generator_class(cfg.get("task"), workdir)
  components = {k: v for k, v in (components or {}).items() if v}
  roles = tuple(getattr(cls, "component_names", ()))
  for role in list(components) + list(component_steps or {}):
    if role not in roles:
      raise workdir_lib.WorkdirError(
          f"--{role}-workdir: the {cls.task} generator of {workdir} takes no {role} "
          f"(its components: {', '.join(roles) or 'none'})")
  return cls(workdir, step, components=components, component_steps=component_steps, cfg=cfg,
             **kwargs)
