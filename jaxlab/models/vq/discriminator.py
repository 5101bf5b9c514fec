"""PatchGAN discriminator (pix2pix / Taming): one real-vs-fake logit per receptive-field patch.

conv(stride 2)-LeakyReLU, then (conv(stride 2)-GroupNorm-LeakyReLU) × (n_layers − 1), a stride-1
block and a 1-channel conv. GroupNorm instead of Taming's BatchNorm: the VQGAN loss runs the
discriminator on real and fake batches and on a stop-gradient copy; with batch statistics each
call would update them differently, GroupNorm has none.

It also keeps LeCam regularisation's EMAs of its mean outputs on real and fake images
(Tseng et al. 2021), as model state (`LeCamEMA`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jaxlab.models.vq.autoencoder import conv, group_norm


class LeCamEMA(nnx.Variable):
  """Running mean of the discriminator's output on real or generated images."""


class PatchDiscriminator(nnx.Module):

  def __init__(self, in_channels: int, *, channels: int = 64, n_layers: int = 3,
               lecam_decay: float = 0.999, dtype: DTypeLike = jnp.float32,
               param_dtype: DTypeLike = jnp.float32, rngs: nnx.Rngs):
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    pad = ((1, 1), (1, 1))
    convs, norms, width = [conv(in_channels, channels, 4, strides=2, padding=pad, **kw)], [None], channels
    for i in range(1, n_layers + 1):
      out = channels * min(2 ** i, 8)
      convs.append(conv(width, out, 4, strides=2 if i < n_layers else 1, padding=pad, **kw))
      norms.append(group_norm(out, **kw))
      width = out
    self.convs = nnx.List(convs)
    self.norms = nnx.List(norms)
    self.conv_out = conv(width, 1, 4, padding=pad, **kw)
    self.lecam_decay = lecam_decay
    self.ema_real = LeCamEMA(jnp.zeros((), jnp.float32))
    self.ema_fake = LeCamEMA(jnp.zeros((), jnp.float32))

  def __call__(self, images: jax.Array) -> jax.Array:
    x = images
    for conv_layer, norm in zip(self.convs, self.norms):
      x = conv_layer(x)
      x = nnx.leaky_relu(norm(x) if norm is not None else x, 0.2)
    return self.conv_out(x).astype(jnp.float32)

  def lecam_loss(self, real_logits: jax.Array, fake_logits: jax.Array, update: bool) -> jax.Array:
    """E[relu(D(x) − ema_fake)²] + E[relu(ema_real − D(G(z)))²]; updates the EMAs if `update`."""
    real_mean = jax.lax.stop_gradient(jnp.mean(real_logits))
    fake_mean = jax.lax.stop_gradient(jnp.mean(fake_logits))
    loss = (jnp.mean(jnp.square(nnx.relu(real_logits - self.ema_fake[...])))
            + jnp.mean(jnp.square(nnx.relu(self.ema_real[...] - fake_logits))))
    if update:
      d = self.lecam_decay
      self.ema_real[...] = d * self.ema_real[...] + (1 - d) * real_mean
      self.ema_fake[...] = d * self.ema_fake[...] + (1 - d) * fake_mean
    return loss
