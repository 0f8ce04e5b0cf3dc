"""A tiny GMM-VAE codec sweep: generator learning rate x seed (6 runs, 40 CPU steps each).

  jaxtts-sweep launch/sweeps/gmm_vae_lr_seed.py --root runs/sweep_lr --parallel 2 -- \\
      --config.data.dir=runs/demo/corpus
"""

from launch.sweep import product


def get_sweep() -> dict:
  return {
      "config": "configs/gmm_vae.py:tiny",
      "overrides": {"train.steps": 40, "checkpoint.every_steps": 20,
                    "train.sample_every_steps": 0, "logging.progress_bar": False},
      "grid": product(**{"train.optimizers.generator.learning_rate": [1e-3, 3e-3, 1e-2],
                         "train.seed": [0, 1]}),
  }
