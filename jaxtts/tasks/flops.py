"""Analytic model FLOPs of the tasks' models, for MFU (MaxText's convention).

Only matrix products are counted (dense layers, convolutions, attention scores and values,
the alignment's energy and context products), 2 FLOPs per multiply-add, over the padded batch
shapes the step computes on. A training step counts 3x the forward (backward = 2x forward);
rematerialisation is not counted (XLA's cost analysis does count it: that figure is HFU).
Not counted: elementwise work (activations, norms, Snake, softmax), FFTs (STFTs of the mel
loss and of the band discriminators), the mel filterbank products of the loss and the PQMF
analysis of the sub-band discriminators (fixed filterbanks), pooling written as a one-hot
product (CLONE's ``phone_pool``), the alignment scans and the mixture densities. Causal
self-attention counts half of its ``T x T`` scores and value products (the useful half, as
MaxText does); transposed convolutions count the products with real inputs, not those with
the zeros XLA's input dilation inserts (XLA's cost analysis counts those: ``s`` times more
for a stride-``s`` upsampling layer).
"""

from __future__ import annotations

import math
from typing import Sequence

import ml_collections


# ------------------------------------------------------------------------------ primitives ----

def dense(rows: float, fan_in: int, fan_out: int) -> float:
  """``[rows, fan_in] @ [fan_in, fan_out]``."""
  return 2.0 * rows * fan_in * fan_out


def conv1d(batch: int, out_len: int, kernel: int, c_in: int, c_out: int) -> float:
  """A (possibly strided or dilated) 1-D convolution with ``out_len`` output frames."""
  return 2.0 * batch * out_len * kernel * c_in * c_out


def conv_transpose1d(batch: int, in_len: int, stride: int, c_in: int, c_out: int,
                     kernel: int | None = None, padding: int | None = None,
                     output_padding: int | None = None) -> float:
  """`jaxtts.nn.conv.ConvTranspose1d` on ``[batch, in_len, c_in]``: input ``t``'s tap ``k``
  lands on output ``t s + k - padding`` of ``(in_len - 1) s - 2 padding + K + output_padding``.
  Counts the products of real inputs that land in the output: ``in_len * K`` taps less those
  that fall off the two ends. DAC's defaults (``K = 2s``, padding ``ceil(s/2)``,
  output_padding ``s % 2``, output ``in_len * s``) drop ``s``; HiFi-GAN's (``K``, padding
  ``(K - s) / 2``, no output padding) drop ``2 padding`` when ``padding <= s``."""
  s = stride
  k = 2 * s if kernel is None else kernel
  p = -(-s // 2) if padding is None else padding
  out_len = (in_len - 1) * s - 2 * p + k + (s % 2 if output_padding is None else output_padding)
  # Tap j reaches the output from inputs t with 0 <= t s + j - p < out_len.
  taps = sum(max(0, min(in_len, -(-(out_len + p - j) // s)) - max(0, -(-(p - j) // s)))
             for j in range(k))
  return 2.0 * batch * taps * c_in * c_out


def conv2d(batch: int, out_h: int, out_w: int, kh: int, kw: int, c_in: int, c_out: int
           ) -> float:
  return 2.0 * batch * out_h * out_w * kh * kw * c_in * c_out


def conv_out_len(length: int, kernel: int, stride: int, pad_total: int) -> int:
  """torch's output length ``(L + pad - K) // s + 1``."""
  return (length + pad_total - kernel) // stride + 1


# ------------------------------------------------------------------------------ GMM-VAE -------

def _residual_stack(batch: int, length: int, channels: int, units: int = 3) -> float:
  """DAC residual units: WNConv k7 (dilated) and k1, both ``channels -> channels``."""
  return units * (conv1d(batch, length, 7, channels, channels)
                  + conv1d(batch, length, 1, channels, channels))


def gmm_vae_forward(model_cfg: ml_collections.ConfigDict, batch: int, samples: int) -> float:
  """Encoder + decoder of `jaxtts.codec.gmm_vae.GMMVAE` on ``[batch, samples]`` audio (the
  waveform padded to a whole number of hops, as ``encode`` does)."""
  strides = tuple(int(s) for s in model_cfg.encoder_strides)
  hop = math.prod(strides)
  frames = -(-int(samples) // hop)
  length = frames * hop
  enc_dim, dec_dim = int(model_cfg.encoder_dim), int(model_cfg.decoder_dim)
  latent = int(model_cfg.latent_dim or enc_dim * 2 ** len(strides))
  if model_cfg.get("encoder", "dac") == "vocos":
    flops = vocos_encoder_forward(model_cfg, batch, frames, latent, hop)
  else:
    flops = conv1d(batch, length, 7, 1, enc_dim)
    channels = enc_dim
    for s in strides:
      flops += _residual_stack(batch, length, channels)
      length //= s
      flops += conv1d(batch, length, 2 * s, channels, 2 * channels)
      channels *= 2
    flops += conv1d(batch, frames, 3, channels, latent)
  if model_cfg.get("decoder", "dac") == "vocos":
    return flops + vocos_forward(model_cfg.vocos, batch, frames, latent, hop)
  # Decoder: mirrored strides, channels halve at every stride.
  flops += conv1d(batch, frames, 7, latent, dec_dim)
  length, channels = frames, dec_dim
  for s in reversed(strides):
    flops += conv_transpose1d(batch, length, s, channels, channels // 2)
    length *= s
    channels //= 2
    flops += _residual_stack(batch, length, channels)
  return flops + conv1d(batch, length, 7, channels, 1)


def _convnext_backbone(batch: int, frames: int, in_channels: int, dim: int, inter: int,
                       layers: int) -> float:
  """`jaxtts.nn.vocos.VocosBackbone`: the k7 input conv and, per ConvNeXt block, two
  pointwise Dense layers (the depthwise conv is elementwise multiply-adds,
  `jaxtts.nn.conv.depthwise_conv1d`, not a product, and is not counted)."""
  rows = batch * frames
  block = dense(rows, dim, inter) + dense(rows, inter, dim)
  return conv1d(batch, frames, 7, in_channels, dim) + layers * block


def vocos_encoder_forward(model_cfg: ml_collections.ConfigDict, batch: int, frames: int,
                          latent: int, hop: int) -> float:
  """`jaxtts.nn.vocos.VocosEncoder`: the backbone over ``n_fft // 2 + 1`` log-magnitude bins
  and the projection to the latent (the STFT is not counted)."""
  e = model_cfg.vocos_encoder
  dim = int(e.dim)
  bins = (int(model_cfg.vocos.n_fft) or 4 * hop) // 2 + 1
  return (_convnext_backbone(batch, frames, bins, dim, int(e.intermediate_dim),
                             int(e.num_layers)) + dense(batch * frames, dim, latent))


def vocos_forward(vocos_cfg: ml_collections.ConfigDict, batch: int, frames: int,
                  in_channels: int, hop: int) -> float:
  """`jaxtts.nn.vocos.VocosDecoder` over ``frames`` input frames: the k7 input conv, per
  ConvNeXt block a depthwise k7 conv and two pointwise Dense layers, and the spectrum head.
  The inverse STFT's FFTs are not products and are not counted (as the discriminators'
  STFTs are not)."""
  dim = int(vocos_cfg.dim)
  n_fft = int(vocos_cfg.n_fft) or 4 * hop
  return (_convnext_backbone(batch, frames, in_channels, dim, int(vocos_cfg.intermediate_dim),
                             int(vocos_cfg.num_layers))
          + dense(batch * frames, dim, n_fft + 2))


def subband_discriminators_forward(dc: ml_collections.ConfigDict, batch: int, samples: int
                                   ) -> float:
  """`jaxtts.nn.subband.SubBandDiscriminator` (``dc.subbands = N`` bands, 0 = none) on
  ``[batch, samples]`` audio: per band, the `ScaleDiscriminator`'s 1-D convolutions (k15,
  k41 at each of ``subband_strides``, k5, each padded ``K // 2`` a side, and the k3 post
  conv) on the band's ``ceil(samples / N)`` samples. The PQMF analysis
  (`jaxtts.audio.pqmf.pqmf_analysis`) is a fixed filterbank, like the losses' mel filterbank,
  and is not counted."""
  n = int(dc.get("subbands", 0))
  if not n:
    return 0.0
  length, c_in, flops = -(-samples // n), 1, 0.0
  layers = [(15, 1)] + [(41, int(s)) for s in dc.subband_strides] + [(5, 1)]
  for (k, s), c in zip(layers, (int(c) for c in dc.subband_channels)):
    length = conv_out_len(length, k, s, 2 * (k // 2))
    flops += conv1d(batch, length, k, c_in, c)
    c_in = c
  return n * (flops + conv1d(batch, length, 3, c_in, 1))


def discriminators_forward(dc: ml_collections.ConfigDict, batch: int, samples: int) -> float:
  """`jaxtts.codec.discriminators.Discriminators` on ``[batch, samples]`` audio: the period
  discriminators' (5, 1) / (3, 1) convolutions, the band discriminators' (3, 9) / (3, 3)
  ones (`band_bins` splits of ``w // 2 + 1`` STFT bins, ``ceil(T / (w // 4))`` frames) and
  CLONE's sub-band ones (`subband_discriminators_forward`)."""
  flops = 0.0
  for p in dc.periods:
    p = int(p)
    h = (samples + p - samples % p) // p
    c_in = 1
    channels = [int(c) for c in dc.mpd_channels]
    for i, c in enumerate(channels):
      h = conv_out_len(h, 5, 3 if i < len(channels) - 1 else 1, 4)
      flops += conv2d(batch, h, p, 5, 1, c_in, c)
      c_in = c
    flops += conv2d(batch, h, p, 3, 1, c_in, 1)
  c = int(dc.mrd_channels)
  for w in dc.window_lengths:
    w = int(w)
    frames = -(-samples // (w // 4))
    n_bins = w // 2 + 1
    total_f = 0
    for lo, hi in dc.bands:
      f = int(float(hi) * n_bins) - int(float(lo) * n_bins)
      flops += conv2d(batch, frames, f, 3, 9, 2, c)
      for _ in range(3):
        f = conv_out_len(f, 9, 2, 8)
        flops += conv2d(batch, frames, f, 3, 9, c, c)
      flops += conv2d(batch, frames, f, 3, 3, c, c)
      total_f += f
    flops += conv2d(batch, frames, total_f, 3, 3, c, 1)
  return flops + subband_discriminators_forward(dc, batch, samples)


def gmm_vae_train_step(cfg: ml_collections.ConfigDict, batch: int, samples: int) -> float:
  """One GMM-VAE step (`jaxtts.tasks.adversarial`): generator forward + backward (3 F_G); with
  discriminators also D on the reconstruction with the input gradient only (2 F_D), D on the
  real audio forward only (F_D) and the discriminator update on both (2 x 3 F_D): 9 F_D."""
  flops = 3.0 * gmm_vae_forward(cfg.model, batch, samples)
  if cfg.discriminator.enabled:
    flops += 9.0 * discriminators_forward(cfg.discriminator, batch, samples)
  return flops


# ------------------------------------------------------------------------------ GMM-LM --------

def attention(batch: int, length: int, dim: int, heads: int, causal: bool, position: str
              ) -> float:
  """`RelPositionMultiHeadAttention`: q/k/v/out projections, scores and values (halved when
  causal), and for ``relative_xl`` the position term in the contraction order the layer picks
  (`jaxtts.nn.attention.position_scores`)."""
  b, t, d, h = batch, length, dim, heads
  flops = 4 * dense(b * t, d, d)
  flops += (0.5 if causal else 1.0) * 2 * (2.0 * b * t * t * d)
  if position == "relative_xl":
    r, dh = (t if causal else 2 * t - 1), d // h
    if r * d * d + b * h * t * r * dh <= b * t * d * d + b * h * t * r * d:
      flops += 2.0 * r * d * d + 2.0 * b * h * t * r * dh
    else:
      flops += 2.0 * b * t * d * d + 2.0 * b * h * t * r * d
  return flops


def conformer_layer(batch: int, length: int, dim: int, ffn_dim: int, heads: int, kernel: int,
                    causal: bool, position: str) -> float:
  """`jaxtts.nn.conformer.ConformerBlock`: two FFNs, attention, the convolution module
  (pointwise D -> 2D and D -> D; its depthwise K conv is elementwise multiply-adds,
  `jaxtts.nn.conv.depthwise_conv1d`, and is not counted)."""
  del kernel
  rows = batch * length
  ffn = 2 * (dense(rows, dim, ffn_dim) + dense(rows, ffn_dim, dim))
  conv = dense(rows, dim, 2 * dim) + dense(rows, dim, dim)
  return ffn + conv + attention(batch, length, dim, heads, causal, position)


def mixture_head_outputs(num_components: int, latent_dim: int, covariance: str) -> int:
  """Output width of `jaxtts.nn.mixture.MixtureHead`: ``N (1 + 2D)`` (+ ``N D (D-1)/2``)."""
  n, d = num_components, latent_dim
  return n * (1 + 2 * d) + (n * d * (d - 1) // 2 if covariance == "full" else 0)


def gmm_lm_forward(cfg: ml_collections.ConfigDict, batch: int, frames: int, phonemes: int
                   ) -> float:
  """`jaxtts.gmm_lm.model.GMMLM` teacher-forced on ``[batch, frames]`` latents and
  ``[batch, phonemes]`` phonemes: encoder and decoder Conformers, the energy projections and
  products ``e [B, I, J]``, the context ``alpha @ Y``, the input projections and the mixture and
  stop heads. ``frames`` are codec frames: with ``model.frames_per_step = r`` the network runs
  ``frames // r`` steps of ``r D`` dims (`jaxtts.gmm_lm.stacking`)."""
  m, a = cfg.model, cfg.alignment
  r = int(m.get("frames_per_step", 1))
  b, i, j, dl = batch, frames // r, phonemes, int(m.latent_dim) * r
  e, d, att = int(m.encoder_dim), int(m.decoder_dim), int(a.energy_dim)
  flops = sum(conformer_layer(b, j, e, int(m.encoder_ffn_dim), int(m.encoder_heads),
                              int(m.kernel_size), False, m.position)
              for _ in range(int(m.encoder_layers)))
  flops += dense(b * i, dl, att) + dense(b * j, e, att) + 2.0 * b * i * j * att   # energies
  if e != d:
    flops += dense(b * j, e, d)                                                   # W_y
  flops += 2.0 * b * i * j * d + dense(b * i, dl, d)                              # context, W_x
  flops += sum(conformer_layer(b, i, d, int(m.decoder_ffn_dim), int(m.decoder_heads),
                               int(m.kernel_size), True, m.position)
               for _ in range(int(m.decoder_layers)))
  outputs = mixture_head_outputs(int(m.num_components), dl, m.covariance) + 1   # + stop
  return flops + dense(b * i, d, outputs)


def train_step_from_forward(forward: float) -> float:
  """MaxText: backward = 2x forward."""
  return 3.0 * forward


def shape_of(batch_shapes, key: str) -> Sequence[int]:
  if key not in batch_shapes:
    raise KeyError(f"flops_per_step: the batch has no {key!r} (fields: {sorted(batch_shapes)})")
  return tuple(int(x) for x in batch_shapes[key])


# ------------------------------------------------------------------------------ FACodec -------

def transformer_layer(batch: int, length: int, dim: int, ffn_dim: int, heads: int,
                      kernel: int, output_kernel: int = 1) -> float:
  """`jaxtts.nn.transformer.TransformerBlock`: relative-position attention (bidirectional)
  and the conv-FFN (convolutions of ``kernel`` and ``output_kernel``)."""
  return (attention(batch, length, dim, heads, False, "relative_xl")
          + conv1d(batch, length, kernel, dim, ffn_dim)
          + conv1d(batch, length, output_kernel, ffn_dim, dim))


def facodec_forward(model_cfg: ml_collections.ConfigDict, batch: int, samples: int) -> float:
  """`jaxtts.codec.facodec.FACodec`'s training forward: encoder and decoder (those of the
  GMM-VAE with ``hidden_dim`` as the latent), the timbre (and mel20 prosody) Transformer, the
  FVQ projections and cosine lookups, the conditional norm and the training heads."""
  m = model_cfg
  shim = ml_collections.ConfigDict(m.to_dict())
  shim.latent_dim = int(m.hidden_dim)
  flops = gmm_vae_forward(shim, batch, samples)
  hop = math.prod(int(s) for s in m.encoder_strides)
  frames = -(-int(samples) // hop)
  rows, h = batch * frames, int(m.hidden_dim)
  stacks = 2 if m.prosody_input == "mel20" else 1
  flops += stacks * int(m.timbre_layers) * transformer_layer(
      batch, frames, h, int(m.timbre_ffn_dim), int(m.timbre_heads), int(m.timbre_kernel_size))
  if m.prosody_input == "mel20":
    flops += dense(rows, 20, h)
  space = int(m.code_dim) if m.bottleneck else h
  quantizers = (int(m.num_prosody_quantizers) + int(m.num_content_quantizers)
                + int(m.num_detail_quantizers))
  per_vq = 2.0 * rows * int(m.codebook_size) * space
  if m.bottleneck:
    per_vq += dense(rows, h, space) + dense(rows, space, h)
  flops += quantizers * per_vq + dense(batch, h, 2 * h)
  phones, speakers = int(m.num_phones), int(m.num_speakers)
  detail = int(m.num_detail_quantizers) > 0
  flops += dense(rows, h, phones) * (2 + detail) + dense(rows, h, 2) * (2 + detail)
  return flops + 2 * dense(batch, h, speakers)


def facodec_train_step(cfg: ml_collections.ConfigDict, batch: int, samples: int) -> float:
  """One FACodec step: generator forward + backward and, with discriminators, the 9 F_D of
  `gmm_vae_train_step`."""
  flops = 3.0 * facodec_forward(cfg.model, batch, samples)
  if cfg.discriminator.enabled:
    flops += 9.0 * discriminators_forward(cfg.discriminator, batch, samples)
  return flops


# ------------------------------------------------------------------------------ NS3 -----------

def masked_code_transformer(batch: int, length: int, dim: int, layers: int, ffn_dim: int,
                            heads: int, kernel: int, cond_dim: int, time_dim: int,
                            vocab: int) -> float:
  """`jaxtts.diffusion.model.MaskedCodeTransformer` for one level: the condition projection,
  the time MLP, the blocks, every AdaCLN's ``[γ; β]`` projection (two per block and a final
  one, ``time_dim -> 2 dim`` per row of the batch) and the level's output head."""
  rows = batch * length
  flops = dense(rows, cond_dim, dim) + dense(batch, time_dim, 4 * time_dim) + dense(
      batch, 4 * time_dim, time_dim)
  flops += layers * transformer_layer(batch, length, dim, ffn_dim, heads, kernel, kernel)
  flops += (2 * layers + 1) * dense(batch, time_dim, 2 * dim)
  return flops + dense(rows, dim, vocab)


def ns3_forward(cfg: ml_collections.ConfigDict, batch: int, phones: int, frames: int
                ) -> float:
  """One training forward of `jaxtts.tasks.ns3`: the phoneme encoder (its conv-FFN's both
  convolutions of ``encoder_kernel_size``), one phone-level and one frame-level diffusion
  pass (one level each per row; the code embeddings are lookups)."""
  m = cfg.model
  e = int(m.encoder_dim)
  flops = int(m.encoder_layers) * transformer_layer(
      batch, phones, e, int(m.encoder_ffn_dim), int(m.encoder_heads),
      int(m.encoder_kernel_size), int(m.encoder_kernel_size))
  shared = dict(ffn_dim=int(m.ffn_dim), heads=int(m.heads), kernel=int(m.kernel_size),
                cond_dim=e, time_dim=int(m.time_dim))
  flops += masked_code_transformer(batch, phones, int(m.phone_dim), int(m.phone_layers),
                                   vocab=max(int(m.codebook_size), int(m.max_duration) + 1),
                                   **shared)
  flops += masked_code_transformer(batch, frames, int(m.frame_dim), int(m.frame_layers),
                                   vocab=int(m.codebook_size), **shared)
  return flops


# ------------------------------------------------------------------------------ CLONE ---------

def wavenet(batch: int, length: int, hidden: int, kernel: int, layers: int,
            cond_channels: int = 0, cond_length: int = 1) -> float:
  """`jaxtts.nn.wavenet.WaveNet` on ``[batch, length, hidden]``: per layer the dilated
  ``kernel`` conv ``H -> 2H`` and the 1x1 res/skip conv ``H -> 2H`` (the last layer's
  ``H -> H``, skip only); with a condition ``[batch, cond_length, cond_channels]`` (length 1
  for a global one) its 1x1 projection to ``2 H L``. The gates are elementwise."""
  h = hidden
  flops = layers * conv1d(batch, length, kernel, h, 2 * h)
  if layers:
    flops += (layers - 1) * conv1d(batch, length, 1, h, 2 * h) + conv1d(batch, length, 1, h, h)
  if cond_channels:
    flops += conv1d(batch, cond_length, 1, cond_channels, 2 * h * layers)
  return flops


def hifigan_forward(model_cfg: ml_collections.ConfigDict, batch: int, frames: int,
                    in_channels: int) -> float:
  """`jaxtts.nn.hifigan.HiFiGANDecoder` (CLONE's ``hifigan_*`` fields) on ``[batch, frames,
  in_channels]``: conv_pre (k7), per stage the transposed conv (kernel ``k``, padding
  ``(k - u) / 2``) halving the channels and every ResBlock1's two convolutions per dilation,
  and conv_post (k7, one channel)."""
  m = model_cfg
  c = int(m.hifigan_channels)
  flops = conv1d(batch, frames, 7, in_channels, c)
  length = frames
  for u, k in zip(m.hifigan_upsample_rates, m.hifigan_upsample_kernel_sizes):
    u, k = int(u), int(k)
    flops += conv_transpose1d(batch, length, u, c, c // 2, kernel=k, padding=(k - u) // 2,
                              output_padding=0)
    c, length = c // 2, length * u
    for rk, dilations in zip(m.hifigan_resblock_kernel_sizes, m.hifigan_resblock_dilations):
      flops += 2 * len(dilations) * conv1d(batch, length, int(rk), c, c)
  return flops + conv1d(batch, length, 7, c, 1)


def clone_wave_decoder(model_cfg: ml_collections.ConfigDict, batch: int, frames: int) -> float:
  """CLONE's wave decoder (``model.decoder``) on ``[batch, frames, hidden]`` frame features:
  `hifigan_forward`, or `vocos_forward` (``decoder_*`` fields, n_fft ``4 hop``) whose input
  has the two F0 channels with ``excitation`` and then also the harmonic filter head
  (``decoder_dim -> n_fft + 2``, `jaxtts.nn.vocos.VocosDecoder`). The excitation's pulse
  train, its STFT and the inverse STFT are not products."""
  m = model_cfg
  h, hop = int(m.hidden), int(m.hop_length)
  if m.decoder == "hifigan":
    return hifigan_forward(m, batch, frames, h)
  vocos = ml_collections.ConfigDict(dict(dim=int(m.decoder_dim), n_fft=4 * hop,
                                         intermediate_dim=int(m.decoder_intermediate_dim),
                                         num_layers=int(m.decoder_layers)))
  flops = vocos_forward(vocos, batch, frames, h + 2 * bool(m.excitation), hop)
  if m.excitation:
    flops += dense(batch * frames, int(m.decoder_dim), 4 * hop + 2)
  return flops


def clone_forward(cfg: ml_collections.ConfigDict, batch: int, samples: int, phonemes: int
                  ) -> float:
  """The training forward of `jaxtts.prosody.clone.CLONE` as `jaxtts.tasks.clone`'s loss
  runs it, on ``audio [batch, samples]`` (``F = samples // hop`` frames of the ``2 hop + 1``
  bin linear spectrogram) and ``phonemes [batch, P]``:

  * speaker: an ID table lookup (no product), or ``embed_reference``: ``reference_in``
    (bins -> H), a WaveNet over the F frames, ``reference_out`` (H -> S) on the pooled row;
  * text encoder: ``text_layers`` `transformer_layer` at P (both conv-FFN kernels
    ``text_kernel_size``, relative positions, bidirectional);
  * ``alignment="mas"``: the aligner projection (H -> 2M) and the two ``[B, F, M] x [B, P, M]``
    energy products of `CLONE.align` (the search, a scan, and the NLL along the path are
    elementwise);
  * posterior encoder: ``posterior_in`` (bins -> H), a WaveNet at F conditioned per frame on
    ``[ling; g]`` (H + S channels), ``posterior_out`` (H -> 2D) at P;
  * flow prior ``f_θ`` in the forward direction (z -> N(0, I)): per coupling ``pre``
    (D/2 -> H), a WaveNet at P conditioned on h, ``post`` (H -> D/2, or D when affine);
  * prosody predictor: ``prosody_in`` (H -> H), a WaveNet at P conditioned on g,
    ``prosody_out`` (H -> 2D);
  * duration predictor: ``duration_prosody`` (D -> H), `jaxtts.nn.duration`'s speaker Dense
    (S -> H, once per row), two convolutions of ``duration_kernel_size`` and the 1x1 head;
  * acoustic encoder: ``acoustic_in`` (D + H -> H) and a WaveNet at F conditioned on g;
    posterior wave encoder: ``wave_posterior_in`` (bins -> H) and a WaveNet at F on g;
    with ``excitation`` the F0 head (H -> 2) on all F frames of îr;
  * the wave decoder (`clone_wave_decoder`) on the ``loss.segment_frames`` window of both
    ``ir`` and ``îr``: ``2 batch`` rows of ``min(segment_frames, F)`` frames.

  Not counted: the lookups, the length regulator (a gather), ``phone_pool``'s one-hot
  ``[B, F, P] x [B, F, H]`` product (a per-phoneme mean computed as a product, 2 B F P H),
  the STFTs, the losses' mel filterbanks and the elementwise work."""
  m = cfg.model
  b, p, hop = batch, phonemes, int(m.hop_length)
  f = samples // hop
  seg = min(int(cfg.loss.segment_frames), f)
  h, d, g, k = int(m.hidden), int(m.prosody_dim), int(m.speaker_dim), int(m.wn_kernel_size)
  bins, rows_f, rows_p = 2 * hop + 1, b * f, b * p
  flops = 0.0
  if m.speaker_encoder == "reference":
    flops += (dense(rows_f, bins, h) + wavenet(b, f, h, k, int(m.reference_layers))
              + dense(b, h, g))
  kt = int(m.text_kernel_size)
  flops += int(m.text_layers) * transformer_layer(b, p, h, int(m.text_ffn_dim),
                                                  int(m.text_heads), kt, kt)
  if m.alignment == "mas":
    mels = int(m.aligner_mels)
    flops += dense(rows_p, h, 2 * mels) + 2 * (2.0 * b * f * p * mels)
  flops += (dense(rows_f, bins, h) + wavenet(b, f, h, k, int(m.posterior_layers), h + g, f)
            + dense(rows_p, h, 2 * d))                                          # posterior
  half = d // 2
  flops += int(m.flows) * (dense(rows_p, half, h) + wavenet(b, p, h, k, int(m.flow_layers), h, p)
                           + dense(rows_p, h, half * (1 if m.flow_mean_only else 2)))
  flops += (dense(rows_p, h, h) + wavenet(b, p, h, k, int(m.prosody_layers), g)
            + dense(rows_p, h, 2 * d))                                          # predictor
  kd, filters = int(m.duration_kernel_size), int(m.duration_filters)
  flops += (dense(rows_p, d, h) + dense(b, g, h) + conv1d(b, p, kd, h, filters)
            + conv1d(b, p, kd, filters, filters) + conv1d(b, p, 1, filters, 1))
  flops += dense(rows_f, d + h, h) + wavenet(b, f, h, k, int(m.acoustic_layers), g)
  flops += dense(rows_f, bins, h) + wavenet(b, f, h, k, int(m.wave_posterior_layers), g)
  if m.excitation:
    flops += dense(rows_f, h, 2)
  return flops + clone_wave_decoder(m, 2 * b, seg)


def clone_train_step(cfg: ml_collections.ConfigDict, batch: int, samples: int, phonemes: int
                     ) -> float:
  """One CLONE step: 3x `clone_forward` and, with discriminators, the 9 F_D of
  `gmm_vae_train_step` on what `jaxtts.tasks.clone` hands them: both paths' decoded windows
  and the recording's window twice, ``[2 batch, min(segment_frames, F) hop]`` each. The 3x
  is MaxText's rule: where a stop_gradient cuts an input gradient (the duration predictor's
  and the aligner's inputs, the mel side of the MAS energies) the real backward is smaller."""
  flops = train_step_from_forward(clone_forward(cfg, batch, samples, phonemes))
  if cfg.discriminator.enabled:
    seg = min(int(cfg.loss.segment_frames), samples // int(cfg.model.hop_length))
    flops += 9.0 * discriminators_forward(cfg.discriminator, 2 * batch,
                                          seg * int(cfg.model.hop_length))
  return flops
