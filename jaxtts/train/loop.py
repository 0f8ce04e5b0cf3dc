"""The generic training loop: mesh, sharded state, jitted step, checkpoints, logging.

`train(cfg, workdir)` resumes from the newest intact checkpoint in `workdir/checkpoints` when
there is one (a corrupt one is logged and moved aside; a config that changes keys an exact
resume needs, `config.check_resume`, is refused). The task hands the trainer its data
(`train_iterator`, `eval_batches`; `jaxtts.tasks.base`). Per step: the process-local batch
becomes a global array sharded over ("data", "fsdp"), the task's pure step runs under
`jax.jit` with in/out shardings and state donation, the EMA (``train.ema_decay``) follows the
parameters and the NaN/inf guard rejects bad updates. Every `checkpoint.every_steps` the state
and the data-iterator state are saved together (async); SIGTERM saves and exits with status
143. Logged throughput: ``train/tflops_per_device`` and ``train/hfu`` from XLA's cost analysis
of the compiled step, ``train/mfu`` from the task's analytic `flops_per_step` (`mfu`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from jaxtts import tasks
from jaxtts.train import checkpoint as ckpt_lib
from jaxtts.train import config as config_lib
from jaxtts.train import mesh as mesh_lib
from jaxtts.train import mfu as mfu_lib
from jaxtts.train import optim
from jaxtts.train import state as state_lib
from jaxtts.train.metrics import MetricWriter

log = logging.getLogger("jaxtts.train")


class NonFiniteLossError(RuntimeError):
  """Too many consecutive NaN/inf updates; the last good checkpoint is kept."""


class Preempted(SystemExit):
  """SIGTERM: the state was saved; exit status 143 (128 + SIGTERM)."""

  def __init__(self):
    super().__init__(143)


class _SigtermFlag:
  """Tells the loop, at a step boundary, to save and exit because a SIGTERM arrived.

  One process: a Python handler sets a flag. Several (`jax.distributed`): the SIGTERM may reach
  only some of them, and all must save the same step (an Orbax save is collective). JAX's
  preemption service does that: its C++ SIGTERM notifier (installed by
  `jax.distributed.initialize`) tells the coordination service, which picks a step every
  process reaches; `multihost_utils.reached_preemption_sync_point(step)` is true there, on all
  of them. A Python handler would replace that notifier, so none is installed then. With the
  service off (``jax_enable_preemption_service=False``) the processes instead all-gather their
  flags at every step (a small host collective per step).
  """

  def __init__(self):
    self.raised = False
    self._previous = None
    self._sync = False

  def __enter__(self):
    from jax._src import distributed  # pylint: disable=import-outside-toplevel
    if jax.process_count() > 1 and distributed.global_state.preemption_sync_manager is not None:
      self._sync = True
      return self
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no handler (the caller owns signals).
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.raised = True

  def reached(self, step: int) -> bool:
    """Whether to save ``step`` and exit; called at every step boundary on every process."""
    if self._sync:
      self.raised = self.raised or multihost_utils.reached_preemption_sync_point(step)
    elif jax.process_count() > 1:
      flags = multihost_utils.process_allgather(np.asarray(self.raised, np.int32))
      self.raised = bool(np.any(flags))
    return self.raised

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False


class Trainer:
  """Holds what is built once per run; `run()` trains, `dry_run()` only writes params.json."""

  def __init__(self, cfg: ml_collections.ConfigDict, workdir: str):
    self.cfg, self.workdir = cfg, workdir
    self._aot_cache: dict[tuple, Any] = {}
    self.task = tasks.get_task(cfg)
    self.mesh = mesh_lib.make_mesh(cfg.mesh)
    self.rules = mesh_lib.rules_of(cfg.mesh)
    missing = [g for g in self.task.groups if g not in cfg.train.optimizers]
    if missing:
      raise ValueError(f"config.train.optimizers: no optimizer for parameter groups {missing}")
    self.optimizers = {g: optim.make_optimizer(cfg.train.optimizers[g], cfg.train.steps)
                       for g in self.task.groups}
    n_proc = jax.process_count()
    if cfg.train.batch_size % n_proc or cfg.train.batch_size % self._batch_shards():
      raise ValueError(f"config.train.batch_size={cfg.train.batch_size} must divide by the "
                       f"{n_proc} processes and the {self._batch_shards()} batch shards")
    self.local_batch_size = cfg.train.batch_size // n_proc
    self.ema_decay = float(cfg.train.get("ema_decay", 0.0) or 0.0)
    self.ema_groups = state_lib.ema_groups(cfg.train, self.task.groups)

    rng = jax.random.PRNGKey(cfg.train.seed)
    self._init_rng, self._state_rng = jax.random.split(rng)
    example = self.task.example_batch(cfg.train.batch_size)
    self._example = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in example.items()}
    with self._ctx():
      self.abstract_boxed = jax.eval_shape(self._init_boxed, self._init_rng)
    self.state_shardings = mesh_lib.logical_to_shardings(self.abstract_boxed, self.mesh,
                                                         self.rules)

  def _barrier_timeout_s(self) -> float:
    """``config.distributed.barrier_timeout_s`` (1800 s for a config.json written before it)."""
    return float(self.cfg.get("distributed", {}).get("barrier_timeout_s", 1800))

  def _batch_shards(self) -> int:
    return self.mesh.shape["data"] * self.mesh.shape["fsdp"]

  def _ctx(self):
    return mesh_lib.mesh_context(self.mesh, self.rules)

  def _init_boxed(self, rng):
    batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in self._example.items()}
    params = self.task.init_params(rng, batch)
    return state_lib.create(params, self.optimizers, self._state_rng, self.ema_groups)

  # ---------------------------------------------------------------- dry run / params.json
  def params_report(self) -> dict:
    """Parameter counts per group and module, and each parameter's logical axes and sharding."""
    params = self.abstract_boxed.params
    shardings = self.state_shardings.params
    report = {"total": 0, "groups": {}}
    for group in params:
      flat = jax.tree_util.tree_flatten_with_path(
          params[group], is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
      flat_sh = jax.tree_util.tree_flatten_with_path(shardings[group])[0]
      entries, modules = {}, {}
      for (path, leaf), (_, sh) in zip(flat, flat_sh):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        value = leaf.value if isinstance(leaf, nn.LogicallyPartitioned) else leaf
        axes = list(leaf.names) if isinstance(leaf, nn.LogicallyPartitioned) else None
        size = int(np.prod(value.shape))
        entries[name] = {"shape": list(value.shape), "dtype": str(value.dtype),
                         "logical_axes": axes, "sharding": str(sh.spec)}
        top = name.split("/")[0]
        modules[top] = modules.get(top, 0) + size
      total = sum(modules.values())
      report["groups"][group] = {"total": total, "modules": modules, "params": entries}
      report["total"] += total
    report["mesh"] = dict(self.mesh.shape)
    return report

  def write_params_json(self) -> dict:
    report = self.params_report()
    if jax.process_index() == 0:
      os.makedirs(self.workdir, exist_ok=True)
      with open(os.path.join(self.workdir, "params.json"), "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    return report

  # ---------------------------------------------------------------- training
  def eval_params(self, state):
    """Parameters eval/sample steps use: the EMA of a group that keeps one, else schedule-free's
    averaged x (`optim.eval_params`), else the parameters (the rule of `jaxtts.workdir`)."""
    return {g: state.ema_params[g] if g in state.ema_params else
            optim.eval_params(self.cfg.train.optimizers[g], state.opt_state[g], state.params[g])
            for g in self.task.groups}

  def _batch_shardings(self):
    return {k: mesh_lib.batch_sharding(self.mesh, len(v.shape))
            for k, v in self._example.items()}

  def _compile(self):
    step_fn = state_lib.make_train_step(
        functools.partial(self.task.train_step, optimizers=self.optimizers), self.ema_decay)
    repl = mesh_lib.replicated(self.mesh)
    self.train_step = jax.jit(step_fn, in_shardings=(self.state_shardings,
                                                     self._batch_shardings()),
                              out_shardings=(self.state_shardings, repl), donate_argnums=(0,))
    self.eval_step = jax.jit(lambda s, b: self.task.eval_step(self.eval_params(s), b),
                             in_shardings=(self.state_shardings, self._batch_shardings()),
                             out_shardings=repl)
    self.sample_step = jax.jit(lambda s, b: self.task.sample_step(self.eval_params(s), b),
                               in_shardings=(self.state_shardings, self._batch_shardings()))

  def init_state(self):
    with self._ctx():
      init = jax.jit(lambda r: nn.meta.unbox(self._init_boxed(r)),
                     out_shardings=self.state_shardings)
      return self._aot("init", init, self._init_rng)(self._init_rng)

  def _aot(self, name: str, jitted, *args):
    """``jitted`` compiled ahead of time for ``args``' shapes (cached), then a barrier so that
    every process finishes compiling before any enters the program's collectives."""
    key = (name,) + tuple((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(args))
    if key not in self._aot_cache:
      with self._ctx():
        self._aot_cache[key] = jitted.lower(*args).compile()
      mesh_lib.barrier(f"compiled/{name}/{len(self._aot_cache)}", self._barrier_timeout_s())
    return self._aot_cache[key]

  def _compiled_step(self, state, batch):
    """The compiled train step for this batch's shapes (one per length bucket) and its
    per-device FLOPs from XLA's cost analysis (recomputation included: HFU).

    Compiling explicitly (`lower().compile()`) gives the FLOP count for TFLOP/s logging from
    the same executable that runs, with no second compilation.
    """
    key = tuple(sorted((k, v.shape) for k, v in batch.items()))
    if key not in self._executables:
      compiled = self._aot("train_step", self.train_step, state, batch)
      cost = compiled.cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      self._executables[key] = (compiled, float((cost or {}).get("flops", 0.0)))
    return self._executables[key]

  def model_flops_per_device(self, batch) -> float:
    """The task's analytic FLOPs of one step on this global batch, per device (0 when the
    task has no `flops_per_step`)."""
    count = getattr(self.task, "flops_per_step", None)
    if count is None:
      return 0.0
    return float(count({k: tuple(v.shape) for k, v in batch.items()})) / jax.device_count()

  def _train_iterator(self):
    return self.task.train_iterator(self.cfg.train.batch_size, self.cfg.train.seed)

  def run(self) -> dict[str, Any]:
    """Trains to `train.steps`. SIGTERM at any point after this starts saves and exits 143."""
    with _SigtermFlag() as sigterm:
      return self._run(sigterm)

  def _check_resume(self, checkpointer: ckpt_lib.Checkpointer, latest: int) -> None:
    """Refuses a resume whose config breaks exactness (`config.check_resume`) or whose
    checkpoint holds another model (`Checkpointer.check`); logs the allowed changes."""
    changes = config_lib.check_resume(self.workdir, self.cfg)
    if changes:
      log.info("resuming %s with changed config keys (config.json value -> new value): %s",
               self.workdir, config_lib.describe_changes(changes))
    try:
      checkpointer.check(latest, nn.meta.unbox(self.abstract_boxed))
    except ckpt_lib.CheckpointMismatchError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      # Unreadable metadata: restore_newest_intact below logs it and falls back.
      log.warning("checkpoint step %d: metadata unreadable before restore (%s)", latest,
                  type(e).__name__)

  def _run(self, sigterm: _SigtermFlag) -> dict[str, Any]:
    cfg, workdir = self.cfg, self.workdir
    is_main = jax.process_index() == 0
    self._compile()
    self._executables = {}
    checkpointer = ckpt_lib.Checkpointer(
        os.path.join(workdir, "checkpoints"), max_to_keep=cfg.checkpoint.max_to_keep,
        async_save=cfg.checkpoint.async_save,
        async_timeout_s=cfg.checkpoint.get("async_timeout_s", 1200),
        barrier_timeout_s=self._barrier_timeout_s())
    latest = checkpointer.latest_step()
    if latest is not None:  # another config is refused before any compilation
      try:
        self._check_resume(checkpointer, latest)
      except BaseException:
        # Refused: close the manager first, or its background futures (Orbax's temporary
        # directory clean-up) may print a traceback at interpreter shutdown under the
        # one-line error.
        checkpointer.close()
        raise
    state = self.init_state()
    if latest is None:
      train_iter = self._train_iterator()
    else:
      abstract = ckpt_lib.abstract_with_shardings(state, self.state_shardings)
      step, restored, train_iter = checkpointer.restore_newest_intact(abstract,
                                                                      self._train_iterator)
      if step is None:
        log.error("no checkpoint in %s could be restored; training from step 0",
                  checkpointer.directory)
      else:
        state = restored
        log.info("resumed from %s at step %d", checkpointer.directory, step)
    # Written after a resume's compatibility check, so a refused run leaves the old files.
    if is_main:
      os.makedirs(workdir, exist_ok=True)
      with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config_lib.to_json(cfg))
    self.write_params_json()
    start = int(jax.device_get(state.step))
    writer = MetricWriter(workdir, tensorboard=cfg.logging.tensorboard)
    writer.truncate_after(start)

    steps = int(cfg.train.steps)
    flops = model_flops = 0.0
    peak = mfu_lib.peak_flops_per_device(cfg.train.get("peak_flops_per_device", 0.0))
    last = {}
    progress = None
    if is_main and cfg.logging.progress_bar:
      progress = tqdm(total=steps, initial=start, desc=f"train {cfg.task}", unit="step")
    try:
      acc, acc_n, t0 = None, 0, time.perf_counter()
      for step in range(start, steps):
        if sigterm.reached(step):
          if checkpointer.latest_step() != step:
            checkpointer.save(step, state, train_iter, force=True)
          checkpointer.close()
          log.warning("SIGTERM: saved step %d to %s; exiting", step, checkpointer.directory)
          raise Preempted()
        batch = mesh_lib.global_batch(next(train_iter), self.mesh)
        tc = time.perf_counter()
        compiled, flops = self._compiled_step(state, batch)
        model_flops = self.model_flops_per_device(batch)
        t0 += time.perf_counter() - tc  # compilation is not training time
        with self._ctx():
          state, metrics = compiled(state, batch)
        acc = metrics if acc is None else jax.tree.map(jnp.add, acc, metrics)
        acc_n += 1
        done = step + 1
        if progress is not None:
          progress.update(1)
        if done % cfg.train.log_every_steps == 0 or done == steps:
          values = {k: float(v) / acc_n for k, v in jax.device_get(acc).items()}
          dt = time.perf_counter() - t0
          values["steps_per_sec"] = acc_n / dt
          values["tflops_per_device"] = flops * acc_n / dt / 1e12
          for name, count in (("hfu", flops), ("mfu", model_flops)):
            used = mfu_lib.utilisation(count, values["steps_per_sec"], peak)
            if used is not None:
              values[name] = used
          values["nonfinite_total"] = int(jax.device_get(state.nonfinite_total))
          writer.scalars(done, {f"train/{k}" if k != "loss" else k: v
                                for k, v in values.items()})
          if progress is not None:
            progress.set_postfix(loss=f"{values['loss']:.4f}")
          last = values
          acc, acc_n, t0 = None, 0, time.perf_counter()
          run = int(jax.device_get(state.nonfinite_run))
          if run >= cfg.train.max_nonfinite_steps:
            checkpointer.close()
            raise NonFiniteLossError(
                f"step {done}: {run} consecutive non-finite losses or updates "
                f"(limit train.max_nonfinite_steps={cfg.train.max_nonfinite_steps}); every "
                f"one was rejected; last good checkpoint: step {checkpointer.latest_step()} "
                f"in {checkpointer.directory}")
        if done % cfg.checkpoint.every_steps == 0 or done == steps:
          if int(jax.device_get(state.nonfinite_run)) == 0:
            checkpointer.save(done, state, train_iter, force=True)
          else:  # keep the last good checkpoints; never rotate them out for a bad streak
            log.warning("step %d: in a run of rejected non-finite updates; not saving", done)
        if cfg.train.eval_every_steps and (done % cfg.train.eval_every_steps == 0
                                           or done == steps):
          last.update(self.evaluate(state, writer, done))
        if cfg.train.sample_every_steps and (done % cfg.train.sample_every_steps == 0
                                             or done == steps):
          self.write_samples(state, writer, done)
    finally:
      if progress is not None:
        progress.close()
      writer.close()
    checkpointer.close()
    return {"step": int(jax.device_get(state.step)), **last}

  def _eval_batches(self, split: str, limit: int):
    """At most `limit` global eval batches, the same number on every process (the task's
    `eval_batches`)."""
    for batch in self.task.eval_batches(split, self.cfg.train.batch_size, self.cfg.train.seed,
                                        limit):
      yield mesh_lib.global_batch(batch, self.mesh)

  def evaluate(self, state, writer: MetricWriter, step: int) -> dict[str, float]:
    """Mean eval metrics over `train.eval_batches` batches of the eval split."""
    sums, n = {}, 0
    for batch in self._eval_batches(self.cfg.data.eval_split, self.cfg.train.eval_batches):
      with self._ctx():
        m = jax.device_get(self._aot("eval_step", self.eval_step, state, batch)(state, batch))
      for k, v in m.items():
        sums[k] = sums.get(k, 0.0) + float(v)
      n += 1
    if n == 0:
      log.warning("eval split %r has no full batch of %d; no eval metrics",
                  self.cfg.data.eval_split, self.cfg.train.batch_size)
      return {}
    values = {f"eval/{k}": v / n for k, v in sums.items()}
    writer.scalars(step, values)
    return values

  def write_samples(self, state, writer: MetricWriter, step: int) -> None:
    for batch in self._eval_batches(self.cfg.data.eval_split, 1):
      with self._ctx():
        outputs = self._aot("sample_step", self.sample_step, state, batch)(state, batch)
      outputs = {k: np.asarray(multihost_utils.process_allgather(v, tiled=True))
                 for k, v in outputs.items()}
      full = {k: np.asarray(multihost_utils.process_allgather(v, tiled=True))
              for k, v in batch.items()}
      self.task.write_samples(writer, step, full, outputs)
      writer.flush()


def train(cfg: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  return Trainer(cfg, workdir).run()
