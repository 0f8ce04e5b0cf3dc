"""Loading a trained workdir for inference: its config, task and evaluation parameters."""

from __future__ import annotations

import json
import os
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from jaxtts.train import checkpoint as ckpt_lib
from jaxtts.train import loop


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no config.json; is {workdir!r} a jaxtts-train workdir?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_trained(workdir: str, step: int | None = None) -> tuple[loop.Trainer, dict[str, Any]]:
  """Returns the workdir's Trainer (for its task and mesh) and `{group: eval params}`.

  Schedule-free runs export their averaged (x) parameters, as `optim.eval_params` defines.
  """
  cfg = load_config(workdir)
  trainer = loop.Trainer(cfg, workdir)
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=None,
                                       async_save=False)
  step = checkpointer.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"{checkpointer.directory}: no checkpoint to load")
  # Shapes from the abstract init (no compilation), shardings from the trainer's mesh.
  shapes = jax.tree.map(lambda x: x.value if isinstance(x, nn.LogicallyPartitioned) else x,
                        trainer.abstract_boxed,
                        is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  abstract = ckpt_lib.abstract_with_shardings(shapes, trainer.state_shardings)
  state = checkpointer.restore(step, abstract, None)
  checkpointer.close()
  params = jax.jit(trainer.eval_params)(state)
  return trainer, params
