"""The diffusion networks: DiT sizes against the paper, shapes, conditioning, sharding annotations."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlab import models
from jaxlab.models.diffusion.embeddings import sinusoidal_embedding

# DiT paper (Peebles & Xie 2023), Table 1: parameters of the ImageNet 256 models (32x32x4 latents,
# 1000 classes, learned sigma), in millions.
DIT_PAPER_PARAMS_M = {"dit_s_2": 33, "dit_b_2": 130, "dit_l_2": 458, "dit_xl_2": 675}


def _num_params(model) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_dit_sizes_match_the_paper():
  for name, millions in DIT_PAPER_PARAMS_M.items():
    model = nnx.eval_shape(lambda name=name: models.create(name, num_classes=1000, rngs=nnx.Rngs(0)))
    assert _num_params(model) / 1e6 == pytest.approx(millions, rel=0.01), name


def test_dit_patch_size_changes_only_the_embedding_and_output():
  sizes = {p: _num_params(nnx.eval_shape(lambda p=p: models.create(
      "dit", num_classes=10, rngs=nnx.Rngs(0), patch_size=p, hidden_size=64, depth=1, num_heads=2)))
           for p in (2, 4)}
  # Patch embedding (p^2 4) x 64 and output 64 x (p^2 8) + bias: (16 - 4) (256 + 512 + 8) more.
  assert sizes[4] - sizes[2] == (16 - 4) * (4 * 64 + 64 * 8 + 8)


@functools.cache  # building even a tiny model eagerly dispatches one small computation per array
def _tiny(name, num_classes=10, dtype=jnp.float32):
  kwargs = {"unet": {"channels": 16, "channel_mult": (1, 2), "num_res_blocks": 1, "attention_resolutions": (4,),
                     "num_heads": 2, "norm_groups": 4, "dropout": 0.0},
            "dit": {"patch_size": 2, "hidden_size": 32, "depth": 2, "num_heads": 2}}[name]
  return models.create(name, num_classes=num_classes, rngs=nnx.Rngs(0), in_channels=1, img_size=8,
                       dtype=dtype, **kwargs)


@nnx.jit
def _apply(model, x, t, labels):
  return model(x, t, labels)


def _perturbed(model, seed=1):
  """The zero-initialised output layers make a fresh model's output 0: move every parameter a bit."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit  # one compiled program instead of an eager dispatch per array
  def shift(params):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(treedef, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])

  return nnx.merge(graphdef, shift(params), rest)


@pytest.mark.parametrize("name", ["unet", "dit"])
def test_networks_map_noisy_images_to_their_shape_and_use_time_and_labels(name):
  model = _tiny(name)
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
  t, labels = jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([0, 1, 2, 10])
  chex.assert_trees_all_equal(_apply(model, x, t, labels), jnp.zeros((4, 8, 8, 1)))  # zero-initialised output
  model = _perturbed(model)
  out = _apply(model, x, t, labels)
  chex.assert_shape(out, (4, 8, 8, 1))
  assert out.dtype == jnp.float32
  assert not np.allclose(out, _apply(model, x, t + 1.0, labels), atol=1e-4)
  assert not np.allclose(out, _apply(model, x, t, jnp.array([3, 4, 5, 10])), atol=1e-4)
  if name == "dit":  # (the U-Net casts its output the same way; one more tiny model is slow to build)
    half = _perturbed(_tiny(name, dtype=jnp.bfloat16))  # bfloat16 compute, float32 output
    assert _apply(half, x, t, labels).dtype == jnp.float32


@pytest.mark.parametrize("name", ["unet", "dit"])
def test_every_parameter_carries_logical_axes(name):
  model = nnx.eval_shape(lambda: _tiny.__wrapped__(name))
  for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    axes = variable.get_metadata().get("out_sharding")
    assert axes is not None and len(axes) == variable.get_value().ndim, path


@pytest.mark.parametrize("name", ["unet", "dit"])
def test_conditional_networks_need_labels_and_unconditional_ones_ignore_them(name):
  x, t = jnp.zeros((2, 8, 8, 1)), jnp.zeros((2,))
  with pytest.raises(ValueError, match=f"{name} is class-conditional: pass labels of shape \\(2,\\)"):
    _tiny(name)(x, t)
  if name == "dit":  # both networks skip their label table alike (embeddings.check_labels)
    unconditional = _perturbed(_tiny(name, num_classes=0))
    chex.assert_trees_all_equal(_apply(unconditional, x, t, None), _apply(unconditional, x, t, jnp.array([3, 4])))
  with pytest.raises(ValueError, match=f"{name} expects NHWC input"):
    _tiny(name)(jnp.zeros((2, 16, 16, 1)), t, jnp.zeros(2, jnp.int32))


def test_bad_unet_shapes_fail_in_one_line():
  with pytest.raises(ValueError, match="unet: 24 channels do not split into norm_groups=32 groups"):
    models.create("unet", num_classes=0, rngs=nnx.Rngs(0), channels=24, channel_mult=(1,))
  with pytest.raises(ValueError, match="unknown keyword\\(s\\) depth for model 'unet'"):
    models.check_kwargs("unet", {"depth": 3})


def test_sinusoidal_embedding_is_cos_then_sin_of_geometric_frequencies():
  emb = sinusoidal_embedding(jnp.array([0.0, 2.0]), 8)
  freqs = 10000.0 ** (-np.arange(4) / 4)
  np.testing.assert_allclose(emb[1], np.concatenate([np.cos(2 * freqs), np.sin(2 * freqs)]), rtol=1e-6)
  np.testing.assert_allclose(emb[0], [1, 1, 1, 1, 0, 0, 0, 0])
