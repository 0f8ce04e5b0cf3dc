"""A trained workdir, read for inference: its config, its checkpoint steps and the parameters
a model is evaluated with, without building a Trainer, an optimizer or a data pipeline.

A `jaxtts-train` workdir holds ``config.json`` and ``checkpoints/<step>/state`` (Orbax, the
whole `TrainState`). Codecs (`jaxtts.codec.registry`) and generators (`jaxtts.infer.registry`)
restore only the parameter subtrees they need (Orbax partial restore):

- ``ema_params/<group>`` when the run kept an EMA of that group (``train.ema_decay > 0``);
- else, for a group trained with schedule-free AdamW (the GMM-LM paper §4), the averaged x
  sequence ``(y - (1 - b1) z) / b1`` from ``params/<group>`` and the optimizer's ``z``, ``b1``
  (`optax.contrib.schedule_free_eval_params`);
- else ``params/<group>``.

This is the rule `jaxtts.train.loop.Trainer.eval_params` applies in training. Every failure
is a `WorkdirError` (a ``ValueError``) whose one-line message names the path and, for a
checkpoint, its step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import types
from typing import Any, Iterable, Optional

import jax
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from jaxtts import logs

SCHEDULE_FREE = "schedule_free_adamw"


class WorkdirError(ValueError):
  """A workdir that cannot be used: missing, of another task, or with a bad checkpoint."""


class CorruptCheckpointError(WorkdirError):
  """A checkpoint step whose files cannot be read (truncated or overwritten data)."""


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """``workdir/config.json`` as a ConfigDict."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise WorkdirError(f"{path}: no config.json; is {workdir!r} a jaxtts-train workdir?")
  try:
    with open(path, encoding="utf-8") as f:
      return ml_collections.ConfigDict(json.load(f))
  except (OSError, ValueError) as e:
    raise WorkdirError(f"{path}: unreadable config ({e})") from e


def require_task(cfg: ml_collections.ConfigDict, workdir: str, tasks: Iterable[str],
                 what: str) -> str:
  """The config's task, if it is one of ``tasks``; else a `WorkdirError` naming both."""
  tasks = tuple(tasks)
  task = cfg.get("task")
  if task not in tasks:
    raise WorkdirError(f"{workdir}: a {task!r} workdir, but {what} needs one of "
                       f"{', '.join(map(repr, tasks))}")
  return task


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def checkpoint_steps(workdir: str) -> list[int]:
  """Finalized checkpoint steps, ascending (Orbax's temporary directories of an unfinished
  save are not steps)."""
  root = checkpoint_dir(workdir)
  if not os.path.isdir(root):
    return []
  return sorted(int(name) for name in os.listdir(root)
                if name.isdigit() and os.path.isdir(os.path.join(root, name, "state")))


def _key(k: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _find_schedule_free(tree: Any) -> Optional[dict]:
  """The ``{"b1", "z", ...}`` node of a saved optimizer state (the chain's schedule-free
  element), or None."""
  if isinstance(tree, dict):
    if "z" in tree and "b1" in tree:
      return tree
    for v in tree.values():
      found = _find_schedule_free(v)
      if found is not None:
        return found
  elif isinstance(tree, (list, tuple)):
    for v in tree:
      found = _find_schedule_free(v)
      if found is not None:
        return found
  return None


def _path_to(tree: Any, node: Any, prefix: tuple = ()) -> Optional[tuple]:
  if tree is node:
    return prefix
  items = (tree.items() if isinstance(tree, dict)
           else enumerate(tree) if isinstance(tree, (list, tuple)) else ())
  for k, v in items:
    found = _path_to(v, node, prefix + (k,))
    if found is not None:
      return found
  return None


def _subtree(tree: Any, path: tuple) -> Any:
  for k in path:
    tree = tree[k]
  return tree


def _nest(path: tuple, value: Any) -> Any:
  """``{path[0]: {path[1]: ... value}}`` with string keys (Orbax's metadata keys lists by
  index as strings or ints; partial restore takes dicts)."""
  for k in reversed(path):
    value = {k: value}
  return value


def _merge(a: dict, b: dict) -> dict:
  out = dict(a)
  for k, v in b.items():
    out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
  return out


def ema_groups(cfg: ml_collections.ConfigDict, groups: Iterable[str]) -> tuple[str, ...]:
  """Groups whose EMA the run kept (``train.ema_decay > 0``; ``train.ema_groups``, default
  every group but the discriminator)."""
  train = cfg.get("train", {})
  if float(train.get("ema_decay", 0.0) or 0.0) <= 0.0:
    return ()
  chosen = train.get("ema_groups", None)
  if chosen is None:
    return tuple(g for g in groups if g != "discriminator")
  return tuple(g for g in groups if g in tuple(chosen))


def restore_eval_params(workdir: str, groups: Iterable[str], step: Optional[int] = None,
                        cfg: Optional[ml_collections.ConfigDict] = None
                        ) -> tuple[int, dict[str, Any]]:
  """Returns ``(step, {group: parameter pytree of jax arrays})`` for ``groups`` of checkpoint
  ``step`` (default: the latest), chosen by the module docstring's rule.

  Raises `WorkdirError` for a workdir without checkpoints, a step that does not exist or a
  checkpoint without these groups (another task's), and `CorruptCheckpointError` naming the
  step and path when Orbax cannot read the files.
  """
  cfg = cfg if cfg is not None else load_config(workdir)
  groups = tuple(groups)
  steps = checkpoint_steps(workdir)
  if not steps:
    raise WorkdirError(f"{checkpoint_dir(workdir)}: no checkpoint (train the workdir first)")
  step = steps[-1] if step is None else int(step)
  path = os.path.join(checkpoint_dir(workdir), str(step), "state")
  if step not in steps:
    raise WorkdirError(f"{path}: no checkpoint step {step} (steps: {steps})")
  checkpointer = ocp.PyTreeCheckpointer()
  with _quiet_orbax():
    return _restore(checkpointer, path, step, steps, cfg, groups)


@contextlib.contextmanager
def _quiet_orbax():
  """Orbax warns through absl that the step's ``_CHECKPOINT_METADATA`` is not in the item
  folder it is asked to read (it sits one level up); nothing is wrong, so below ERROR it is
  not shown."""
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(max(level, logging.ERROR))
  try:
    yield
  finally:
    logger.setLevel(level)


def _restore(checkpointer, path, step, steps, cfg, groups):
  try:
    saved = checkpointer.metadata(path).item_metadata.tree
  except Exception as e:  # pylint: disable=broad-except  (Orbax raises many types)
    raise CorruptCheckpointError(f"{path}: checkpoint step {step} has unreadable metadata "
                                 f"({type(e).__name__}: {_short(e)})") from e
  emas = set(ema_groups(cfg, groups))
  wanted: dict = {}
  plan = {}
  for g in groups:
    source = "ema_params" if g in emas else "params"
    node = saved.get(source, {}).get(g) if isinstance(saved.get(source), dict) else None
    if node is None:
      have = sorted(saved.get("params", {})) if isinstance(saved.get("params"), dict) else []
      raise WorkdirError(f"{path}: checkpoint step {step} has no {source}/{g} (its groups: "
                         f"{have}); is this the workdir of another task?")
    wanted = _merge(wanted, _nest((source, g), node))
    plan[g] = (source, None)
    opt = cfg.get("train", {}).get("optimizers", {}).get(g, {})
    if source == "params" and opt.get("name") == SCHEDULE_FREE:
      sf = _find_schedule_free(saved.get("opt_state", {}).get(g))
      if sf is None:
        raise WorkdirError(f"{path}: step {step}: group {g!r} was trained schedule-free but "
                           f"its optimizer state has no z/b1")
      # The whole group's optimizer state: a partial restore must keep its containers (the
      # optax chain is a tuple), and it is read once per load.
      sf_path = ("opt_state", g) + _path_to(saved["opt_state"][g], sf)
      wanted = _merge(wanted, _nest(("opt_state", g), saved["opt_state"][g]))
      plan[g] = (source, sf_path)
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted,
                          is_leaf=lambda x: hasattr(x, "shape"))
  logs.drop_failed_read_reports(path)  # before the read: late reports can precede the raise
  try:
    restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
        item=wanted, restore_args=as_numpy, partial_restore=True))
  except Exception as e:  # pylint: disable=broad-except
    raise CorruptCheckpointError(
        f"{path}: checkpoint step {step} cannot be read ({type(e).__name__}: {_short(e)}); "
        f"other steps: {[s for s in steps if s != step] or 'none'} (--step)") from e
  out = {}
  for g, (source, sf_path) in plan.items():
    params = jax.tree.map(jax.numpy.asarray, restored[source][g])
    if sf_path is not None:
      sf = _subtree(restored, sf_path)
      state = types.SimpleNamespace(z=jax.tree.map(jax.numpy.asarray, sf["z"]),
                                    b1=jax.numpy.asarray(sf["b1"]))
      params = optax.contrib.schedule_free_eval_params(state, params)
    out[g] = params
  return step, out


def _short(e: BaseException, limit: int = 200) -> str:
  text = " ".join(str(e).split())
  return text if len(text) <= limit else text[:limit] + "..."
