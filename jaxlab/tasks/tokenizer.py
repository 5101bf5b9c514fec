"""Training a VQ tokenizer: VQ-VAE, or VQGAN with a patch discriminator, in one loss.

Images are expected in [-1, 1] (`config.dataset.mean = std = (0.5,)*C`).

loss = rec + perceptual_weight·perceptual + quantizer_weight·quantizer
       + on · [adversarial_weight·λ·(−E D(x̂))                        generator, D frozen
               + E relu(1 − D(x)) + E relu(1 + D(sg(x̂))) + lecam_weight·LeCam]   discriminator

- The generator's adversarial term evaluates a stop-gradient copy of the discriminator (nnx.split,
  stop_gradient on its state, nnx.merge) and the discriminator sees stop_gradient(x̂): one gradient
  of the sum gives every part exactly its own gradient, and the trainer's single optimizer makes
  the simultaneous GAN update on one batch. `config.optim.lr_multipliers = (("^discriminator/",
  f),)` gives the discriminator its own learning rate.
- λ (Taming's adaptive weight) = ‖∇_W L_rec‖ / (‖∇_W L_adv‖ + 1e-4) at the kernel W of the
  decoder's last layer, clipped to [0, 1e4], not differentiated.
- on = 0 before `disc_start` training batches, 1 after. The batch count is a `TrainingCounter` in the
  model state: checkpointed and restored with the rest of the state, so a resumed run switches at
  the same step, and the trainer needs to know nothing about GANs. It counts loss evaluations in
  train mode: with `grad_accum_steps=k`, k per update.
- LeCam regularisation (Tseng et al. 2021) keeps D's outputs near EMAs of each other's means.
- perceptual: `PerceptualDistance` on a frozen registered network (`perceptual_network`, its layers
  chosen by `perceptual_layers`), loaded from the network's own run with `config.init_from`
  (rename `^(params|model_state)/` → `model_state/perceptual/network/`); or pass any nnx module as
  `Tokenizer(..., perceptual_network=module)`.

Per-step metrics include the quantizer's codebook statistics (usage, perplexity, entropy, dead
fraction); eval reports PSNR and SSIM of reconstructions and codebook usage per eval batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxlab.metrics import codebook as codebook_metrics
from jaxlab.metrics import image_quality
from jaxlab.models.vq.discriminator import PatchDiscriminator
from jaxlab.models.vq.perceptual import PerceptualDistance
from jaxlab.tasks.registry import register
from jaxlab.tasks.base import ModelBuilder, Task

RECONSTRUCTION_LOSSES = ("l1", "l2")


class TrainingCounter(nnx.Variable):
  """Number of training batches the model has seen (model state, checkpointed)."""


class TokenizerModel(nnx.Module):
  """What the tokenizer task trains: `autoencoder` (the tokenizer itself), optional
  `discriminator` and frozen `perceptual` distance, and the batch counter."""

  def __init__(self, autoencoder: nnx.Module, discriminator: nnx.Module | None = None,
               perceptual: PerceptualDistance | None = None):
    self.autoencoder = autoencoder
    self.discriminator = discriminator
    self.perceptual = perceptual
    self.train_batches = TrainingCounter(jnp.zeros((), jnp.int32))


def _frozen_copy(module: nnx.Module) -> nnx.Module:
  """The module with stop_gradient on all its state: gradients pass through it to its input only."""
  graphdef, state = nnx.split(module)
  return nnx.merge(graphdef, jax.lax.stop_gradient(state))


def _codebook_sizes(quantizer) -> tuple[int, ...]:
  return tuple(getattr(quantizer, "codebook_sizes", (quantizer.codebook_size,)))


@register
@dataclasses.dataclass(frozen=True)
class Tokenizer(Task):
  """config.task: every field below; adversarial_weight=0 is a VQ-VAE (no discriminator)."""
  name = "tokenizer"

  reconstruction: str = "l1"
  quantizer_weight: float = 1.0
  perceptual_weight: float = 0.0
  # registry model config (name + kwargs), or an nnx module
  perceptual_network: Any = dataclasses.field(default_factory=lambda: {"name": "small_cnn"})
  perceptual_layers: str = r"^bn\d"
  adversarial_weight: float = 0.0
  adaptive_weight: bool = True
  disc_start: int = 0
  lecam_weight: float = 0.0
  discriminator: dict = dataclasses.field(  # PatchDiscriminator keywords
      default_factory=lambda: {"channels": 64, "n_layers": 3})

  def __post_init__(self):
    if self.reconstruction not in RECONSTRUCTION_LOSSES:
      raise ValueError(f"unknown task.reconstruction '{self.reconstruction}'; valid: "
                       f"{', '.join(RECONSTRUCTION_LOSSES)}")
    for key in ("quantizer_weight", "perceptual_weight", "adversarial_weight", "lecam_weight", "disc_start"):
      if getattr(self, key) < 0:
        raise ValueError(f"task.{key} must be >= 0, got {getattr(self, key)}")

  @property
  def adversarial(self) -> bool:
    return self.adversarial_weight > 0

  # ---- Model -------------------------------------------------------------------------------
  def init(self, build: ModelBuilder) -> nnx.Module:
    autoencoder = build()
    channels = build.info.image_shape[-1]
    discriminator = perceptual = None
    with nnx.use_eager_sharding(False):
      if self.adversarial:
        discriminator = PatchDiscriminator(channels, dtype=build.dtype, rngs=build.rngs,
                                           **(self.discriminator or {}))
    if self.perceptual_weight > 0:
      network = self.perceptual_network
      if not isinstance(network, nnx.Module):
        network = build(network or {"name": "small_cnn"})
      perceptual = PerceptualDistance(network, self.perceptual_layers)
    return TokenizerModel(autoencoder, discriminator, perceptual)

  # ---- Loss ---------------------------------------------------------------------------------
  def _reconstruction(self, x, y):
    """Per-image reconstruction loss, mean over pixels."""
    d = jnp.abs(x - y) if self.reconstruction == "l1" else jnp.square(x - y)
    return jnp.mean(d, axis=(1, 2, 3))

  def _nll(self, model, x, x_hat):
    """Reconstruction (+ perceptual) loss, the 'NLL' of Taming."""
    loss = self._reconstruction(x, x_hat).mean()
    if model.perceptual is not None:
      loss = loss + self.perceptual_weight * model.perceptual(x, x_hat).mean()
    return loss

  def _adaptive_weight(self, nll_fn, adv_fn, features, last_layer, finish):
    """‖∇_W nll‖ / (‖∇_W adv‖ + 1e-4) at the last layer's kernel W, without gradient."""
    features = jax.lax.stop_gradient(features)
    graphdef, kernel, rest = nnx.split(last_layer, nnx.PathContains("kernel"), ...)
    kernel, rest = jax.lax.stop_gradient(kernel), jax.lax.stop_gradient(rest)
    output = lambda k: finish(nnx.merge(graphdef, k, rest)(features))
    x_hat, pull_back = jax.vjp(output, kernel)
    grad_nll = pull_back(jax.grad(nll_fn)(x_hat))[0]
    grad_adv = pull_back(jax.grad(adv_fn)(x_hat))[0]
    weight = optax.tree.norm(grad_nll) / (optax.tree.norm(grad_adv) + 1e-4)
    return jax.lax.stop_gradient(jnp.clip(weight, 0.0, 1e4))

  def loss(self, model, batch, rng):
    del rng  # quantizers draw restarts and dropout from the step's reseeded streams
    x = batch["image"].astype(jnp.float32)
    ae = model.autoencoder
    quantized = ae.encode(x)
    features, last_layer, finish = ae.decode_parts(quantized.values)
    x_hat = finish(last_layer(features))
    nll = self._nll(model, x, x_hat)
    loss = nll + self.quantizer_weight * quantized.loss
    metrics = {"reconstruction": self._reconstruction(x, x_hat).mean(), "quantizer_loss": quantized.loss,
               "psnr": image_quality.psnr(x, jnp.clip(x_hat, -1, 1), max_value=2.0).mean(),
               **{f"codebook/{k}": v for k, v in quantized.stats.items()}}
    if model.perceptual is not None:  # the term inside `nll`, reported (XLA's CSE computes it once)
      metrics["perceptual"] = model.perceptual(x, x_hat).mean()
    count = model.train_batches[...]
    model.train_batches[...] = count + 1
    if self.adversarial:
      on = (count >= self.disc_start).astype(jnp.float32)
      frozen_disc = _frozen_copy(model.discriminator)
      adv_fn = lambda y: -jnp.mean(frozen_disc(y))  # hinge generator loss
      adv = adv_fn(x_hat)
      weight = (self._adaptive_weight(lambda y: self._nll(model, x, y), adv_fn, features, last_layer, finish)
                if self.adaptive_weight else jnp.ones((), jnp.float32))
      real = model.discriminator(x)
      fake = model.discriminator(jax.lax.stop_gradient(x_hat))
      disc = jnp.mean(nnx.relu(1.0 - real)) + jnp.mean(nnx.relu(1.0 + fake))
      lecam = model.discriminator.lecam_loss(real, fake, update=True)
      loss = loss + on * (self.adversarial_weight * weight * adv + disc + self.lecam_weight * lecam)
      metrics.update({"generator_adversarial": adv, "adaptive_weight": weight, "discriminator": disc,
                      "lecam": lecam, "discriminator_on": on,
                      "logits_real": jnp.mean(real), "logits_fake": jnp.mean(fake)})
    metrics["loss"] = loss
    return loss, metrics

  # ---- Eval ---------------------------------------------------------------------------------
  def evaluate(self, model, batch):
    x = batch["image"].astype(jnp.float32)
    mask = batch["mask"].astype(jnp.float32)
    x_hat, quantized = model.autoencoder(x)
    x_hat = jnp.clip(x_hat, -1.0, 1.0)
    count = mask.sum()
    sizes = _codebook_sizes(model.autoencoder.quantizer)
    codes = quantized.codes if len(sizes) > 1 else quantized.codes[..., None]
    weights = mask.reshape((-1,) + (1,) * (codes.ndim - 2))
    usage = [codebook_metrics.usage(codebook_metrics.code_counts(codes[..., i], size, weights))
             for i, size in enumerate(sizes)]
    mean = lambda key: jnp.mean(jnp.stack([u[key] for u in usage]))
    return {
        "loss": (self._reconstruction(x, x_hat) * mask).sum(),
        "psnr": (image_quality.psnr(x, x_hat, max_value=2.0) * mask).sum(),
        "ssim": (image_quality.ssim(x, x_hat, max_value=2.0) * mask).sum(),
        # Per eval batch, weighted by its examples: with one eval batch, usage over the eval set.
        "codebook_usage": mean("usage") * count,
        "codebook_perplexity": mean("perplexity") * count,
        "count": count,
    }
