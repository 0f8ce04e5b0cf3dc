"""Device mesh and logical-axis sharding (MaxText / flax lm1b style).

Mesh axes are ("data", "fsdp", "tensor"). Parameters and activations carry logical names
(`nn.with_logical_partitioning`, `nn.with_logical_constraint`); `config.mesh.rules` maps them
to mesh axes. Model code is traced under `jax.set_mesh(mesh)` and `nn.logical_axis_rules(rules)`
(see `mesh_context`); without both, linen's constraints silently do nothing.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def mesh_shape(mesh_cfg: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
  """Resolves the config's axis sizes; exactly one may be -1 ("the rest")."""
  sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh: only one of {MESH_AXES} may be -1, got {sizes}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if known <= 0 or num_devices % known:
    raise ValueError(f"config.mesh: sizes {dict(zip(MESH_AXES, sizes))} do not divide "
                     f"the {num_devices} devices")
  sizes = [num_devices // known if s == -1 else s for s in sizes]
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(f"config.mesh: sizes {dict(zip(MESH_AXES, sizes))} use "
                     f"{int(np.prod(sizes))} devices, but there are {num_devices}")
  return tuple(sizes)


def make_mesh(mesh_cfg: ml_collections.ConfigDict, devices: Sequence[Any] | None = None) -> Mesh:
  devices = list(devices) if devices is not None else jax.devices()
  shape = mesh_shape(mesh_cfg, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def rules_of(mesh_cfg: ml_collections.ConfigDict) -> tuple[tuple[str, Any], ...]:
  return tuple((name, tuple(ax) if isinstance(ax, list) else ax) for name, ax in mesh_cfg.rules)


@contextlib.contextmanager
def mesh_context(mesh: Mesh, rules):
  """Traces model code with the mesh and the logical rules both active."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def _divisible_spec(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
  """Replicates each dim whose size the mesh axes assigned to it do not divide.

  Small layers (a 1-channel output conv, a 3-mixture prior) cannot be split 2 or 4 ways; they
  stay replicated instead of failing, as MaxText does for such parameters.
  """
  dims = []
  for size, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    ways = int(np.prod([mesh.shape[a] for a in names])) if names else 1
    dims.append(axes if size % ways == 0 else None)
  return P(*dims)


def logical_to_shardings(abstract_tree: Any, mesh: Mesh, rules) -> Any:
  """NamedShardings for a tree whose leaves may be `nn.LogicallyPartitioned` boxes.

  The result has the structure of the unboxed tree (`nn.meta.unbox`).
  """
  specs = nn.logical_to_mesh(nn.get_partition_spec(abstract_tree), rules)
  shapes = nn.meta.unbox(abstract_tree)
  return jax.tree.map(lambda sp, x: NamedSharding(mesh, _divisible_spec(sp, x.shape, mesh)),
                      specs, shapes, is_leaf=lambda v: isinstance(v, P))


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Leading (batch) dim over data×fsdp, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles process-local host batches into global arrays sharded over the batch axes."""
  return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v)
          for k, v in local_batch.items()}


class BarrierTimeoutError(RuntimeError):
  """A process did not reach a barrier in time (it hangs, or is far slower than the others)."""


def barrier(name: str, timeout_s: float) -> None:
  """Waits until every process reaches ``name`` (coordination service; no device collective).

  The trainer calls it after each ahead-of-time compilation, so processes enter a program's
  first collective together: Gloo (CPU) and NCCL time out after ~30 s when one process is
  still compiling. No-op for a single process. Names must be unique per run. After
  ``timeout_s`` (``config.distributed.barrier_timeout_s``) raises `BarrierTimeoutError` with
  one line naming the barrier; a process that died is reported sooner by the watchdog
  (`jaxtts.train.watchdog`).
  """
  if jax.process_count() == 1:
    return
  from jax._src import distributed  # pylint: disable=import-outside-toplevel
  try:
    distributed.global_state.client.wait_at_barrier(f"jaxtts/{name}", int(timeout_s * 1000))
  except Exception as e:  # pylint: disable=broad-except  (jax.errors.JaxRuntimeError)
    if "DEADLINE_EXCEEDED" not in str(e):
      raise
    raise BarrierTimeoutError(
        f"process {jax.process_index()}: barrier {name!r} timed out after {timeout_s:g} s "
        f"(another of the {jax.process_count()} processes hangs or is much slower; raise "
        f"config.distributed.barrier_timeout_s if it is still compiling)") from None
