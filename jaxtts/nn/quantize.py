"""Factorized vector quantization (FVQ) and its residual stack (NaturalSpeech 3 FACodec).

NaturalSpeech 3 (``../shared/papers/003_1b235cc35c31a20d.txt``) §3.2.1 quantizes each
attribute with FVQ, the factorized codes of DAC (Kumar et al., 2023, §3.2; the released
``ns3_codec/quantize/fvq.py`` and ``rvq.py``). One `FactorizedVQ`::

  z_e = W_in x                     [B, F, code_dim]   (the 8-dim bottleneck of §3.2.2)
  k   = argmax_j <z_e / |z_e|, c_j / |c_j|>           (cosine nearest code, in float32)
  z_q = c_k                        (the raw codebook row, not the normalised one)
  z   = z_e + sg(z_q - z_e)        (straight-through estimator)
  out = W_out z                    [B, F, dim]
  commitment = mean (z_e - sg(z_q))^2,   codebook = mean (sg(z_e) - z_q)^2

over the valid frames and the ``code_dim`` coordinates. The released code weight-normalises
``W_in`` and ``W_out``, a reparametrisation of the same maps; ours are plain Dense layers.
``bottleneck=False`` is the Table 15 ablation: no projections, the codebook lives in the
input's ``dim`` (VC Sim-O 0.86 -> 0.73 in the paper). The codebook is learned by gradient
(no EMA, no k-means init, no dead-code reset, as released).

`reset_dead_codes` is the optional restart (ours; off in the paper preset, which the issue and
the released code keep without one): a code whose largest cosine to every valid encoding of a
batch is below ``min_cosine`` can never be chosen by the cosine lookup, so it gets no gradient
and stays dead; it is replaced by an encoding drawn from the batch, as Jukebox (Dhariwal et
al., 2020, §2.3, "random restarts") and EnCodec's EMA quantizer (``expire_codes_``) do. It is
stateless (one batch decides), and the optimizer's moments of a restarted row are kept: Adam's
update is scale-free, so the row moves at the learning rate from its new place.

``normalize=True`` (ours, off in the paper preset) quantizes on the unit sphere as ViT-VQGAN
does (Yu et al., 2022, §3.2): ``z_e`` and the codebook rows are L2-normalised before the
straight-through estimator and both losses, so the lookup is the same cosine choice but the
code returned is the normalised row. FACodec's decoder input is a (conditional) LayerNorm of
the summed branches and its heads are normalised too, so nothing downstream bounds the scale
of ``z_e``; with Adam the raw variant's ``z_e`` grew step by step (codebook loss 30 -> 240 in
400 steps of the espeak preset), the normalised one cannot.

`ResidualFVQ` stacks ``num_quantizers`` of them within one attribute: quantizer ``i`` codes the
residual ``x - sum_{j<i} out_j``, and the output is ``sum_i out_i`` (DAC's residual VQ without
quantizer dropout). Losses are summed over the stack (DAC, ``rvq.py``).
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtts.audio.phase import masked_frame_mean

_ACT = ("batch", "time", "embed")


def cosine_nearest(z_e: jax.Array, codebook: jax.Array) -> jax.Array:
  """``z_e [..., D]``, ``codebook [K, D]`` -> int32 ``[...]``: the code of largest cosine
  similarity (computed in float32; a zero vector's similarities are all zero, giving code 0)."""
  z = z_e.astype(jnp.float32)
  c = codebook.astype(jnp.float32)
  z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  c = c / jnp.maximum(jnp.linalg.norm(c, axis=-1, keepdims=True), 1e-12)
  return jnp.argmax(jnp.einsum("...d,kd->...k", z, c), axis=-1).astype(jnp.int32)


def _unit(x: jax.Array) -> jax.Array:
  """``x / |x|`` over the last axis, with a finite gradient at 0 (``rsqrt(|x|^2 + 1e-24)``:
  the gradient of ``max(|x|, eps)`` is NaN there)."""
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + 1e-24)


def code_usage(codes: jax.Array, codebook_size: int,
               mask: Optional[jax.Array] = None) -> dict[str, jax.Array]:
  """Usage of one codebook over the valid frames: ``perplexity`` ``exp(-sum p log p)`` of the
  code histogram (``codebook_size`` when uniform, 1 when one code), ``dead_fraction`` the share
  of codes never chosen, ``used`` the count of codes chosen. ``codes [B, F]``, ``mask [B, F]``."""
  weights = jnp.ones(codes.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
  counts = jnp.zeros((codebook_size,), jnp.float32).at[codes.reshape(-1)].add(
      weights.reshape(-1))
  p = counts / jnp.maximum(jnp.sum(counts), 1.0)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
  used = jnp.sum(counts > 0)
  return {"perplexity": jnp.exp(entropy), "used": used.astype(jnp.float32),
          "dead_fraction": 1.0 - used.astype(jnp.float32) / codebook_size}


def reset_dead_codes(codebook: jax.Array, encodings: jax.Array, mask: jax.Array,
                     rng: jax.Array, min_cosine: float) -> tuple[jax.Array, jax.Array]:
  """Restart the codes no valid encoding comes near (module docstring).

  ``codebook [K, D]``, ``encodings [N, D]`` (the lookup's inputs ``z_e``), ``mask [N]`` (valid
  rows). A code is dead when ``max_n cos(c_k, z_n) < min_cosine`` over the valid ``n``; dead
  rows become encodings drawn uniformly from the valid ones (with replacement). Returns the
  new codebook and the number of codes restarted (float32). With no valid encoding nothing
  changes."""
  z = _unit(encodings)
  c = _unit(codebook)
  valid = mask.astype(bool)
  cosine = jnp.where(valid[None, :], jnp.einsum("kd,nd->kn", c, z), -2.0)
  dead = (jnp.max(cosine, axis=1) < min_cosine) & jnp.any(valid)
  logits = jnp.where(valid, 0.0, -jnp.inf)
  draw = jax.random.categorical(rng, logits, shape=(codebook.shape[0],))
  fresh = jnp.take(encodings.astype(codebook.dtype), draw, axis=0)
  return (jnp.where(dead[:, None], fresh, codebook),
          jnp.sum(dead).astype(jnp.float32))


def _dense(features: int, axes, name: str) -> nn.Dense:
  return nn.Dense(features, dtype=jnp.float32, name=name,
                  kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[-1:]))


class FactorizedVQ(nn.Module):
  """``x [B, F, dim]`` -> ``{"quantized" [B, F, dim], "codes" [B, F] int32,
  "commitment_loss", "codebook_loss", "encodings" [B, F, space_dim]}`` (float32; see the
  module docstring; ``encodings`` is ``sg(z_e)``, what `reset_dead_codes` draws from).

  ``decode_codes(codes [B, F]) -> [B, F, dim]`` is the decoder's path from stored codes:
  ``W_out c_k``. Parameters: ``in_proj``/``out_proj`` (with ``bottleneck``) and ``codebook``
  ``[codebook_size, code_dim]`` (``[codebook_size, dim]`` without the bottleneck)."""
  dim: int
  codebook_size: int = 1024
  code_dim: int = 8
  bottleneck: bool = True
  normalize: bool = False

  @property
  def space_dim(self) -> int:
    return self.code_dim if self.bottleneck else self.dim

  def setup(self):
    self.codebook = self.param(
        "codebook", nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                 ("vocab", "latent")),
        (self.codebook_size, self.space_dim), jnp.float32)
    if self.bottleneck:
      self.in_proj = _dense(self.code_dim, ("embed", "latent"), "in_proj")
      self.out_proj = _dense(self.dim, ("latent", "embed"), "out_proj")

  def project_in(self, x: jax.Array) -> jax.Array:
    """``x [B, F, dim] -> z_e [B, F, space_dim]`` (float32)."""
    x = x.astype(jnp.float32)
    return self.in_proj(x) if self.bottleneck else x

  def project_out(self, z: jax.Array) -> jax.Array:
    return self.out_proj(z) if self.bottleneck else z

  def codes_space(self) -> jax.Array:
    """The codebook as the lookup returns it: raw rows, or unit rows with ``normalize``."""
    return _unit(self.codebook) if self.normalize else self.codebook

  def decode_codes(self, codes: jax.Array) -> jax.Array:
    """``codes [B, F]`` int -> ``W_out c_codes`` ``[B, F, dim]`` (float32)."""
    return self.project_out(jnp.take(self.codes_space(), codes, axis=0))

  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None) -> dict[str, jax.Array]:
    z_e = self.project_in(x)
    if self.normalize:
      z_e = _unit(z_e)
    codes = cosine_nearest(z_e, self.codebook)
    z_q = jnp.take(self.codes_space(), codes, axis=0)
    z = z_e + jax.lax.stop_gradient(z_q - z_e)
    quantized = nn.with_logical_constraint(self.project_out(z), _ACT)
    return {"quantized": quantized, "codes": codes,
            "commitment_loss": masked_frame_mean(
                jnp.square(z_e - jax.lax.stop_gradient(z_q)), mask),
            "codebook_loss": masked_frame_mean(
                jnp.square(jax.lax.stop_gradient(z_e) - z_q), mask),
            "encodings": jax.lax.stop_gradient(z_e)}


class ResidualFVQ(nn.Module):
  """``num_quantizers`` `FactorizedVQ` over successive residuals of ``x [B, F, dim]``.

  Returns ``quantized`` ``sum_i out_i`` [B, F, dim], ``codes`` [B, F, num_quantizers] int32,
  the commitment and codebook losses summed over the stack and each quantizer's ``encodings``
  [B, F, num_quantizers, space_dim]; ``decode_codes(codes [B, F, n])``
  sums each quantizer's ``decode_codes``."""
  dim: int
  num_quantizers: int = 1
  codebook_size: int = 1024
  code_dim: int = 8
  bottleneck: bool = True
  normalize: bool = False

  def setup(self):
    self.quantizers = [FactorizedVQ(self.dim, self.codebook_size, self.code_dim,
                                    self.bottleneck, self.normalize, name=f"vq_{i}")
                       for i in range(self.num_quantizers)]

  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None) -> dict[str, jax.Array]:
    residual = x.astype(jnp.float32)
    quantized = jnp.zeros_like(residual)
    codes, encodings, commitment, codebook = [], [], 0.0, 0.0
    for vq in self.quantizers:
      out = vq(residual, mask)
      residual = residual - out["quantized"]
      quantized = quantized + out["quantized"]
      codes.append(out["codes"])
      encodings.append(out["encodings"])
      commitment = commitment + out["commitment_loss"]
      codebook = codebook + out["codebook_loss"]
    return {"quantized": quantized, "codes": jnp.stack(codes, axis=-1),
            "commitment_loss": commitment, "codebook_loss": codebook,
            "encodings": jnp.stack(encodings, axis=-2)}

  def decode_codes(self, codes: jax.Array) -> jax.Array:
    if codes.shape[-1] != self.num_quantizers:
      raise ValueError(f"ResidualFVQ: codes have {codes.shape[-1]} codebooks, expected "
                       f"{self.num_quantizers}")
    return sum(vq.decode_codes(codes[..., i]) for i, vq in enumerate(self.quantizers))
