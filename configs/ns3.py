"""NaturalSpeech 3's factorized masked diffusion (§3.3, appendix A; `jaxtts.diffusion.ns3`,
`jaxtts.tasks.ns3`, `jaxtts.infer.ns3`) over FACodec codes.

``data.dir`` holds FACodec code shards (`jaxtts-codec encode-dataset --workdir FACODEC`): codes
``[F, 6]``, the utterance's timbre, and the phone-level prosody codes ``[P, 1]`` (written when
the corpus' phone durations are at the codec's hop). The task checks that the shards' codebook
layout matches ``model.codebook_size`` / ``model.num_code_levels`` / ``phone_prosody_levels``.

Presets (``configs/ns3.py:<preset>[+<ablation>...]``):

* ``tiny``: the tests' shapes.
* ``espeak``: the CPU recipe of `make demo FAMILY=ns3` (over the espeak FACodec's codes).
* ``paper``: appendix A.1-A.2: phoneme encoder 6 x 512 (8 heads, conv-FFN 2048, kernel 9),
  phone-level diffusion 6 x 1024 and frame-level diffusion 12 x 1024 (8 heads, conv-FFN 2048,
  kernel 3, dropout 0.1, AdaCLN); 481.1M parameters (121.2M + 119.1M + 240.8M, 0.05M phoneme
  table; `tests/test_diffusion.py` counts them), within 4 % of "about 500M". AdamW 1e-4, β =
  (0.9, 0.98), 5k warm-up, inverse-sqrt decay, EMA weights for evaluation; 1M steps.

Ablations (``+name``; NS3 Tables 3 and 11, the RTF table):

* ``no_cfg``: no classifier-free guidance, the steps doubled to keep 60 function evaluations
  (prosody 8, duration 4, frame layers 6 x 8);
* ``duration_l2``: durations regressed (L2 on log(1 + d)) instead of diffused as tokens;
* ``no_phone_prosody``: no phone-level prosody codes (the duration sees phonemes and prompt);
* ``no_duration_prompt``: the prompt's durations hidden from the duration diffusion;
* ``one_step``: one iteration per diffusion: 2 + 1 + 6 x 2 = 15 function evaluations.

Choices the paper leaves open (ours, named here):

* ``diffusion.prompt_fraction``: the prompt is a prefix of ``u ~ U(lo, hi)`` of the phones
  (and their frames), as MaskGCT draws ``[T/4, T/2]`` frames; one prefix serves both networks
  so the phone and frame prompts are the same audio.
* ``diffusion.stratified_levels``: rows of a batch take consecutive levels from a random
  offset (each row's level still uniform), so every batch trains and measures every level.
* ``model.max_duration``: durations clip to this token (NS3 gives no vocabulary; 63 frames
  is 0.79 s at 80 frames/s; clips are counted in ``train/duration_clipped``).
* One task trains the three networks together on the sum of the two diffusion losses
  (``loss.phone_weight``, ``loss.frame_weight``); the paper does not say whether they were
  trained jointly.
"""

import ml_collections

from configs import base
from jaxtts.text.symbols import DEFAULT_SYMBOLS

ABLATIONS = ("no_cfg", "duration_l2", "no_phone_prosody", "no_duration_prompt", "one_step")


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
  name, *ablations = preset.split("+")
  cfg = base.base_config()
  cfg.task = "ns3"
  cfg.data.update(mode="bucket", features="codes",
                  extra_features=("phone_prosody_codes", "timbre"),
                  bucket_samples=(48000, 96000, 160000, 240000, 320000), max_phonemes=256)
  cfg.model = ml_collections.ConfigDict(dict(
      num_phones=len(DEFAULT_SYMBOLS),
      codebook_size=1024,
      num_code_levels=6,
      phone_prosody_levels=1,
      max_duration=63,
      encoder_dim=512, encoder_layers=6, encoder_heads=8, encoder_ffn_dim=2048,
      encoder_kernel_size=9,
      phone_dim=1024, phone_layers=6,
      frame_dim=1024, frame_layers=12,
      heads=8, ffn_dim=2048, kernel_size=3,
      dropout=0.1,
      time_dim=256,
      # "tokens": NS3's duration diffusion (cross-entropy on duration tokens); "l2": Table 11's
      # regression ablation.
      duration_loss="tokens",
      # Attention positions: "relative_xl" (Transformer-XL relative positions, our default: NS3
      # does not say, and the paper preset's 481.1M counts them) or "rotary" (MaskGCT's RoPE).
      position="relative_xl",
  ))
  cfg.diffusion = ml_collections.ConfigDict(dict(
      prompt_fraction=(0.1, 0.5),
      cfg_drop=0.15,              # §3.3.2: the prompt dropped for 15 % of rows
      stratified_levels=True,
      duration_prompt=True,       # False: Table 11's "w/o duration prompt"
  ))
  cfg.loss = ml_collections.ConfigDict(dict(phone_weight=1.0, frame_weight=1.0,
                                            duration_l2_weight=1.0))
  cfg.synthesis = ml_collections.ConfigDict(dict(
      # Appendix A.2: 4 iterations per diffusion, guidance α = 1 except duration, top-k 20,
      # temperature 1.5 annealed to 0, MaskGIT's Gumbel noise on the confidences.
      phone_prosody_steps=4,
      duration_steps=4,
      frame_steps=4,
      cfg_alpha=1.0,
      duration_cfg_alpha=0.0,
      cfg_rescale=1.0,            # φ: NS3 rescales fully (1.0); MaskGCT blends 0.75
      top_k=20,
      temperature=1.5,
      gumbel_scale=1.0,
      max_seconds=15.0,           # the longest generated speech
      max_total_seconds=20.0,     # prompt + generated frames: the largest bucket (320000)
  ))
  cfg.train.optimizers.model = base.optimizer_config(
      name="adamw", learning_rate=1e-4, b1=0.9, b2=0.98, weight_decay=0.0, warmup_steps=5000,
      schedule="inverse_sqrt")

  if name == "tiny":
    cfg.model.update(codebook_size=32, max_duration=15, encoder_dim=32, encoder_layers=1,
                     encoder_heads=2, encoder_ffn_dim=48, encoder_kernel_size=3, phone_dim=32,
                     phone_layers=1, frame_dim=32, frame_layers=2, heads=2, ffn_dim=48,
                     dropout=0.0, time_dim=16)
    cfg.data.update(bucket_samples=(48000,), max_phonemes=96)
    cfg.synthesis.update(max_seconds=2.0, max_total_seconds=4.0)
    cfg.train.update(steps=20, batch_size=4, eval_every_steps=10, sample_every_steps=10,
                     log_every_steps=1, num_samples=1)
    cfg.train.optimizers.model = base.optimizer_config(name="adamw", learning_rate=3e-3,
                                                       warmup_steps=2)
    cfg.checkpoint.every_steps = 10
  elif name == "espeak":
    # Sized for 2 CPU cores (`make demo FAMILY=ns3` trains it for about 4 minutes): at 8 x
    # 6 s rows, 3 x 128 frame layers ran 0.8 steps/s (relative positions) and 1.1 (rotary).
    # Rotary positions (MaskGCT's choice) skip the [B, H, T, 2T - 1] position scores.
    cfg.model.update(encoder_dim=96, encoder_layers=2, encoder_heads=2, encoder_ffn_dim=192,
                     encoder_kernel_size=3, phone_dim=96, phone_layers=2, frame_dim=96,
                     frame_layers=3, heads=2, ffn_dim=192, dropout=0.0, time_dim=32,
                     position="rotary")
    cfg.data.update(bucket_samples=(48000, 96000), max_phonemes=128)
    # The largest bucket holds 6 s; the demo's "3 s" prompts end on the phoneme boundary
    # nearest 3 s, up to half a phoneme past it (3.11 s seen on a 3-speaker corpus, where
    # 2.9 s to generate failed), so 2.75 s are left to generate.
    cfg.synthesis.update(max_seconds=2.75, max_total_seconds=6.0)
    cfg.train.update(steps=800, batch_size=4, eval_every_steps=400, sample_every_steps=800,
                     log_every_steps=20, ema_decay=0.99)
    cfg.train.optimizers.model = base.optimizer_config(
        name="adamw", learning_rate=1e-3, b1=0.9, b2=0.98, warmup_steps=100,
        schedule="inverse_sqrt")
    cfg.checkpoint.every_steps = 500
  elif name == "paper":
    cfg.train.update(steps=1_000_000, batch_size=64, eval_every_steps=5000,
                     sample_every_steps=20_000, compute_dtype="bfloat16", ema_decay=0.9999)
    cfg.checkpoint.every_steps = 5000
  else:
    raise ValueError(f"configs/ns3.py: unknown preset {name!r}; valid presets: tiny, espeak, "
                     "paper")
  for ablation in ablations:
    syn = cfg.synthesis
    if ablation == "no_cfg":
      syn.update(cfg_alpha=0.0, phone_prosody_steps=2 * syn.phone_prosody_steps,
                 frame_steps=2 * syn.frame_steps)
    elif ablation == "duration_l2":
      cfg.model.duration_loss = "l2"
    elif ablation == "no_phone_prosody":
      cfg.model.phone_prosody_levels = 0
    elif ablation == "no_duration_prompt":
      cfg.diffusion.duration_prompt = False
    elif ablation == "one_step":
      syn.update(phone_prosody_steps=1, duration_steps=1, frame_steps=1)
    else:
      raise ValueError(f"configs/ns3.py: unknown ablation {ablation!r} in {preset!r}; valid: "
                       f"{', '.join(ABLATIONS)}")
  cfg.lock()
  return cfg
