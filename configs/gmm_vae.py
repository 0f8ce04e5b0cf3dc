"""GMM-VAE codec generator (Lin & He, ICLR 2025, §3.1 eq. 4, appendix A.5).

Presets: `tiny` (CPU tests and `make demo`), `espeak` (a short quality run on one GPU),
`paper` (A.5 sizes: encoder dim 64, decoder dim 1536, strides [2,4,8,8], 3 mixtures, λ=50,
schedule-free AdamW lr 1e-3, batch 680 × 8960 samples, here 8704 = 17 hops).
"""

import ml_collections

from configs import base
from jaxtts.codec.discriminators import discriminator_config


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
  cfg = base.base_config()
  cfg.task = "gmm_vae"
  cfg.data.mode = "crop"
  cfg.model = ml_collections.ConfigDict(dict(
      encoder_dim=64,
      encoder_strides=(2, 4, 8, 8),
      decoder_dim=1536,
      latent_dim=1024,
      num_mixtures=3,
      learn_weights=False,
      learn_scales=False,
      remat=False,
      # "dac": the paper's decoder (A.5). "vocos": jaxtts/nn/vocos.py, ConvNeXt blocks at the
      # latent frame rate and an inverse STFT; ours, for small compute (issue 12's sweep).
      decoder="dac",
      vocos=ml_collections.ConfigDict(dict(
          dim=512, intermediate_dim=1536, num_layers=8,
          n_fft=0,  # 0 = 4 x hop (Vocos: 1024 at hop 256)
      )),
  ))
  cfg.loss = ml_collections.ConfigDict(dict(
      mel_weight=15.0,          # DAC's weight on the multi-scale mel L1
      prior_weight=50.0,        # λ of eq. 4 (applied to the per-dimension prior NLL)
      mel_window_lengths=(32, 64, 128, 256, 512, 1024, 2048),
      mel_bins=(5, 10, 20, 40, 80, 160, 320),
  ))
  cfg.eval = ml_collections.ConfigDict(dict(
      # Reconstruction metrics of the sample crops, logged as valid/<name> at every
      # train.sample_every_steps (process 0); see jaxtts.eval.codec_metrics.
      sample_metrics=("mel_distance", "stft_distance", "si_sdr", "pesq_wb", "stoi", "visqol"),
  ))
  cfg.discriminator = discriminator_config()
  cfg.discriminator.enabled = True
  cfg.discriminator.start_step = 0  # generator's adversarial terms off before this step
  cfg.train.optimizers.generator = base.optimizer_config(
      name="schedule_free_adamw", learning_rate=1e-3, warmup_steps=1000)
  cfg.train.optimizers.discriminator = base.optimizer_config(
      name="schedule_free_adamw", learning_rate=1e-3, warmup_steps=1000)

  if preset == "tiny":
    cfg.model.update(encoder_dim=8, encoder_strides=(2, 4, 5, 5), decoder_dim=64,
                     latent_dim=16)
    cfg.loss.update(mel_window_lengths=(64, 256, 1024), mel_bins=(10, 40, 80))
    cfg.data.segment_samples = 4000
    cfg.train.update(steps=200, batch_size=8, eval_every_steps=100, sample_every_steps=100,
                     log_every_steps=10)
    cfg.train.optimizers.generator.update(learning_rate=3e-3, warmup_steps=20)
    cfg.train.optimizers.discriminator.update(learning_rate=1e-3, warmup_steps=20)
    cfg.discriminator.update(periods=(2, 3, 5), window_lengths=(512, 256),
                             mpd_channels=(8, 16, 32, 32), mrd_channels=8, start_step=100)
    cfg.checkpoint.every_steps = 50
  elif preset == "espeak":
    cfg.model.update(encoder_dim=32, decoder_dim=512, latent_dim=64)
    cfg.data.segment_samples = 8192
    cfg.train.update(steps=20_000, batch_size=32, eval_every_steps=1000,
                     sample_every_steps=2000, compute_dtype="bfloat16")
    cfg.checkpoint.every_steps = 2000
  elif preset == "paper":
    cfg.data.segment_samples = 8704  # §4's 8960 rounded to a multiple of the 512 hop
    cfg.data.speaker_balanced = True
    cfg.train.update(steps=1_000_000, batch_size=680, eval_every_steps=5000,
                     sample_every_steps=10_000, compute_dtype="bfloat16")
    cfg.model.remat = True
    cfg.checkpoint.every_steps = 5000
  else:
    raise ValueError(f"configs/gmm_vae.py: unknown preset {preset!r}; "
                     "valid presets: tiny, espeak, paper")
  cfg.lock()
  return cfg
