"""FACodec (NaturalSpeech 3 §3.2, appendix B.1; `jaxtts.codec.facodec`, `jaxtts.tasks.facodec`).

Presets (``configs/facodec.py:<preset>[+<ablation>...]``):

* ``tiny``: the tests' shapes (seconds to compile on CPU).
* ``espeak``: the CPU recipe (`make demo FAMILY=facodec`, and up to 90 minutes on 2 cores):
  the STFT encoder and Vocos head of `jaxtts.nn.vocos` (issue 12's sweep: strided convolutions
  at 16 kHz do not learn in CPU budgets), 256-wide branches, a 2-layer timbre Transformer,
  mel + APNet amplitude loss, no discriminators, 0.5 s crops.
* ``paper``: §B.1 and the released model: DAC-style Snake encoder (32 -> 512 channels,
  strides 2/4/5/5, hop 200 at 16 kHz), 256-dim branches, 6 codebooks of 1024 x 8, timbre Transformer
  4 x 256 x 4 heads, decoder 1024 base channels, MPD + multi-band STFT discriminators, Adam
  2e-4 with β = (0.5, 0.9), 32 x 8 one-second clips, 800k steps.

Ablations (appended with ``+``; Tables 13/15-style rows):

* ``no_bottleneck``: FVQ without the 8-dim projection (Table 15: VC Sim-O 0.86 -> 0.73);
* ``no_detail``: 3 codebooks (prosody, content x 2), no detail branch;
* ``no_grl``: the gradient-reversal heads off (their weights 0, the reversal disabled);
* ``no_supervision``: the F0, phone and speaker heads off (and so the GRLs, which reverse
  supervised targets);
* ``released``: the released inference code's choices where it differs from the paper:
  prosody from 20 mel bins, ``sg(q_p)`` and ``sg(q_c)`` into the decoder, commitment scaled
  by 0.005 inside the quantizer (here: weight 0.25 x 0.005), SnakeBeta activations;
* ``dead_code_reset``: not an ablation but an addition (ours): restart dead codes from the
  batch's encodings every 50 steps (``dead_code_reset``; `jaxtts.nn.quantize.reset_dead_codes`).
  Measured on the ``espeak`` preset (2026-12-03, 2 CPU cores, a 24-speaker espeak corpus with
  F0, seed 1, 1500 steps each; means over steps 1401-1500, baseline -> with restarts):
  perplexity of the 6 codebooks 9.0/20.6/13.2/7.9/7.6/9.2 -> 20.2/53.7/51.6/45.8/14.5/33.9,
  prosody F0 loss 2.16 -> 1.39, but mel loss 1.21 -> 1.41 (eval 1.10 -> 1.31, sample mel
  distance 2.79 -> 3.24) and phone accuracy 0.184 -> 0.134. The batch criterion is too eager:
  with 1024 codes and ~320 frames a batch, most live codes are far from every encoding of one
  batch (about 990 codes restarted at step 50, 200-430 per restart by step 1500), and each
  restart moves the decoder's inputs. A usage-EMA criterion (EnCodec's ``expire_codes_``)
  needs quantizer state in the train state; not built yet. Off by default.

Loss weights are the paper's (§B.1: reconstruction 10, adversarial 2, feature matching 2,
codebook 1, commitment 0.25, F0 5, phone 5, GRL-F0 5, GRL-phone 5, GRL-speaker 1); the paper
names no weight for the timbre's speaker classifier: ``loss.speaker_weight`` = 1, that of the
speaker GRL.

What the ``espeak`` preset reaches on 2 CPU cores (2026-12-02, commit 14b0453; a 24-speaker
espeak corpus, 2.1 h of training audio, seed 1; 6036 steps in about 35 minutes of training,
~3.9 steps/s when alone; `jaxtts-eval codec` on 16 utterances of the 4 held-out speakers):

  reconstruction   mel dist 3.22, STFT 3.57, PESQ 1.05, STOI 0.53, ViSQOL 1.07, MCD 11.3,
                   Whisper WER 510 % (recordings 45.5 %)
  voice conversion SIM to prompt 0.533 > SIM to source 0.482 (source vs prompt 0.548),
                   WER 652 %
  probes (linear)  phone acc.: content 0.236, prosody 0.023; speaker acc.: timbre 0.990,
                   content 0.830; F0 corr.: prosody 0.076, content 0.136

Not intelligible yet (the GMM-VAE ``cpu`` preset reached mel distance 2.1 in 300 s): code
usage stays low (perplexity 3-21 of 1024 per codebook), the GRL-F0 adversaries lose badly
(loss 8-17, i.e. the encoder fools them rather than removing F0) and content codes still
identify speakers. The targets of issue 13 (PESQ 2.5, STOI 0.90) are not met.

Parameter counts per part are written to ``params.json`` by the trainer; the paper preset's
are listed by ``tests/test_facodec_task.py::test_paper_parameter_counts``.
"""

import ml_collections

from configs import base
from jaxtts.codec.discriminators import discriminator_config
from jaxtts.text.symbols import DEFAULT_SYMBOLS

ABLATIONS = ("no_bottleneck", "no_detail", "no_grl", "no_supervision", "released",
             "dead_code_reset")


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
  name, *ablations = preset.split("+")
  cfg = base.base_config()
  cfg.task = "facodec"
  cfg.data.mode = "crop"
  cfg.data.segment_samples = 16000  # §B.1: 1 s clips
  cfg.model = ml_collections.ConfigDict(dict(
      # The released encoder: WNConv(1 -> 32), four blocks doubling to 512, WNConv(512 -> 256).
      encoder_dim=32,
      encoder_strides=(2, 4, 5, 5),
      hidden_dim=256,
      decoder_dim=1024,
      codebook_size=1024,
      code_dim=8,
      bottleneck=True,
      # Quantize on the unit sphere (ViT-VQGAN; ours): nothing downstream of the FVQ bounds
      # the scale of its input (the decoder's CLN and the heads normalise), and the raw
      # variant's input grew without bound in the espeak preset. The paper's codes are raw.
      normalize_codes=False,
      num_prosody_quantizers=1,
      num_content_quantizers=2,
      num_detail_quantizers=3,
      timbre_layers=4,
      timbre_heads=4,
      timbre_ffn_dim=1024,
      # The released timbre Transformer's FFN is Conv1d(k5); the paper says "conformer blocks".
      timbre_kernel_size=5,
      # "encoder": the paper (the prosody FVQ reads h). "mel20": the released V2 (the first 20
      # of 80 log-mel bins through Linear + Transformer).
      prosody_input="encoder",
      # The released code feeds sg(q_p), sg(q_c) to the decoder; the paper does not say.
      detach_prosody_content=False,
      # Per-utterance probability of zeroing z_d in training: the paper gives none, the
      # released code 0.75.
      detail_dropout=0.75,
      grl_alpha=1.0,
      use_grl=True,
      # LayerNorm before every head's Linear (ours; jaxtts/codec/facodec.py Head): without it
      # the GRL adversaries are beaten by growing the features, and the codebooks collapse.
      head_norm=True,
      # Head sizes: at least the corpus' phoneme table and speaker ids (checked at start).
      num_phones=len(DEFAULT_SYMBOLS),
      num_speakers=256,
      # "dac": the paper's Snake convolutions. "vocos": jaxtts/nn/vocos.py (ours, for small
      # compute), configured below as in configs/gmm_vae.py.
      encoder="dac",
      decoder="dac",
      # The DAC encoder/decoder's activation: Snake (the paper: "following DAC") or SnakeBeta
      # (the released ns3_codec; jaxtts/nn/snake.py, without its anti-aliased resampling).
      snake_beta=False,
      # The source-filter Vocos head (jaxtts/nn/vocos.py excitation=True; ours, issue 12): an
      # F0 head on the decoder input drives a harmonic excitation. Needs f0/voiced frames.
      # Off: `make demo FAMILY=facodec` (2000 steps, 2026-12-04) with it gave mel distance 3.34
      # against 2.99, STOI 0.576 against 0.553, VC SIM to the prompt 0.488 against 0.565.
      excitation=False,
      vocos=ml_collections.ConfigDict(dict(dim=512, intermediate_dim=1536, num_layers=8,
                                           n_fft=0)),  # 0 = 4 x hop
      vocos_encoder=ml_collections.ConfigDict(dict(dim=256, intermediate_dim=768,
                                                   num_layers=4)),
  ))
  cfg.loss = ml_collections.ConfigDict(dict(
      mel_weight=10.0,
      mel_window_lengths=(32, 64, 128, 256, 512, 1024, 2048),
      mel_bins=(5, 10, 20, 40, 80, 160, 320),
      codebook_weight=1.0,
      commitment_weight=0.25,
      f0_weight=5.0,
      phone_weight=5.0,
      speaker_weight=1.0,
      grl_f0_weight=5.0,
      grl_phone_weight=5.0,
      grl_speaker_weight=1.0,
      # Floor of the per-crop log-F0 spread in the z-score (a flat contour is not blown up).
      f0_std_floor=0.02,
      # APNet's log-amplitude L1 on the Vocos head's spectrum (ours; 0 = off).
      spectrum_amplitude_weight=0.0,
      # model.excitation: the decoder F0 head's log-F0 L1 (voiced frames) and voicing BCE.
      decoder_f0_weight=1.0,
      decoder_voicing_weight=1.0,
  ))
  # Dead-code restarts (jaxtts/nn/quantize.py reset_dead_codes; ours, not in the paper or the
  # released code): every `every_steps` steps (0 = off, the paper), codes whose largest cosine
  # to the batch's encodings is below `min_cosine` are replaced by encodings of the batch.
  cfg.dead_code_reset = ml_collections.ConfigDict(dict(every_steps=0, min_cosine=0.8))
  cfg.eval = ml_collections.ConfigDict(dict(
      sample_metrics=("mel_distance", "stft_distance", "pesq_wb", "stoi"),
  ))
  cfg.discriminator = discriminator_config()
  cfg.discriminator.update(enabled=True, start_step=0, adversarial_weight=2.0,
                           feature_matching_weight=2.0)
  cfg.train.optimizers.generator = base.optimizer_config(
      name="adamw", learning_rate=2e-4, b1=0.5, b2=0.9)
  cfg.train.optimizers.discriminator = base.optimizer_config(
      name="adamw", learning_rate=2e-4, b1=0.5, b2=0.9)

  cpu_discriminator = dict(periods=(2, 3, 5), window_lengths=(512, 256),
                           mpd_channels=(8, 16, 32, 32), mrd_channels=8)
  if name == "tiny":
    cfg.model.update(hidden_dim=16, codebook_size=32, timbre_layers=1, timbre_heads=2,
                     timbre_ffn_dim=32, timbre_kernel_size=3, num_speakers=64,
                     encoder="vocos", decoder="vocos", normalize_codes=True)
    cfg.model.vocos.update(dim=16, intermediate_dim=24, num_layers=2)
    cfg.model.vocos_encoder.update(dim=16, intermediate_dim=24, num_layers=1)
    cfg.loss.update(mel_window_lengths=(64, 256, 1024), mel_bins=(10, 40, 80),
                    spectrum_amplitude_weight=15.0)
    cfg.data.segment_samples = 1600
    cfg.train.update(steps=20, batch_size=4, eval_every_steps=10, sample_every_steps=10,
                     log_every_steps=1, num_samples=2)
    cfg.train.optimizers.generator = base.optimizer_config(
        name="schedule_free_adamw", learning_rate=1e-3, warmup_steps=5)
    cfg.train.optimizers.discriminator = base.optimizer_config(
        name="schedule_free_adamw", learning_rate=1e-3, warmup_steps=5)
    cfg.discriminator.update(enabled=False, **cpu_discriminator)
    cfg.eval.sample_metrics = ("mel_distance",)
    cfg.checkpoint.every_steps = 10
  elif name == "espeak":
    cfg.model.update(timbre_layers=2, timbre_ffn_dim=512, timbre_kernel_size=3,
                     encoder="vocos", decoder="vocos", num_speakers=256, normalize_codes=True)
    cfg.model.vocos.update(dim=256, intermediate_dim=768, num_layers=6)
    cfg.model.vocos_encoder.update(dim=128, intermediate_dim=384, num_layers=2)
    cfg.loss.update(mel_window_lengths=(64, 256, 1024), mel_bins=(10, 40, 80),
                    spectrum_amplitude_weight=15.0)
    cfg.data.segment_samples = 8000
    cfg.train.update(steps=20_000, batch_size=8, eval_every_steps=1000,
                     sample_every_steps=1000, log_every_steps=10)
    cfg.train.optimizers.generator = base.optimizer_config(
        name="schedule_free_adamw", learning_rate=1e-3, warmup_steps=20)
    cfg.train.optimizers.discriminator = base.optimizer_config(
        name="schedule_free_adamw", learning_rate=1e-3, warmup_steps=20)
    cfg.discriminator.update(enabled=False, **cpu_discriminator)
    cfg.checkpoint.every_steps = 500
  elif name == "paper":
    cfg.model.num_speakers = 8192  # LibriLight: ~7.4k speakers
    cfg.data.speaker_balanced = False
    cfg.train.update(steps=800_000, batch_size=256, eval_every_steps=5000,
                     sample_every_steps=10_000, compute_dtype="bfloat16")
    cfg.checkpoint.every_steps = 5000
  else:
    raise ValueError(f"configs/facodec.py: unknown preset {name!r}; valid presets: tiny, "
                     "espeak, paper")
  for ablation in ablations:
    if ablation == "no_bottleneck":
      cfg.model.bottleneck = False
    elif ablation == "no_detail":
      cfg.model.num_detail_quantizers = 0
    elif ablation == "no_grl":
      cfg.model.use_grl = False
      cfg.loss.update(grl_f0_weight=0.0, grl_phone_weight=0.0, grl_speaker_weight=0.0)
    elif ablation == "no_supervision":
      cfg.model.use_grl = False
      cfg.loss.update(f0_weight=0.0, phone_weight=0.0, speaker_weight=0.0, grl_f0_weight=0.0,
                      grl_phone_weight=0.0, grl_speaker_weight=0.0)
    elif ablation == "dead_code_reset":
      cfg.dead_code_reset.every_steps = 50
    elif ablation == "released":
      cfg.model.update(prosody_input="mel20", detach_prosody_content=True, snake_beta=True)
      cfg.loss.commitment_weight = 0.25 * 0.005
    else:
      raise ValueError(f"configs/facodec.py: unknown ablation {ablation!r} in {preset!r}; "
                       f"valid: {', '.join(ABLATIONS)}")
  cfg.lock()
  return cfg
