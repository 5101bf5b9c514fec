"""Sampling a trained network: classifier-free guidance around a formulation, in one jitted loop.

`generate(net, formulation, sampler, labels, rng, shape, guidance=w)` draws len(labels) samples.
Guidance follows diffusers' convention: out = out(null) + w (out(label) - out(null)), so w = 1 is
the conditional model alone. It is applied to the network's raw output, which every formulation
maps affinely to the denoised sample, so it equals guiding x0 (and eps).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlab.diffusion.samplers import Sampler


def guided(net, null_label: int, guidance: float):
  """net(x, time, labels) with classifier-free guidance: one network call on a doubled batch."""
  if guidance == 1.0:
    return net

  def apply(x, time, labels):
    both = net(jnp.concatenate([x, x]), jnp.concatenate([time, time]),
               jnp.concatenate([labels, jnp.full_like(labels, null_label)]))
    cond, uncond = jnp.split(both, 2)
    return uncond + guidance * (cond - uncond)

  return apply


def generate(net, formulation, sampler: Sampler, labels: jax.Array, rng: jax.Array, shape,
             *, guidance: float = 1.0, null_label: int | None = None) -> jax.Array:
  """Samples [len(labels), *shape] (float32, the data's scale) from noise drawn with `rng`.

  `labels` are class ids, or `null_label` everywhere for unconditional samples; guidance != 1
  needs `null_label`.
  """
  if guidance != 1.0 and null_label is None:
    raise ValueError("classifier-free guidance needs a class-conditional model (null_label)")
  net = guided(net, null_label, guidance)
  levels = jnp.asarray(sampler.grid.levels[:-1])
  batch = labels.shape[0]

  def denoise(x, i, level=None):  # `level`: off the grid, as EDM's churn raises sigma
    return formulation.predict(net, x, jnp.full((batch,), levels[i] if level is None else level), labels)

  noise_key, loop_key = jax.random.split(rng)
  x = sampler.initial_noise(noise_key, (batch, *shape))
  return sampler.run(denoise, x, loop_key)
