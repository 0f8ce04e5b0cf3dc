"""Orbax checkpoints of the train state together with the Grain iterator state.

Each step directory holds two items: `state` (the sharded TrainState, restored straight into
its shardings) and `data` (one JSON per process with its Grain iterator state), so a resumed run
sees exactly the batches an uninterrupted run would. Orbax writes into a temporary directory and
renames it when complete, so a run killed mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
  """A checkpoint whose parameter tree does not fit the current config."""


def _key_name(k: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  return {"/".join(_key_name(k) for k in path): tuple(leaf.shape) for path, leaf in flat
          if hasattr(leaf, "shape")}


def check_compatible(path: str, abstract_state: Any, limit: int = 8) -> None:
  """Raises `CheckpointMismatchError` naming the keys that differ between the saved state at
  ``path`` and ``abstract_state`` (missing, unexpected, or of another shape)."""
  saved = _shapes(ocp.PyTreeCheckpointer().metadata(path).item_metadata.tree)
  wanted = _shapes(abstract_state)
  # Parameters first: the optimizer state repeats their shapes.
  order = lambda k: (not k.startswith("params/"), k)
  missing = sorted(set(wanted) - set(saved), key=order)
  unexpected = sorted(set(saved) - set(wanted), key=order)
  reshaped = sorted((k for k in set(saved) & set(wanted) if saved[k] != wanted[k]), key=order)
  if not (missing or unexpected or reshaped):
    return
  parts = []
  if reshaped:
    parts.append("shape differs: " + ", ".join(
        f"{k} (checkpoint {saved[k]}, config {wanted[k]})" for k in reshaped[:limit]))
  if missing:
    parts.append("missing from the checkpoint: " + ", ".join(missing[:limit]))
  if unexpected:
    parts.append("not in this config: " + ", ".join(unexpected[:limit]))
  counts = f"{len(reshaped)} reshaped, {len(missing)} missing, {len(unexpected)} unexpected"
  raise CheckpointMismatchError(
      f"{path} was written by another configuration ({counts}); " + "; ".join(parts)
      + ". Use the config the checkpoint was trained with (its workdir's config.json) or a "
      "fresh --workdir.")


class Checkpointer:

  def __init__(self, directory: str, *, max_to_keep: int, async_save: bool):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iterator: grain.DatasetIterator | None,
           *, force: bool = False) -> bool:
    items = dict(state=ocp.args.StandardSave(state))
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def check(self, step: int, abstract_state: Any) -> None:
    """`check_compatible` of checkpoint ``step`` against ``abstract_state`` (shapes only, e.g.
    from `jax.eval_shape`, so a run can refuse another config before compiling anything)."""
    check_compatible(os.path.join(self.directory, str(step), "state"), abstract_state)

  def restore(self, step: int, abstract_state: Any,
              data_iterator: grain.DatasetIterator | None) -> Any:
    """Restores `state` into `abstract_state`'s shapes/shardings and the iterator in place.

    A checkpoint of another configuration is refused with `CheckpointMismatchError` naming
    the mismatched keys (before Orbax reads any array).
    """
    check_compatible(os.path.join(self.directory, str(step), "state"), abstract_state)
    items = dict(state=ocp.args.StandardRestore(abstract_state))
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_with_shardings(state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings, for `Checkpointer.restore`."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state, shardings)
