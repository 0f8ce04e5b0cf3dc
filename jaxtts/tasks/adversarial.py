"""The shared GAN update of the codec-style tasks (GMM-VAE today; FACodec and CLONE next).

One step updates two parameter groups from the parameters at the start of the step
(simultaneous gradient steps):

* generator (``generator_group``), objective
  ``L_G = L_rec + gate(step) * (adversarial_weight * L_adv + feature_matching_weight * L_FM)``
  where ``L_rec`` is the task's own objective (e.g. mel + prior for GMM-VAE, eq. 4 of Lin & He
  2025), ``L_adv`` = `codec_losses.generator_adversarial_loss` of the discriminators on the
  generated audio (LSGAN ``sum_k mean((1 - D_k(G))^2)`` or hinge ``sum_k mean(-D_k(G))``),
  ``L_FM`` = `codec_losses.feature_matching_loss` (``sum_k sum_l mean|f_kl(G) - sg(f_kl(x))|``)
  and ``gate(step) = [step >= discriminator.start_step]`` (the warm-up: before it the
  generator's gradient is the gradient of ``L_rec`` alone);
* discriminator (``discriminator_group``), objective `codec_losses.discriminator_loss` on the
  real audio and the step's generated audio under stop-gradient (LSGAN
  ``sum_k mean((1 - D_k(x))^2) + mean(D_k(G)^2)`` or hinge), trained from step 0.

The task supplies ``generator_objective(g_params, batch, rng) -> (L_rec, (metrics, fake,
real))`` (``fake`` and ``real`` waveforms ``[B, T]``, padding zeroed) and
``discriminator_apply(d_params, wav [B, T]) -> [K lists of feature maps]`` (the last map of
each list is the logits, `jaxtts.codec.discriminators.Discriminators`). Config: the
``discriminator`` section of `jaxtts.codec.discriminators.discriminator_config` plus
``start_step`` (``loss``, ``adversarial_weight``, ``feature_matching_weight``).

Metrics: the task's metrics with ``loss`` = ``L_G`` (the scalar the NaN guard checks),
``adversarial_loss`` and ``feature_matching_loss`` (logged before the gate opens too),
``grad_norm`` (generator), ``discriminator_loss``, ``discriminator_grad_norm``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxtts.codec import losses as codec_losses
from jaxtts.codec.discriminators import build_discriminators
from jaxtts.train import state as state_lib

# (g_params, batch, rng) -> (loss, (metrics, fake [B, T], real [B, T]))
GeneratorObjective = Callable[[Any, Mapping[str, jax.Array], jax.Array],
                              tuple[jax.Array, tuple[dict, jax.Array, jax.Array]]]
DiscriminatorApply = Callable[[Any, jax.Array], Any]


@dataclasses.dataclass(frozen=True)
class AdversarialStep:
  """Generator + discriminator update (module docstring); jit-friendly (no state)."""
  config: ml_collections.ConfigDict          # cfg.discriminator
  generator_objective: GeneratorObjective
  discriminator_apply: DiscriminatorApply
  generator_group: str = "generator"
  discriminator_group: str = "discriminator"

  def gate(self, step: jax.Array) -> jax.Array:
    """float32 []: 1 from ``discriminator.start_step`` on (the generator's adversarial terms),
    else 0."""
    return (step >= self.config.start_step).astype(jnp.float32)

  def generator_loss(self, g_params: Any, d_params: Any, batch: Mapping[str, jax.Array],
                     rng: jax.Array, gate: jax.Array
                     ) -> tuple[jax.Array, tuple[dict, jax.Array, jax.Array]]:
    """``L_G`` of the module docstring; returns ``(L_G, (metrics, real, fake))``. The real
    audio's features are under stop-gradient; the discriminator is at ``d_params``."""
    loss, (metrics, fake, real) = self.generator_objective(g_params, batch, rng)
    dc = self.config
    d_fake = self.discriminator_apply(d_params, fake)
    d_real = jax.lax.stop_gradient(self.discriminator_apply(d_params, real))
    adv = codec_losses.generator_adversarial_loss(d_fake, dc.loss)
    fm = codec_losses.feature_matching_loss(d_real, d_fake)
    loss = loss + gate * (dc.adversarial_weight * adv + dc.feature_matching_weight * fm)
    metrics = dict(metrics, loss=loss, adversarial_loss=adv, feature_matching_loss=fm)
    return loss, (metrics, real, fake)

  def discriminator_loss(self, d_params: Any, real: jax.Array, fake: jax.Array) -> jax.Array:
    """The discriminator's objective on ``real`` and (already detached) ``fake`` audio."""
    return codec_losses.discriminator_loss(self.discriminator_apply(d_params, real),
                                           self.discriminator_apply(d_params, fake),
                                           self.config.loss)

  def __call__(self, state: state_lib.TrainState, batch: Mapping[str, jax.Array],
               rng: jax.Array, optimizers: Mapping[str, optax.GradientTransformation]
               ) -> tuple[state_lib.TrainState, dict]:
    """One update of both groups (a task's ``train_step`` body)."""
    gen, disc = self.generator_group, self.discriminator_group
    params, opt_state = dict(state.params), dict(state.opt_state)
    grads, (metrics, real, fake) = jax.grad(self.generator_loss, has_aux=True)(
        params[gen], params[disc], batch, rng, self.gate(state.step))
    fake = jax.lax.stop_gradient(fake)
    d_loss, d_grads = jax.value_and_grad(self.discriminator_loss)(params[disc], real, fake)
    params[disc], opt_state[disc] = state_lib.apply_group(
        params[disc], opt_state[disc], d_grads, optimizers[disc])
    metrics["discriminator_loss"] = d_loss
    metrics["discriminator_grad_norm"] = optax.tree.norm(d_grads)
    params[gen], opt_state[gen] = state_lib.apply_group(
        params[gen], opt_state[gen], grads, optimizers[gen])
    metrics["grad_norm"] = optax.tree.norm(grads)
    return state.replace(params=params, opt_state=opt_state), metrics


def setup(config: ml_collections.ConfigDict, generator_objective: GeneratorObjective
          ) -> tuple[Any, tuple[str, ...], "AdversarialStep | None"]:
  """A codec task's GAN wiring from its ``discriminator`` section: ``(discriminators or None,
  parameter groups, AdversarialStep or None)``; without ``enabled`` only the generator
  group."""
  if not config.enabled:
    return None, ("generator",), None
  discriminators = build_discriminators(config)
  step = AdversarialStep(config, generator_objective,
                         lambda p, x: discriminators.apply({"params": p}, x))
  return discriminators, ("generator", "discriminator"), step
