"""GMM-LM over GMM-VAE latents (Lin & He, ICLR 2025, §3.2-3.3, §4, Table 7).

Presets: `tiny` (CPU tests and `make demo`), `espeak` (a short run on one GPU over the espeak
codec's latents), `mini`, `101m`, `170m`, `large` (Table 7; `paper` = `large`). Table 7 sizes
with 6 diagonal mixtures over the paper codec's 1024-dim latents; §4 recipe: schedule-free
AdamW lr 1e-2, gradient-norm clip 0.005, batch 240, 200k steps, class-balanced speakers. The
clip acts on the paper's summed NLL; our loss is the NLL per latent dimension, so the Table 7
presets clip at 0.005 / 1024 (the same clip on the same gradients, up to the stop loss).

Parameter counts (tests/test_gmm_lm.py): 101m, 170m and large land within 5 % of Table 7
(106.0M, 171.6M, 316.7M). Mini is built with Table 7's listed sizes and has 55.5M, +7.8 % over
the 51.5M the table states (51.2M in §5.1): its 6-component head over 1024-dim latents alone
is 6.3M and the listed Conformer stacks 48.3M, so no reading of the table's sizes reaches
51.5M; we keep the listed architecture rather than invent a smaller one.

`model.frame_noise_std` (default 0, as in the paper) corrupts the teacher-forced previous
frames in training against exposure bias. On the `make demo` latents (tiny, 500 steps, CPU, one frame per step,
per-decision straight-through; `benchmarks/gmm_lm_free_running.py`, 8 held-out 3 s prompts)
the free-running alignment spends 1.6 frames per phoneme at 0, 2.5 at 0.3 and 6.0 at 1.0
against 8.0 in the recordings; 1.0 drowns the frames' content (their per-dimension spread is ~0.08), so the stay decisions fall
back on the energy bias: lengths become right, speaker similarity drops (0.45 -> 0.38). The
short lengths at 0 came from the estimator (below), not from exposure bias.

Straight-through estimator (`alignment.straight_through`). Eqs. 10-11 leave open where the
relaxation enters the backward pass. "step" differentiates the hard recursion with eq. 11's
gradient per decision, so only the visited phoneme's decision gets a gradient; "sequence"
keeps the hard (binary) alignment in the forward pass and takes the gradient of the relaxed
alignment built from the same Gumbel draws (Algorithm 1 step 3's "u_backward for gradient
computation"). On the `make demo` latents (tiny, seed 0, CPU, one frame per step), teacher-forced alignment of
the valid split against the espeak durations (last phoneme reached at 89 % of the frames):
"step" rushes through the text and parks on the last phoneme, reaching it at 20 % / 47 % of
the frames after 500 / 1500 steps with 16 % / 20 % of frames within one phoneme of the
reference (free-running: 1.6 frames per phoneme at 500 steps vs 8.0 recorded); "sequence"
reaches it at 56 % / 72 % with 32 % / 38 % within one phoneme (free-running 5.9 / 4.9 frames
per phoneme); eval NLL/D is the same (-2.07 at 1500). The relaxed modes learn it too
("gumbel" 73 %, "expected" 64 % at 500 steps) but are not hard in training.

Frames per decoder step (`model.frames_per_step`, Tacotron's reduction factor; 1 in the
paper presets). The paper's codec runs at 31.25 frames/s; the espeak codecs at 80, where the
next frame is nearly the previous one, so the teacher-forced loss barely needs the text and
the alignment learns slowly. `tiny` and `espeak` stack 2 frames per step (40 steps/s, ~4 per
espeak phoneme). Measured on the `make demo` latents (`cpu` codec, 24 voices; tiny, 500 steps,
seed 0, 2 CPU cores shared with other jobs, so steps/s compare only with each other; valid
split against the espeak durations, free-running over 8 held-out
3 s prompts with `benchmarks/gmm_lm_free_running.py`, zero-shot through `jaxtts-eval`):

| r | last-phoneme onset (recorded 0.89) | within 1 phoneme | phoneme error | visited | free-running frames/phoneme (recorded 8.0) | steps/s | SIM | WER |
|---|---|---|---|---|---|---|---|---|
| 1 | 0.29 | 0.18 | 10.0 | 1.00 | 5.4 | 2.8 | 0.54 | 100 % (silence) |
| 2 | 0.65 | 0.35 | 3.6 | 1.00 | 5.4 | 6.0 | 0.61 | 149 % |
| 4 | 0.81 | 0.34 | 3.0 | 0.96 | 7.9 | 7.8 | 0.65 | 962 % (babble) |

(WER over 100 %: Whisper's insertions on unintelligible audio.) At r = 4 a step (50 ms)
outlasts short phonemes: 4 % of them are skipped and 38 % of the teacher-forced rows never
reach the last phoneme, so r = 2. The r = 4 row, and an r = 2 run that started phonemes at 8
steps (200 ms: free-running 7.4 frames per phoneme, SIM 0.63, WER 386 %), ran before the
energy bias counted the stacking (`energy_bias_init` now divides by the step, so every r
starts at `phoneme_seconds`). `frame_noise_std=0.3` on top of r = 2 changed the teacher-forced
figures little (onset 0.65, within 1 0.35). One seed each; run-to-run noise is not measured.

Why none of these speaks: at 500 steps the decoder does not use the text. Eval's
`text_nll_gain` (the NLL per dim with another utterance's text minus with its own, 16 valid
utterances) is 0.0006 at r = 1 and 0.002 at r = 2, against 0.9-2.5 for all-blank phonemes:
it needs *a* phoneme sequence, not *this* one, and two held-out texts from one prompt decode to
nearly the same audio. Replacing the sampled alignment by the corpus durations for the first
150 of 500 steps (and training the stay decisions on them; tried, not kept) left it at 0.002.
Training longer does not bring it: at r = 2 it falls from 0.0016 at 500 steps to 0.0007 at
2000, and `frame_noise_std` 1.0 / 2.0 leaves it at 0.002 / 0.0016 after 1000.

With the corpus durations as the decoder's alignment for *all* 500 steps and the stay decisions
trained on them (`alignment.reference_warmup_steps=-1`, `tiny`'s setting; not in the paper),
the decoder reads the text and the model's own alignment learns it: on the same valid batches,
with the model's sampled alignment, last-phoneme onset 0.85, 66 % of frames within one phoneme,
`text_nll_gain` 0.175; free-running 6.4 frames per phoneme; zero-shot SIM 0.68, WER 113 %
(different texts now give different audio, the alignment runs diagonally over the target
text and stops on the stop logit). Handing over to the stochastic alignment after 350 of the
500 steps loses it again within 150 steps (within one phoneme 0.34, text gain 0.010). So on CPU
budgets the demo's GMM-LM is trained with the corpus' alignment and infers with its own; the
Table 7 presets (and `espeak`) keep the paper's unsupervised alignment.

`data.dir` must hold latent shards (`jaxtts-codec encode-dataset`); `model.latent_dim` and
`model.latent_hop` must match their manifest (checked when training starts).
"""

import ml_collections

from configs import base
from jaxtts.text.symbols import DEFAULT_SYMBOLS

PAPER_GRAD_CLIP = 0.005  # §4, on the NLL summed over latent dimensions

TABLE7 = {  # decoder layers, dim, ffn (encoder: 3 x 512, ffn 1024)
    "mini": (6, 512, 2048),
    "101m": (6, 768, 3144),
    "170m": (6, 1024, 4096),
    "large": (12, 1024, 4096),
}


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
  cfg = base.base_config()
  cfg.task = "gmm_lm"
  cfg.data.update(mode="bucket", features="latents", speaker_balanced=True,
                  bucket_samples=(48000, 96000, 160000, 240000), max_phonemes=256)
  cfg.model = ml_collections.ConfigDict(dict(
      vocab_size=len(DEFAULT_SYMBOLS),
      latent_dim=1024,
      latent_hop=512,
      encoder_layers=3, encoder_dim=512, encoder_ffn_dim=1024, encoder_heads=8,
      decoder_layers=6, decoder_dim=512, decoder_ffn_dim=2048, decoder_heads=8,
      kernel_size=31,
      position="rotary",        # rotary | relative_xl (SpeechBrain's RelPosMHAXL)
      num_components=6,
      covariance="diagonal",    # diagonal | full (Table 5)
      min_scale=1e-3,
      dropout=0.1,
      # Gaussian noise (latent units) on the teacher-forced previous frames in training: the
      # alignment energies and the decoder then tolerate their own sampled frames.
      frame_noise_std=0.0,
      # Codec frames per decoder step (Tacotron's reduction factor; `jaxtts.gmm_lm.stacking`).
      # 1 is the paper (one step per frame at its codec's 31.25 frames/s); the espeak codec's
      # 80 frames/s makes neighbouring frames near copies, and r = 2 restores ~40 steps/s.
      frames_per_step=1,
      remat=False,
  ))
  cfg.alignment = ml_collections.ConfigDict(dict(
      mode="st_gumbel",         # st_gumbel | gumbel | noise | expected | cross_attention
      energy_dim=256,
      # p = sigmoid(e) is the probability of STAYING; log(d - 1) starts at d steps/phoneme.
      # None: derived from phoneme_seconds, data.sample_rate, model.latent_hop and
      # model.frames_per_step (jaxtts.alignment.monotonic.energy_bias_for_duration), so every
      # step rate starts at the same phoneme duration; a number overrides it (older workdirs
      # trained with 2.0).
      energy_bias_init=None,
      # Expected phoneme duration at init: the espeak corpus' recordings spend 8.0 frames per
      # phoneme at 80 frames/s (100 ms); read English (LibriTTS) is ~80-100 ms per phone.
      phoneme_seconds=0.1,
      noise_std=1.0,            # mode="noise": Raffel et al.'s pre-sigmoid noise
      # True: park on the last phoneme; False: Algorithm 1's shift, mass falls off past it.
      hold_last_phoneme=True,
      # st_gumbel's backward: "sequence" (the hard alignment forward, the relaxed alignment's
      # gradient backward) or "step" (per decision, through the hard recursion; see above).
      straight_through="sequence",
      # Alignment warm start (not in the paper; 0 = off): for the first N steps (N < 0: all)
      # the corpus' phoneme durations replace the sampled alignment and a BCE term (weight
      # below) trains the stay decisions on theirs; then the paper's stochastic alignment
      # takes over. Needs durations in the latent shards (the espeak corpus, or aligner
      # TextGrids). Inference always aligns with the model's own stay decisions.
      reference_warmup_steps=0,
      reference_stay_weight=1.0,
      temperature_start=1.0,    # eq. 11's s: constant, then cosine-annealed to the end value
      temperature_end=0.1,
      anneal_start_fraction=0.5,
  ))
  cfg.loss = ml_collections.ConfigDict(dict(
      stop_weight=1.0,
      stop_pos_weight=20.0,     # BCE weight of the one positive (last) frame per utterance
  ))
  cfg.synthesis = ml_collections.ConfigDict(dict(
      max_seconds=30.0,         # generated speech per utterance (the decoding buffer)
      max_total_seconds=60.0,   # prompt + generated: longer prompts are refused
      weight_temperature=1.0,
      scale_temperature=0.8,
      stop_threshold=0.5,
      stop_on_last_phoneme_only=True,  # the stop logit counts only on the last phoneme
      stay_mode="st_gumbel",    # st_gumbel (sample) | threshold (greedy)
  ))
  # §4's gradient-norm clip of 0.005 was set on the paper's loss, the NLL summed over the D
  # latent dimensions; ours is the NLL per dimension (one scale for every latent size), whose
  # gradient is D times smaller, so the same clip is 0.005 / D here (AdamW itself does not
  # see the loss scale). See `PAPER_GRAD_CLIP` and the presets below.
  cfg.train.optimizers.model = base.optimizer_config(
      name="schedule_free_adamw", learning_rate=1e-2, warmup_steps=1000,
      grad_clip_norm=PAPER_GRAD_CLIP / cfg.model.latent_dim)

  if preset == "tiny":
    cfg.model.update(latent_dim=16, latent_hop=200, encoder_layers=2, encoder_dim=64,
                     encoder_ffn_dim=128, encoder_heads=2, decoder_layers=2, decoder_dim=96,
                     decoder_ffn_dim=192, decoder_heads=2, kernel_size=7, num_components=3,
                     dropout=0.0)
    cfg.model.frames_per_step = 2  # 80 frames/s espeak latents (docstring)
    cfg.alignment.reference_warmup_steps = -1  # CPU budgets: the whole run (docstring)
    cfg.alignment.energy_dim = 32
    cfg.data.update(bucket_samples=(32000, 64000, 96000), max_phonemes=96)
    cfg.train.update(steps=300, batch_size=8, eval_every_steps=100, sample_every_steps=150,
                     log_every_steps=10)
    cfg.train.optimizers.model.update(learning_rate=3e-3, warmup_steps=30, grad_clip_norm=1.0)
    cfg.checkpoint.every_steps = 100
    cfg.synthesis.update(max_seconds=8.0, max_total_seconds=16.0)
  elif preset == "espeak":
    cfg.model.update(latent_dim=64, latent_hop=200, encoder_layers=3, encoder_dim=256,
                     encoder_ffn_dim=1024, encoder_heads=4, decoder_layers=6, decoder_dim=384,
                     decoder_ffn_dim=1536, decoder_heads=6,
                     frames_per_step=2)  # as tiny: 80 frames/s espeak latents
    cfg.train.update(steps=20_000, batch_size=32, eval_every_steps=1000,
                     sample_every_steps=2000, compute_dtype="bfloat16")
    cfg.train.optimizers.model.update(learning_rate=2e-3, grad_clip_norm=1.0)
    cfg.checkpoint.every_steps = 2000
  elif preset in TABLE7 or preset == "paper":
    layers, dim, ffn = TABLE7["large" if preset == "paper" else preset]
    cfg.model.update(decoder_layers=layers, decoder_dim=dim, decoder_ffn_dim=ffn,
                     decoder_heads=dim // 64)
    # Multiples of 12800 samples (lcm of the paper codec's 512 hop and the espeak corpus' 200).
    cfg.data.bucket_samples = (51200, 102400, 166400, 243200)
    cfg.train.update(steps=200_000, batch_size=240, eval_every_steps=5000,
                     sample_every_steps=10_000, compute_dtype="bfloat16")
    cfg.model.remat = True
    cfg.checkpoint.every_steps = 5000
  else:
    raise ValueError(f"configs/gmm_lm.py: unknown preset {preset!r}; valid presets: tiny, "
                     f"espeak, {', '.join(TABLE7)}, paper")
  cfg.lock()
  return cfg
