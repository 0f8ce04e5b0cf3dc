"""Orbax checkpoints of the train state together with the Grain iterator state.

Each step directory holds two items: `state` (the sharded TrainState, restored straight into
its shardings) and `data` (one JSON per process with its Grain iterator state), so a resumed run
sees exactly the batches an uninterrupted run would. Orbax writes into a temporary directory and
renames it when complete, so a run killed mid-save leaves the previous checkpoint intact.

A checkpoint whose files cannot be read (e.g. a data file overwritten with garbage: Tensorstore
reports ZSTD errors) is moved to ``<workdir>/corrupt_checkpoints/<step>`` and the next older one
is restored (`Checkpointer.restore_newest_intact`). Checkpoints written before the train state
had ``ema_params`` restore into a state whose ``ema_params`` is empty (EMA off).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
from typing import Any, Callable

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jaxtts import logs
from jaxtts.train import mesh as mesh_lib

log = logging.getLogger("jaxtts.train")


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


class _MisplacedMetadataFilter(logging.Filter):
  """Orbax warns through absl that a step's ``_CHECKPOINT_METADATA`` is not in the item folder
  it is asked to read (it sits one level up); nothing is wrong."""

  def filter(self, record: logging.LogRecord) -> bool:
    msg = record.getMessage()
    return not (msg.startswith("Metadata file does not exist")
                and msg.endswith("_CHECKPOINT_METADATA"))


def saved_tree(path: str) -> Any:
  """The metadata tree (nested dicts of array metadata) of a saved state item."""
  quiet = _MisplacedMetadataFilter()
  absl_log = logging.getLogger("absl")
  absl_log.addFilter(quiet)
  try:
    return ocp.PyTreeCheckpointer().metadata(path).item_metadata.tree
  finally:
    absl_log.removeFilter(quiet)


def _absent_empty_fields(abstract_state: Any, saved: Any) -> list[str]:
  """Dataclass fields of ``abstract_state`` that are empty dicts and absent from the saved tree
  (``ema_params`` of a checkpoint written before the EMA existed)."""
  if not dataclasses.is_dataclass(abstract_state) or not isinstance(saved, dict):
    return []
  return [f.name for f in dataclasses.fields(abstract_state)
          if f.name not in saved and getattr(abstract_state, f.name) == {}]


def check_compatible(path: str, abstract_state: Any, limit: int = 8, saved: Any = None) -> None:
  """Raises `CheckpointMismatchError` naming the keys that differ between the saved state at
  ``path`` (its metadata tree ``saved`` when already read) and ``abstract_state`` (missing,
  unexpected, or of another shape)."""
  saved = _shapes(saved_tree(path) if saved is None else saved)
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


def saved_process_count(step_dir: str) -> int | None:
  """How many processes wrote the checkpoint in ``step_dir``: its ``data`` item holds one Grain
  iterator state per process, ``process_<i>-of-<n>.json`` (None without a data item)."""
  data = os.path.join(step_dir, "data")
  names = os.listdir(data) if os.path.isdir(data) else []
  counts = {int(n[:-len(".json")].rsplit("-of-", 1)[1]) for n in names
            if n.startswith("process_") and n.endswith(".json") and "-of-" in n}
  return max(counts) if counts else None


def check_process_count(step_dir: str, step: int) -> None:
  """Refuses (`CheckpointMismatchError`, one line naming both counts) a resume on another
  number of processes than wrote checkpoint ``step``.

  Each process saved its own iterator position over its own slice of the shards; with another
  count the slices differ, so no state fits them (Grain's restore would miss its file, and
  that read error would pass the checkpoint off as corrupt). The global batch does not depend
  on the count; the per-process batch does."""
  saved = saved_process_count(step_dir)
  now = jax.process_count()
  if saved is not None and saved != now:
    raise CheckpointMismatchError(
        f"checkpoint step {step} in {os.path.dirname(step_dir)} was written by {saved} "
        f"processes, this run has {now}: each process saved its own data-iterator position, so "
        f"an exact resume needs {saved} processes; resume with {saved} or train in a fresh "
        "--workdir")


class Checkpointer:

  def __init__(self, directory: str, *, max_to_keep: int, async_save: bool,
               async_timeout_s: int = 1200, barrier_timeout_s: float = 1800):
    self.directory = os.path.abspath(directory)
    self.barrier_timeout_s = barrier_timeout_s
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True,
        async_options=ocp.AsyncOptions(timeout_secs=int(async_timeout_s)))
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data"))
    self._quiet_steps: set[int] = set()  # steps whose late read errors are dropped

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
    from `jax.eval_shape`, so a run can refuse another config before compiling anything), and
    `check_process_count`."""
    check_process_count(os.path.join(self.directory, str(step)), step)
    check_compatible(os.path.join(self.directory, str(step), "state"), abstract_state)

  def restore(self, step: int, abstract_state: Any,
              data_iterator: grain.DatasetIterator | None) -> Any:
    """Restores `state` into `abstract_state`'s shapes/shardings and the iterator in place.

    A checkpoint of another configuration is refused with `CheckpointMismatchError` naming
    the mismatched keys (before Orbax reads any array).
    """
    path = os.path.join(self.directory, str(step), "state")
    if data_iterator is not None:
      check_process_count(os.path.dirname(path), step)
    saved = saved_tree(path)
    check_compatible(path, abstract_state, saved=saved)
    absent = _absent_empty_fields(abstract_state, saved)
    target = abstract_state
    if absent:  # restore the other fields as a dict (what Orbax saved), then rebuild
      target = {f.name: getattr(abstract_state, f.name)
                for f in dataclasses.fields(abstract_state) if f.name not in absent}
    items = dict(state=ocp.args.StandardRestore(target))
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    state = self.manager.restore(step, args=ocp.args.Composite(**items))["state"]
    if absent:
      state = abstract_state.replace(**state, **{name: {} for name in absent})
    return state

  def restore_newest_intact(self, abstract_state: Any,
                            make_iterator: Callable[[], grain.DatasetIterator | None]
                            ) -> tuple[int | None, Any, grain.DatasetIterator | None]:
    """Restores the newest checkpoint that can be read, with a fresh ``make_iterator()``.

    A step that fails to restore for any reason but `CheckpointMismatchError` (another config:
    raised) is logged as corrupt, moved to ``<workdir>/corrupt_checkpoints/<step>`` (so new
    saves of that step number and inference tools do not meet it) and the next older step is
    tried. Every process must fail a step for it to count as corrupt on all of them (one
    process that cannot read its shards fails the step everywhere). Returns ``(step, state,
    iterator)``, or ``(None, None, fresh iterator)`` when no step could be restored.
    """
    for step in sorted(self.manager.all_steps(), reverse=True):
      iterator = make_iterator()
      error = None
      if step not in self._quiet_steps:  # before the read: late reports can precede the raise
        logs.drop_failed_read_reports(os.path.join(self.directory, str(step)))
        self._quiet_steps.add(step)
      try:
        state = self.restore(step, abstract_state, iterator)
      except CheckpointMismatchError:
        raise
      except Exception as e:  # pylint: disable=broad-except  (Orbax/Tensorstore/Grain errors)
        error = e
      if _all_processes_ok(error is None):
        return step, state, iterator
      if hasattr(iterator, "close"):
        iterator.close()
      reason = _reason(error) if error else "failed on another process"
      log.error("checkpoint step %d in %s is corrupt (%s); falling back to an older checkpoint",
                step, self.directory, reason)
      self.quarantine(step)
    return None, None, make_iterator()

  def quarantine(self, step: int) -> str:
    """Moves step ``step`` out of the checkpoint directory (process 0), to
    ``<workdir>/corrupt_checkpoints/<step>[.<n>]``; returns the new path."""
    root = os.path.join(os.path.dirname(self.directory), "corrupt_checkpoints")
    dest = os.path.join(root, str(step))
    n = 1
    while os.path.exists(dest):
      dest = os.path.join(root, f"{step}.{n}")
      n += 1
    if jax.process_index() == 0:
      os.makedirs(root, exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), dest)
      log.warning("moved corrupt checkpoint step %d to %s", step, dest)
    mesh_lib.barrier(f"quarantine/{step}/{n}", self.barrier_timeout_s)
    self.manager.reload()
    return dest

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self, timeout_s: float = 60.0) -> None:
    """Waits for saves, closes the manager, then joins Orbax's background signalling threads.

    `CheckpointManager.close` leaves some of those threads running (its background clean-up
    of temporary directories, started when the manager opens). A run that exits right after
    opening the manager, as a refused resume does, could reach interpreter shutdown while one
    was still working, and the thread then printed "cannot schedule new futures after
    interpreter shutdown" with a traceback under the one-line error (seen once in
    `test_resume_refuses_data_and_model_changes` on a fresh clone). Each is joined for up to
    ``timeout_s``."""
    self.manager.wait_until_finished()
    self.manager.close()
    for thread in threading.enumerate():
      if (thread is not threading.current_thread() and thread.is_alive()
          and type(thread).__module__.startswith("orbax.")):
        thread.join(timeout_s)


def abstract_with_shardings(state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings, for `Checkpointer.restore`."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state, shardings)


def _all_processes_ok(ok: bool) -> bool:
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok, np.int32))))


def _reason(e: BaseException, limit: int = 240) -> str:
  """The innermost cause of ``e`` (Tensorstore's "ZSTD_decompressStream() failed ..." rather
  than Orbax's wrapper with the whole TensorStore spec), on one line."""
  while (e.__cause__ or e.__context__) is not None:
    e = e.__cause__ or e.__context__
  text = " ".join(str(e).split())
  text = text if len(text) <= limit else text[:limit] + "..."
  return f"{type(e).__name__}: {text}"
