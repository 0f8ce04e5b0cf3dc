"""The GMM-VAE (Lin & He, ICLR 2025, §3.1) as a `jaxtts.codec.base.Codec`: continuous latents
``{"latents": float32 [F, D]}`` at ``hop = prod(encoder_strides)``.

With ``model.f0_source="latent"`` the last two latent channels are the input's frame F0 and
voicing (`jaxtts.codec.gmm_vae.GMMVAE.encode`), estimated here on the host with WORLD
(`jaxtts.audio.f0.compute_f0`, the corpus builders' F0), so any waveform can be encoded.

Restores only the generator's evaluation parameters (`jaxtts.workdir.restore_eval_params`),
never the optimizer or a trainer.
"""

from __future__ import annotations

from typing import Mapping, Optional

import jax
import ml_collections
import numpy as np

from jaxtts import workdir as workdir_lib
from jaxtts.audio.f0 import compute_f0
from jaxtts.codec import gmm_vae
from jaxtts.codec.base import CONTINUOUS, Codec, Field, Representation


class GMMVAECodec(Codec):
  """A trained ``gmm_vae`` workdir for encoding and decoding single utterances."""

  name = "gmm_vae"

  def __init__(self, workdir: str, step: Optional[int] = None,
               cfg: Optional[ml_collections.ConfigDict] = None):
    cfg = cfg if cfg is not None else workdir_lib.load_config(workdir)
    workdir_lib.require_task(cfg, workdir, ("gmm_vae",), "a GMM-VAE codec")
    self.workdir, self.cfg = workdir, cfg
    self.corpus_dir = str(cfg.data.dir)
    self.model = gmm_vae.from_config(cfg)
    self.step, params = workdir_lib.restore_eval_params(workdir, ("generator",), step, cfg)
    self.params = params["generator"]
    self.sample_rate = int(cfg.data.sample_rate)
    self.hop, dim = self.model.hop_length, int(self.model.resolved_latent_dim)
    self.latent_dim = dim
    self.representation = Representation(
        kind=CONTINUOUS, fields={"latents": Field("float32", (dim,))},
        frame_rate=self.sample_rate / self.hop, dim=dim)
    model = self.model
    self._encode = jax.jit(lambda p, x, *pitch: model.apply({"params": p}, x, *pitch,
                                                            method=model.encode))
    self._decode = jax.jit(lambda p, h: model.apply({"params": p}, h, method=model.decode))

  def _encode_padded(self, wav: np.ndarray, num_frames: int) -> dict[str, np.ndarray]:
    pitch = ()
    if self.model.pitch_in_latent:  # F0 of the real frames only: independent of the padding
      f0, voiced = compute_f0(wav[:num_frames * self.hop], self.sample_rate, self.hop)
      pitch = (f0[None].astype(np.float32), voiced[None])
    return {"latents": np.asarray(self._encode(self.params, wav[None], *pitch))[0]}

  def _decode_padded(self, rep: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.asarray(self._decode(self.params, rep["latents"][None]))[0]
