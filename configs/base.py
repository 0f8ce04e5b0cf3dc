"""Shared config sections. Every task config starts from `base_config()` and fills `model`.

Keys every task shares (tools override them by these names): data.dir, train.steps,
train.batch_size, train.seed, checkpoint.every_steps, mesh.data, mesh.fsdp, mesh.tensor.
"""

import ml_collections

from jaxtts.data.pipeline import default_data_config

# Logical axis name -> mesh axis (or None = replicated). Parameters and activations carry the
# logical names; `jaxtts.train.partitioning` resolves them with these rules.
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("time", None),
    ("channels", None),
    ("conv_kernel", None),
    ("conv_kernel_w", None),
    ("conv_in", "fsdp"),
    ("conv_out", "tensor"),
    ("conv2d_in", None),      # discriminators: see jaxtts/nn/conv2d.py
    ("conv2d_out", None),
    ("mixture", None),
    ("latent", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("spectrum", None),       # STFT bins of jaxtts/nn/vocos.py's head
)


def optimizer_config(**overrides) -> ml_collections.ConfigDict:
  """One parameter group's optimizer (see `jaxtts.train.optim.make_optimizer`)."""
  opt = ml_collections.ConfigDict(dict(
      name="adamw",            # adamw | schedule_free_adamw
      learning_rate=1e-3,
      b1=0.9,
      b2=0.999,
      weight_decay=0.0,
      warmup_steps=0,
      schedule="constant",     # constant | cosine | inverse_sqrt (ignored by schedule_free_adamw)
      grad_clip_norm=0.0,      # 0 disables clipping
  ))
  opt.update(overrides)
  return opt


def base_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.task = ""
  cfg.data = default_data_config()
  cfg.model = ml_collections.ConfigDict()
  cfg.train = ml_collections.ConfigDict(dict(
      steps=1000,
      batch_size=16,          # global batch over all processes
      seed=0,
      compute_dtype="float32",  # float32 | bfloat16 (params and optimizer stay float32)
      max_nonfinite_steps=10,   # consecutive rejected (NaN/inf) updates before the run stops
      eval_every_steps=500,
      eval_batches=2,
      log_every_steps=10,
      sample_every_steps=500,
      num_samples=2,
      optimizers=ml_collections.ConfigDict(),  # one optimizer_config() per parameter group
      # EMA of the parameters after each accepted update, e <- d e + (1 - d) p (0.0 = off).
      # When on, eval/sample steps and inference (jaxtts.workdir) use ema_params/<group>.
      ema_decay=0.0,
      ema_groups=None,          # groups with an EMA; None = every group but "discriminator"
      # Peak FLOP/s of one device for train/mfu and train/hfu; 0 = the chip table of
      # jaxtts.train.mfu (CPU and unknown chips: no MFU logged).
      peak_flops_per_device=0.0,
  ))
  cfg.mesh = ml_collections.ConfigDict(dict(
      data=-1, fsdp=1, tensor=1,
      rules=DEFAULT_RULES,
  ))
  cfg.checkpoint = ml_collections.ConfigDict(dict(
      every_steps=500,
      max_to_keep=3,
      async_save=True,
      # An async save's background commit (all processes' writes and Orbax's barriers) must end
      # within this; Orbax raises otherwise (its default, 20 minutes).
      async_timeout_s=1200,
  ))
  # Multi-process runs (`jaxtts-train --distributed`; "When a host fails" in jaxtts/train/cli.py).
  cfg.distributed = ml_collections.ConfigDict(dict(
      init_timeout_s=300,       # jax.distributed.initialize: every process connects within this
      heartbeat_timeout_s=100,  # the coordination service declares a silent process dead
      shutdown_timeout_s=300,   # at exit, wait this long for the other processes to exit too
      barrier_timeout_s=1800,   # each barrier (after every ahead-of-time compilation)
      peer_timeout_s=30,        # watchdog: a peer silent this long is lost (exit 4, one line)
  ))
  cfg.logging = ml_collections.ConfigDict(dict(
      tensorboard=True,
      progress_bar=True,
  ))
  return cfg
