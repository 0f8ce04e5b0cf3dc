"""What the generic trainer asks of a task (one per trainable model).

A task adapts a model family to the trainer: it names its parameter groups (one optimizer each),
builds parameters, and provides pure functions the trainer jits with shardings:

- `example_batch(batch_size) -> dict[str, np.ndarray]`: a host batch of the right shapes/dtypes.
- `init_params(rng, batch) -> {group: params}` with `nn.LogicallyPartitioned` leaves.
- `train_step(state, batch, rng, optimizers) -> (state, metrics)`: one update of every group;
  the trainer adds the step key and the NaN/inf guard (`jaxtts.train.state.make_train_step`);
  `metrics["loss"]` must be the scalar the guard checks.
- `eval_step(params, batch) -> metrics` with `params = {group: eval params}`.
- `sample_step(params, batch) -> dict of arrays` (jitted) and
  `write_samples(writer, step, batch, outputs)` (host: audio, images).
- `flops_per_example` is not needed: the trainer reads FLOPs from the compiled step.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

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
