"""The data methods of the Task protocol for tasks that train on a `jaxtts.data` corpus
(``config.data``: ArrayRecord shards + manifest.json, the Grain pipeline of
`jaxtts.data.pipeline`). Tasks inherit `CorpusData`; the trainer only calls these methods, so
`jaxtts.train` reads no manifest and builds no pipeline itself.

Batches are process-local host dicts of NumPy arrays (``global_batch_size //
jax.process_count()`` rows, CONTRACTS.md "Host batches"); the trainer assembles them into
global arrays.
"""

from __future__ import annotations

import logging
import os
from typing import Iterator

import grain
import ml_collections
import numpy as np

from jaxtts.data import features, pipeline
from jaxtts.data.source import read_manifest

log = logging.getLogger(__name__)


class CorpusData:
  """`train_iterator`, `num_eval_examples` and `eval_batches` from ``self.cfg.data``."""
  cfg: ml_collections.ConfigDict

  def without_absent_fields(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``batch`` (an `example_batch`) less the fields the corpus does not store, so the
    trainer's compiled step takes the pipeline's keys: ``durations`` of a corpus built without
    aligner output (`jaxtts.data.features.has`). Unchanged without a corpus (inference)."""
    if not self.cfg.data.get("dir") or not os.path.isdir(self.cfg.data.dir):
      return batch
    manifest = read_manifest(self.cfg.data.dir)
    return {k: v for k, v in batch.items()
            if k != "durations" or features.has(manifest, "durations")}

  def train_iterator(self, global_batch_size: int, seed: int) -> grain.DatasetIterator:
    """The checkpointable, endless iterator of training batches of ``data.train_split``
    (shuffled / speaker-balanced as configured, a pure function of ``seed``). The trainer saves
    and restores its state with the train state (``grain.checkpoint``)."""
    return pipeline.make_iterator(self.cfg.data, self.cfg.data.train_split,
                                  global_batch_size=global_batch_size, seed=seed, train=True)

  def num_eval_examples(self, split: str) -> int:
    """Examples in ``split`` (manifest.json; the same number on every process)."""
    splits = read_manifest(self.cfg.data.dir)["splits"]
    if split not in splits:
      raise ValueError(f"config.data.eval_split: {self.cfg.data.dir}/manifest.json has no split "
                       f"{split!r} (splits: {', '.join(sorted(splits))})")
    return int(splits[split]["num_examples"])

  def eval_batches(self, split: str, global_batch_size: int, seed: int, limit: int
                   ) -> Iterator[dict[str, np.ndarray]]:
    """At most ``limit`` batches of ``split`` read once in order; every process yields the
    same number.

    Hosts read ``[process_index::process_count]`` of the split, so their example counts differ
    by up to one; the count is capped at ``num_eval_examples(split) // global_batch_size`` (the
    same on every host) so no process waits in a collective that another never enters. When
    the pipeline drops utterances (too long for every bucket, or too many phonemes: filtered
    and counted by `jaxtts.data.pipeline`) the split can end sooner; it then ends there, with a
    warning naming the split, instead of failing the run.
    """
    count = min(int(limit), self.num_eval_examples(split) // int(global_batch_size))
    if count <= 0:
      return
    it = iter(pipeline.make_dataset(self.cfg.data, split, global_batch_size=global_batch_size,
                                    seed=seed, train=False))
    try:
      for i in range(count):
        try:
          batch = next(it)
        except StopIteration:
          log.warning("eval split %r gave %d of its %d batches of %d: the pipeline filtered "
                      "some of its utterances (see its warnings)", split, i, count,
                      global_batch_size)
          return
        yield batch
    finally:
      if hasattr(it, "close"):
        it.close()
