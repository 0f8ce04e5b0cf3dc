"""What the generic trainer asks of a task (one per trainable model).

A task adapts a model family to the trainer: it names its parameter groups (one optimizer each),
builds parameters, and provides pure functions the trainer jits with shardings:

- `example_batch(batch_size) -> dict[str, np.ndarray]`: a host batch of the right shapes/dtypes.
- `init_params(rng, batch) -> {group: params}` with `nn.LogicallyPartitioned` leaves.
- `train_step(state, batch, rng, optimizers) -> (state, metrics)`: one update of every group;
  the trainer adds the step key and the NaN/inf guard (`jaxtts.train.state.make_train_step`);
  `metrics["loss"]` must be the scalar the guard checks. GAN tasks delegate to
  `jaxtts.tasks.adversarial.AdversarialStep` (generator + discriminator groups, warm-up gate).
- `eval_step(params, batch) -> metrics` with `params = {group: eval params}`.
- `sample_step(params, batch) -> dict of arrays` (jitted) and
  `write_samples(writer, step, batch, outputs)` (host: audio, images).
- `flops_per_step(batch_shapes) -> float`: analytic model FLOPs of one train step on a global
  batch of these shapes (``{field: shape}``; matmuls of forward + backward = 3x forward,
  rematerialisation excluded; `jaxtts.tasks.flops`). The trainer logs it as ``train/mfu``
  beside XLA's cost analysis of the compiled step (``train/hfu``, ``train/tflops_per_device``).

Data (the trainer reads no manifest and builds no pipeline; `jaxtts.tasks.corpus_data.CorpusData`
implements these for `config.data` corpora). Batches are process-local host dicts of NumPy
arrays with ``global_batch_size // jax.process_count()`` rows:

- `train_iterator(global_batch_size, seed) -> grain.DatasetIterator`: endless training batches,
  a pure function of ``seed``; checkpointed with the state (``get_state``/``set_state``).
- `num_eval_examples(split) -> int`: examples in an eval split (the same on every process).
- `eval_batches(split, global_batch_size, seed, limit) -> Iterator[dict]`: at most ``limit``
  batches of ``split`` read once in order, the same number on every process (capped at
  ``num_eval_examples(split) // global_batch_size``), so no process waits in a collective
  another never enters.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Protocol

import grain
import jax
import ml_collections
import numpy as np
import optax

from jaxtts.train.metrics import MetricWriter
from jaxtts.train.state import TrainState


class Task(Protocol):
  cfg: ml_collections.ConfigDict
  groups: tuple[str, ...]

  def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    ...

  def init_params(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> dict[str, Any]:
    ...

  def train_step(self, state: TrainState, batch: Mapping[str, jax.Array], rng: jax.Array,
                 optimizers: Mapping[str, optax.GradientTransformation]
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    ...

  def eval_step(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array]
                ) -> dict[str, jax.Array]:
    ...

  def sample_step(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array]
                  ) -> dict[str, jax.Array]:
    ...

  def write_samples(self, writer: MetricWriter, step: int, batch: Mapping[str, np.ndarray],
                    outputs: Mapping[str, np.ndarray]) -> None:
    ...

  def flops_per_step(self, batch_shapes: Mapping[str, tuple[int, ...]]) -> float:
    ...

  def train_iterator(self, global_batch_size: int, seed: int) -> grain.DatasetIterator:
    ...

  def num_eval_examples(self, split: str) -> int:
    ...

  def eval_batches(self, split: str, global_batch_size: int, seed: int, limit: int
                   ) -> Iterator[dict[str, np.ndarray]]:
    ...
