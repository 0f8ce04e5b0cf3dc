"""GMM-VAE codec generator (Lin & He, ICLR 2025, §3.1 eq. 4, appendix A.5).

Presets: `tiny` (CPU tests), `cpu` (`make demo` and `make quality`: the STFT encoder and the
source-filter Vocos head with the pitch in the latent, λ = 0.1, mel + APNet amplitude loss), `espeak` (a short quality run on one GPU), `paper` (A.5 sizes: encoder
dim 64, decoder dim 1536, strides [2,4,8,8], 3 mixtures, λ=50, schedule-free AdamW lr 1e-3,
batch 680 × 8960 samples, here 8704 = 17 hops; the DAC decoder).

Why the small codec did not learn (`benchmarks/codec_sweep.py`, 2026-12-02, 2 CPU cores, the
`make demo` corpus, 300 s of training per variant, mel + prior without discriminators; 12
held-out utterances, Whisper base; the recordings' WER is 34.0 %):

  variant                       steps  mel dist  STFT   PESQ  STOI  WER    latent var  resp.
  DAC,   λ=50,  lr 3e-3 (demo)  1432   3.36      3.50   1.03  0.60  779 %  0.0054      1/0/0
  DAC,   λ=0.1, lr 3e-3         1644   3.08      3.28   1.04  0.66  368 %  0.33        .33/.48/.19
  Vocos, λ=50,  lr 3e-3         1785   6.02      5.72   1.03  0.49  1050 % 0.0000      1/0/0
  Vocos, λ=0.1, lr 3e-3         1634   6.13      5.81   1.02  0.50  1017 % 0.0088      1/0/0
  Vocos, λ=50,  lr 1e-3         1860*  4.09      4.47   1.03  0.67  1196 % 0.018       1/0/0
  Vocos, λ=0.1, lr 1e-3 (cpu)   1796   2.73      3.00   1.05  0.64  365 %  0.41        .31/.41/.28

(* trained beside the test suite, at 2.6 instead of 6.2 steps/s: 750 s for its 1860 steps.
"latent var": mean per-dimension variance of the latents over the last training batch;
"resp.": the prior's mean responsibilities.)

* **Scale-down cheat, λ convention.** At λ = 50 on the per-dimension NLL every frame sits on
  one mixture component and the latents' spread shrinks as training goes on (DAC: variance
  0.027 at step 190, 0.0054 at 1432, against an RMS of 0.67): the encoder shrinks its
  deviations from the mean and the decoder amplifies them, so the prior only constrains the
  scale, and the reconstruction stalls (held-out mel L1 1.28). With the Vocos head, whose
  LayerNorm does not amplify, the latents collapse to a constant and the output is one
  average spectrum. λ = 0.1 (Table 4's best mel distance) uses all three components, keeps
  the variance at 0.3-0.4 and halves the WER. A per-frame NLL (eq. 4 with
  ``MixtureSameFamily.log_prob``) would make λ = 50 D times stronger still; the paper preset
  keeps λ = 50 per dimension, which its 1M steps with discriminators may tolerate.
* **Decoder.** At the tiny preset's schedule-free 3e-3 the Vocos head never leaves the average
  spectrum; at 1e-3 it matches the DAC decoder step for step in held-out mel L1 (1.015 vs
  1.023 after ~1700 steps) at 9 % more steps per second, with a lower mel and STFT distance.
  Neither is intelligible after 300 s: harmonics are still missing from the spectrograms.
* **Budget.** Both λ = 0.1 curves are still falling at the end (valid mel L1 -0.01 per 100
  steps); the `cpu` preset trains 1800 steps in `make demo` (2400 took 891 s of its 900).

The second sweep (same protocol, 2026-12-02 session 2; the recordings' WER 33.0 %; raw results
and curves in benchmarks/results/codec_sweep_2026-12-02b.{json,png}), from `vocos_l0.1`:

  variant                         steps  mel dist  STFT   PESQ  STOI  WER    latent var  resp.
  vocos_l0.1 (the first cpu)      1796   2.73      3.00   1.05  0.64  365 %  0.41    .31/.41/.28
  + STFT encoder (256, 4 layers)  1136   2.17      2.61   1.06  0.73  108 %  0.50    0/.12/.88
  STFT enc. 256 + 7 mel scales    1275   2.06      2.21   1.07  0.70  245 %  0.53    0/.07/.93
  STFT enc. 256 + latent 64       1248   2.07      2.45   1.09  0.75  189 %  0.24    0/1/0
  STFT enc. 128, 2 layers         1724   2.11      2.50   1.08  0.71   97 %  0.16    .01/.64/.35
  + APNet amplitude (15)  (cpu)   2050   2.11      2.20   1.09  0.70   80 %  0.21    .19/.51/.30
  + APNet phase (5)               1739   2.12      2.14   1.09  0.72  440 %  0.21    .02/.39/.59

* **Encoder.** The change that matters: a fixed log-magnitude STFT and ConvNeXt blocks at the
  frame rate (`model.encoder = "vocos"`) instead of strided convolutions with 8 channels at
  16 kHz, which must learn a filterbank first. Held-out mel L1 0.72 after 1136 steps against
  1.02 after 1700; WER 365 % -> 97-108 %. A 128-wide, 2-layer encoder is as good per second
  as the 256-wide one (more steps at 5.7 instead of 3.8 per second).
* **Mel scales, latent size.** DAC's seven scales (to 320 bins at 2048) and a 64-dim latent
  lower the mel and STFT distances a little and raise STOI (0.75 at d64), but not the WER
  and not the harmonics, which none of these variants draws yet (the pitch contour is not
  reproduced: the spectrograms show formants over a smeared comb).
* **APNet terms on the head** (`loss.spectrum_amplitude_weight`, `spectrum_phase_weight`;
  `jaxtts/audio/phase.py`): the log-amplitude L1 at the head's own 401 bins lowers the STFT
  distance (2.50 -> 2.20) at no cost in speed, so the `cpu` preset keeps it; the phase terms
  (instantaneous phase, group delay, instantaneous frequency) did not bring back the
  harmonics in 300 s and made Whisper hallucinate more, so they stay off.
* **Noise in these figures.** Whisper's WER over 12 utterances of unintelligible audio is
  mostly insertions and moves by tens of points between neighbouring variants; STOI and the
  distances are the steadier guides. Step rates of the 40-step calibration also vary by
  ~15 % between runs on this machine.

The source-filter decoder (`model.excitation`: an F0 head on the latent drives a harmonic
excitation through the Vocos head, `jaxtts/audio/excitation.py`; 2026-12-04, `make demo` with
and without `--codec-set model.excitation=True`, the same corpus with F0, 1800 codec steps,
6 held-out utterances, recordings 34.6 % WER, SIM 0.920, DNSMOS 2.53):

  codec                 mel dist  STFT   PESQ  STOI   WER    SIM    DNSMOS  | GMM-LM WER  SIM
  cpu                   2.08      2.18   1.08  0.705  63.5 %  0.549  2.37   | 100 %       0.560
  cpu + excitation      2.19      2.37   1.05  0.678  78.8 %  0.667  2.53   | 410 %       0.609

* The excitation puts pitch harmonics into the reconstructions and raises SIM (0.55 -> 0.67)
  and DNSMOS (to the recordings' 2.53), but at this budget it costs STOI, the distances and
  WER, and the GMM-LM's output (decoded at the F0 its latents imply) gets worse. So the
  `cpu` preset keeps it off; it is there to be swept with longer budgets (`make quality`).

The pitch in the latent (`model.f0_source = "latent"`; 2026-12-07, 2 CPU cores, the `cpu`
preset + excitation, 6000 steps, 7-8 min each; PESQ-wb / STOI of held-out speakers: the 6
steph3 utterances `make demo` reconstructs, and 3 of m2 and f1):

  variant                                  steph3 PESQ  STOI    m2, f1 PESQ  STOI
  excitation, F0 head, 12 training voices  (12 mixed held-out utterances: 1.17 / 0.76;
                                            decoded at WORLD's F0 instead: 1.85 / 0.83)
  f0_source=latent, 12 training voices     1.46         0.723   1.90         0.882
  f0_source=latent, 24 training voices     1.89         0.806   1.86         0.895
  f0_source=latent, 48 training voices     1.93         0.791   1.60         0.882
  f0_source=latent, latent 32, 24 voices   1.65         0.797   1.97         0.894

* **Pitch.** A dense F0 head on a 14-16-dim latent guesses the pitch badly after a few minutes,
  and a misplaced harmonic comb costs more than no comb; the input's WORLD F0 in two latent
  channels (the GMM-LM generates them like the rest) gives the decoder the right one.
* **Where the rest is lost** (the 12-voice run; `librosa` STFTs of the steph3 resyntheses):
  the recording's magnitude with the codec's phase scores PESQ 2.97 / STOI 0.974, the codec's
  magnitude with the recording's phase 1.72 / 0.760 (the old `cpu` preset: 1.69 / 0.908 and
  1.10 / 0.694). The source-filter phase is now good; the magnitudes of an unseen voice are
  not, and more training voices help them most (12 -> 24), not a wider latent. So the `cpu`
  preset turns both on and `make demo` builds 24 training voices (`launch/demo.py`).
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
      # The source-filter Vocos head (jaxtts/nn/vocos.py, excitation=True; ours, issue 12): an
      # F0 head on the latent drives a harmonic excitation. Needs a corpus with f0 and voiced.
      excitation=False,
      # With excitation, where the decoder's F0 comes from when it decodes latents alone:
      # "head", an F0 head on the learned latent (the codec estimates the pitch itself);
      # "latent", the latent's last 2 channels, filled at encode time from WORLD's F0 of the
      # input (jaxtts/audio/f0.py) and generated by the GMM-LM like the others. Ours (issue
      # 12): after 6000 CPU steps the head's F0 gives PESQ 1.17 / STOI 0.76, the input's
      # 1.85 / 0.83 (the same decoder).
      f0_source="head",
      vocos=ml_collections.ConfigDict(dict(
          dim=512, intermediate_dim=1536, num_layers=8,
          n_fft=0,  # 0 = 4 x hop (Vocos: 1024 at hop 256); also the "vocos" encoder's STFT
      )),
      # "dac": A.5's strided convolutions at the sample rate. "vocos": jaxtts/nn/vocos.py's
      # VocosEncoder, a log-magnitude STFT (model.vocos.n_fft) and ConvNeXt blocks at the
      # latent frame rate; ours, for small compute (issue 12's sweep).
      encoder="dac",
      vocos_encoder=ml_collections.ConfigDict(dict(
          dim=256, intermediate_dim=768, num_layers=4,
      )),
  ))
  cfg.loss = ml_collections.ConfigDict(dict(
      mel_weight=15.0,          # DAC's weight on the multi-scale mel L1
      prior_weight=50.0,        # λ of eq. 4 (applied to the per-dimension prior NLL)
      f0_weight=1.0,            # model.excitation: the F0 head's log-F0 L1 (voiced frames)
      voicing_weight=1.0,       # model.excitation: the F0 head's voicing cross-entropy
      mel_window_lengths=(32, 64, 128, 256, 512, 1024, 2048),
      mel_bins=(5, 10, 20, 40, 80, 160, 320),
      # APNet's losses on the Vocos head's spectrum (jaxtts/audio/phase.py), not in the
      # paper (0 = off): log10-amplitude L1, and the sum of the instantaneous-phase, group-delay
      # and instantaneous-frequency anti-wrapping losses. They tell a frame-rate head the
      # spectrum bin by bin instead of only through the waveform's mel loss.
      spectrum_amplitude_weight=0.0,
      spectrum_phase_weight=0.0,
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
    # One period and one two-band STFT discriminator: both kinds and both parameter groups,
    # at a third of the tracing and compile time of (2, 3, 5) x 5 bands x 2 windows.
    cfg.discriminator.update(periods=(2,), window_lengths=(256,), bands=((0.0, 0.5), (0.5, 1.0)),
                             mpd_channels=(8, 16, 32, 32), mrd_channels=8, start_step=100)
    cfg.checkpoint.every_steps = 50
  elif preset == "cpu":
    # `make demo` / `make quality`: the STFT encoder, the Vocos head, λ = 0.1, the APNet
    # amplitude loss and lr 1e-3 (benchmarks/codec_sweep.py; see the module docstring).
    # The source-filter head with the pitch in the latent (the docstring's third sweep).
    cfg.model.update(encoder_dim=8, encoder_strides=(2, 4, 5, 5), latent_dim=16,
                     decoder="vocos", encoder="vocos", excitation=True, f0_source="latent")
    cfg.model.vocos.update(dim=256, intermediate_dim=768, num_layers=6)
    cfg.model.vocos_encoder.update(dim=128, intermediate_dim=384, num_layers=2)
    cfg.loss.update(prior_weight=0.1, mel_window_lengths=(64, 256, 1024), mel_bins=(10, 40, 80),
                    spectrum_amplitude_weight=15.0)
    cfg.data.segment_samples = 4000
    cfg.train.update(steps=6000, batch_size=8, eval_every_steps=1000, sample_every_steps=2000,
                     log_every_steps=10)
    cfg.train.optimizers.generator.update(learning_rate=1e-3, warmup_steps=20)
    cfg.train.optimizers.discriminator.update(learning_rate=1e-3, warmup_steps=20)
    cfg.discriminator.update(enabled=False, periods=(2, 3, 5), window_lengths=(512, 256),
                             mpd_channels=(8, 16, 32, 32), mrd_channels=8)
    cfg.checkpoint.every_steps = 1000
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
                     "valid presets: tiny, cpu, espeak, paper")
  cfg.lock()
  return cfg
