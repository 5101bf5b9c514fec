"""Model registry and backbones: shapes, parameter counts, sharding axes, modes, dtypes, errors;
timm-like defaults of `create`, the lazy `import jaxlab`, and every registered model traced."""

import functools
import subprocess
import sys

import chex
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlab import models
from jaxlab.models import registry

NUM_CLASSES = 7  # not 10, so a hard-coded head size would show
# The small models these generic tests cover; the backbone zoo has its own tests (test_backbones_*).
BUILTIN = ("resnet18_cifar", "resnet34_cifar", "small_cnn")


def _key(seed):
  # rbg keys: initializers compile about twice as fast as with threefry, and compiling dominates.
  return jax.random.key(seed, impl="rbg")


def _create(name, in_channels, **kwargs):
  return models.create(name, num_classes=NUM_CLASSES, rngs=nnx.Rngs(_key(0)),
                       in_channels=in_channels, **kwargs)


@functools.cache
def _built(name):
  return _create(name, in_channels=1)


def _fresh(name):
  """A 1-channel model in train mode; built once per name, as building a ResNet takes seconds."""
  model = nnx.clone(_built(name))
  model.train()
  return model


def _images(shape, seed=0):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _forward(name, in_channels, **kwargs):
  """Build-and-apply in eval mode, as one function of the images that jax can trace."""
  def forward(x):
    model = _create(name, in_channels=in_channels, **kwargs)
    model.eval()
    return model(x)
  return forward


def _abstract(name, num_classes=NUM_CLASSES):
  """The model with ShapeDtypeStructs for arrays: its structure without the cost of building it."""
  return nnx.eval_shape(lambda: models.create(name, num_classes=num_classes, rngs=nnx.Rngs(0)))


def test_available_lists_builtin_models_sorted():
  assert set(BUILTIN) <= set(models.available())
  assert models.available() == sorted(models.available())


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("image_shape", [(8, 8, 1), (32, 32, 3)])
def test_output_shape_and_dtype(name, image_shape):
  # Shapes only: building and running the bigger ResNets eagerly is too slow for a unit test.
  logits = jax.eval_shape(_forward(name, in_channels=image_shape[-1]),
                          jax.ShapeDtypeStruct((2, *image_shape), jnp.float32))
  chex.assert_shape(logits, (2, NUM_CLASSES))
  assert logits.dtype == jnp.float32


@pytest.mark.parametrize("name,num_classes,expected", [
    # kuangliu/pytorch-cifar ResNet18() and ResNet34(); BatchNorm running stats excluded.
    ("resnet18_cifar", 10, 11_173_962),
    ("resnet34_cifar", 10, 21_282_122),
    ("resnet18_cifar", 100, 11_220_132),
    # 3x3 convs 1->32->64->128 without bias, BN scale+bias per channel, 128x10 head with bias.
    ("small_cnn", 10, 288 + 18_432 + 73_728 + 2 * (32 + 64 + 128) + 128 * 10 + 10),
])
def test_param_count(name, num_classes, expected):
  params = nnx.state(_abstract(name, num_classes), nnx.Param)
  assert sum(p.size for p in jax.tree.leaves(params)) == expected


@pytest.mark.parametrize("name", BUILTIN)
def test_every_param_has_logical_axes(name):
  # Spelt out rather than imported from logical_axes: jaxlab.sharding's rules depend on these names.
  params = nnx.to_flat_state(nnx.state(_abstract(name), nnx.Param))
  assert params
  for path, param in params:
    axes = param.get_metadata().get("out_sharding")
    where = "/".join(map(str, path))
    assert isinstance(axes, tuple) and len(axes) == param.ndim, (where, axes)
    is_head = path[0] == "head"
    if param.ndim == 4:
      assert axes == (None, None, "conv_in", "conv_out"), (where, axes)
    elif param.ndim == 2:
      # The only dense layer in these backbones is the classifier.
      assert is_head and axes == ("embed", "classes"), (where, axes)
    else:
      # Biases and norm scales: the channels they act on.
      assert axes == (("classes",) if is_head else ("conv_out",)), (where, axes)


@pytest.mark.parametrize("name", BUILTIN)
def test_batch_norm_uses_pytorch_constants(name):
  norms = [node for _, node in nnx.iter_graph(_abstract(name)) if isinstance(node, nnx.BatchNorm)]
  assert norms
  for norm in norms:
    assert (norm.momentum, norm.epsilon) == (0.9, 1e-5)


def test_running_mean_moves_a_tenth_of_the_way_per_train_step():
  model = _create("small_cnn", in_channels=1)
  x = _images((16, 8, 8, 1)) + 2.0
  batch_mean = jnp.mean(model.conv1(x), axis=(0, 1, 2))
  model(x)
  # PyTorch momentum 0.1: running = 0.9 * running + 0.1 * batch, from an initial mean of 0.
  chex.assert_trees_all_close(model.bn1.mean[...], 0.1 * batch_mean, rtol=1e-5, atol=1e-6)


def test_resnet_downsampling_pads_like_pytorch():
  # PyTorch pads a stride-2 3x3 conv by 1 on every side; "SAME" would pad (0, 1) and shift the
  # sampling grid by a pixel, so PyTorch weights would compute something else.
  conv = nnx.clone(_built("resnet18_cifar")).stages[1].layers[0].conv1
  assert conv.strides == 2 and conv.kernel.shape == (3, 3, 64, 128)
  conv.kernel[...] = jnp.zeros_like(conv.kernel[...]).at[1, 1, 0, 0].set(1.0)  # centre tap only
  impulse = jnp.zeros((1, 4, 4, 64)).at[0, 0, 0, 0].set(1.0)
  # Output (0, 0) is centred on input (0, 0), which holds the impulse.
  assert conv(impulse)[0, 0, 0, 0] == 1.0


def _batch_stats(model):
  return jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))


@pytest.mark.parametrize("name", BUILTIN)
def test_batch_norm_updates_running_stats_only_in_train_mode(name):
  model = _fresh(name)
  x = _images((4, 8, 8, 1)) * 3.0 + 1.0  # far from the initial mean 0 / var 1
  before = _batch_stats(model)

  model.eval()
  model(x)
  chex.assert_trees_all_equal(_batch_stats(model), before)

  model.train()
  model(x)
  after = _batch_stats(model)
  for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    assert not np.allclose(old, new)


@pytest.mark.parametrize("name", BUILTIN)
def test_eval_mode_is_deterministic_and_per_example(name):
  model = _fresh(name)
  x = _images((4, 8, 8, 1))
  model.train()
  train_logits = model(x)
  model.eval()
  logits = model(x)
  chex.assert_trees_all_equal(model(x), logits)
  # Running statistics, not batch statistics: an example's logits do not depend on its batch.
  chex.assert_trees_all_close(model(x[:1]), logits[:1], rtol=1e-5, atol=1e-5)
  assert not np.allclose(train_logits, logits)


def test_dropout_draws_from_the_dropout_stream_in_train_mode_only():
  def build(dropout_seed):
    return models.create("small_cnn", num_classes=NUM_CLASSES, dropout_rate=0.5,
                         rngs=nnx.Rngs(params=_key(0), dropout=_key(dropout_seed)))

  x = _images((4, 8, 8, 1))
  model, other = build(1), build(2)
  chex.assert_trees_all_equal(nnx.state(model, nnx.Param), nnx.state(other, nnx.Param))
  first, second = model(x), model(x)
  assert not np.allclose(first, second)  # fresh mask per call
  assert not np.allclose(build(1)(x), other(x))  # the mask comes from the dropout seed
  chex.assert_trees_all_equal(build(1)(x), first)  # ... and only from it

  model.eval()
  chex.assert_trees_all_equal(model(x), model(x))


def test_no_dropout_by_default():
  model = _create("small_cnn", in_channels=1)
  x = _images((4, 8, 8, 1))
  chex.assert_trees_all_equal(model(x), model(x))  # train mode, rate 0: nothing random


def _conv_input_dtypes(jaxpr):
  """The dtypes of every convolution's operands, in sub-jaxprs too."""
  dtypes = set()
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      dtypes.update(v.aval.dtype for v in eqn.invars)
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      dtypes |= _conv_input_dtypes(sub)
  return dtypes


@pytest.mark.parametrize("name", BUILTIN)
def test_bfloat16_compute_keeps_float32_params_and_logits(name):
  x = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
  forward = _forward(name, in_channels=1, dtype=jnp.bfloat16)
  assert jax.eval_shape(forward, x).dtype == jnp.float32
  # Traced, not run: every convolution computes in bfloat16.
  assert _conv_input_dtypes(jax.make_jaxpr(forward)(x).jaxpr) == {jnp.dtype(jnp.bfloat16)}
  abstract = nnx.eval_shape(lambda: models.create(name, num_classes=NUM_CLASSES,
                                                  rngs=nnx.Rngs(0), dtype=jnp.bfloat16))
  assert {p.dtype for p in jax.tree.leaves(nnx.state(abstract, nnx.Param))} == {jnp.dtype(jnp.float32)}


def test_bfloat16_params():
  abstract = nnx.eval_shape(lambda: models.create("small_cnn", num_classes=NUM_CLASSES,
                                                  rngs=nnx.Rngs(0), param_dtype=jnp.bfloat16))
  assert {p.dtype for p in jax.tree.leaves(nnx.state(abstract, nnx.Param))} == {jnp.dtype(jnp.bfloat16)}


def test_bfloat16_small_cnn_matches_float32_up_to_rounding():
  x = _images((4, 8, 8, 1))
  fp32 = _fresh("small_cnn")
  bf16 = _create("small_cnn", in_channels=1, dtype=jnp.bfloat16)
  chex.assert_trees_all_equal(nnx.state(bf16, nnx.Param), nnx.state(fp32, nnx.Param))
  fp32.eval()
  bf16.eval()
  logits, reference = bf16(x), fp32(x)
  assert logits.dtype == jnp.float32
  # Same weights (same rngs), so close -- but not bit-equal, or nothing ran in bfloat16.
  assert not np.array_equal(logits, reference)
  chex.assert_trees_all_close(logits, reference, atol=0.1, rtol=0.05)


def test_unknown_model_name_is_a_one_line_error():
  with pytest.raises(ValueError) as err:
    models.create("resnet_50", num_classes=10, rngs=nnx.Rngs(0))
  assert str(err.value) == f"unknown model 'resnet_50'; valid: {', '.join(models.available())}"
  assert "\n" not in str(err.value) and "resnet18_cifar" in str(err.value)


@pytest.mark.parametrize("name,accepted", [
    ("small_cnn", "num_classes, rngs, dtype, param_dtype, in_channels, dropout_rate"),
    ("resnet18_cifar", "num_classes, rngs, dtype, param_dtype, in_channels"),
])
def test_unknown_keyword_is_a_one_line_error(name, accepted):
  with pytest.raises(ValueError) as err:
    models.create(name, num_classes=10, rngs=nnx.Rngs(0), dropout=0.1)
  assert str(err.value) == f"unknown keyword(s) dropout for model '{name}'; valid: {accepted}"


def test_register_adds_a_model(monkeypatch):
  monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

  @models.register("tiny_linear")
  def tiny_linear(*, num_classes, rngs, dtype, param_dtype, features=4):
    return nnx.Linear(features, num_classes, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  assert "tiny_linear" in models.available()
  model = models.create("tiny_linear", num_classes=3, rngs=nnx.Rngs(0), features=5)
  chex.assert_shape(model.kernel, (5, 3))
  with pytest.raises(ValueError, match="already registered"):
    models.register("tiny_linear")(tiny_linear)


def _abstract_apply(model, *inputs):
  """The outputs of `model` (eval mode) on ShapeDtypeStruct inputs: traced, nothing computed."""
  model.eval()
  graphdef, state = nnx.split(model)
  return jax.eval_shape(lambda state, *xs: nnx.merge(graphdef, state)(*xs), state, *inputs)


def test_create_needs_only_a_name_like_timm():
  model = nnx.eval_shape(lambda: models.create("resnet50"))  # structure only: allocates nothing
  assert model.conv1.kernel.shape == (7, 7, 3, 64)  # in_chans 3
  logits = _abstract_apply(model, jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32))
  assert logits.shape == (2, 1000) and logits.dtype == jnp.float32


def test_create_without_rngs_seeds_with_zero(monkeypatch):
  monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

  @models.register("tiny_linear")  # a model that builds in milliseconds
  def tiny_linear(*, num_classes, rngs, dtype, param_dtype):
    return nnx.Linear(4, num_classes, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  kernel = models.create("tiny_linear").kernel[...]
  assert kernel.shape == (4, 1000)
  chex.assert_trees_all_equal(kernel, models.create("tiny_linear", rngs=nnx.Rngs(0)).kernel[...])
  assert not np.allclose(kernel, models.create("tiny_linear", rngs=nnx.Rngs(1)).kernel[...])


def test_in_chans_is_timms_name_for_in_channels():
  def first_kernel(**kwargs):
    model = nnx.eval_shape(lambda: models.create("small_cnn", num_classes=NUM_CLASSES, **kwargs))
    return model.conv1.kernel.shape
  assert first_kernel() == (3, 3, 1, 32)  # small_cnn's own default: one channel
  assert first_kernel(in_chans=3) == first_kernel(in_channels=3) == (3, 3, 3, 32)
  assert first_kernel(in_chans=3, in_channels=3) == (3, 3, 3, 32)
  models.check_kwargs("small_cnn", {"in_chans": 3})  # configs may spell it either way
  with pytest.raises(ValueError) as err:
    models.create("small_cnn", in_chans=3, in_channels=1)
  assert str(err.value) == "in_chans=3 and in_channels=1 disagree; pass one of them"
  # A model without input channels rejects it under the name it was given.
  with pytest.raises(ValueError, match=r"^unknown keyword\(s\) in_chans for model 'maskgit_"):
    models.check_kwargs("maskgit_transformer", {"in_chans": 3})


def test_import_jaxlab_exposes_subpackages_lazily():
  code = """
import sys
import jaxlab
subpackages = ("data", "models", "optim", "tasks")
assert not any(f"jaxlab.{n}" in sys.modules for n in subpackages), "imported eagerly"
assert set(subpackages) <= set(dir(jaxlab)) and set(jaxlab.__all__) == set(subpackages)
assert jaxlab.models.available() and jaxlab.optim.available() and jaxlab.tasks.available()
assert jaxlab.data.DatasetInfo
try:
  jaxlab.no_such_module
except AttributeError as e:
  assert "no attribute 'no_such_module'" in str(e)
else:
  raise AssertionError("no AttributeError")
"""
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr


# The every-model test: small settings and inputs for the models that are not image classifiers.
# Every other registered name is traced as a classifier (its CIFAR form where it has one) on
# 32x32 RGB images, so a new classifier is covered as it is registered, and a new model of another
# kind fails here until it gets an entry.
BATCH = 2


def _spec(*shape, dtype=jnp.float32):
  return jax.ShapeDtypeStruct(shape, dtype)


def _denoiser(size, channels):
  """(x, t, labels) of a class-conditional denoiser (unet, dit), which returns x's shape."""
  inputs = (_spec(BATCH, size, size, channels), _spec(BATCH), _spec(BATCH, dtype=jnp.int32))
  return inputs, (BATCH, size, size, channels)


_GENERATIVE = {
    # name: (create kwargs, inputs, output shape: the reconstruction of tokenizers)
    "unet": ({"in_channels": 1, "img_size": 8, "channels": 16, "channel_mult": (1, 2),
              "num_res_blocks": 1, "attention_resolutions": (4,), "num_heads": 2, "norm_groups": 4},
             *_denoiser(8, 1)),
    "dit": ({"in_channels": 1, "img_size": 8, "patch_size": 2, "hidden_size": 32, "depth": 2,
             "num_heads": 2}, *_denoiser(8, 1)),
    # Stage-1 tokenizers: images -> (reconstruction, Quantized).
    "vq_autoencoder": ({"channels": (16, 32), "num_res_blocks": 1, "latent_dim": 4,
                        "quantizer": {"name": "vq", "codebook_size": 16}},
                       (_spec(BATCH, 8, 8, 3),), (BATCH, 8, 8, 3)),
    "titok": ({"in_channels": 1, "image_size": 8, "patch_size": 2, "width": 16, "depth": 1,
               "num_heads": 2, "num_latent_tokens": 5, "latent_dim": 4,
               "quantizer": {"name": "fsq", "levels": (5, 5, 5, 5)}},
              (_spec(BATCH, 8, 8, 1),), (BATCH, 8, 8, 1)),
    # Stage 2: (codes, labels) -> logits over the codebook per position.
    "maskgit_transformer": ({"codebook_size": 16, "seq_len": 4, "width": 16, "depth": 1,
                             "num_heads": 2},
                            (_spec(BATCH, 4, dtype=jnp.int32), _spec(BATCH, dtype=jnp.int32)),
                            (BATCH, 4, 16)),
}
# A tokenizer's codes per image: 8x8 images halved once (two widths), or 5 latent tokens.
_CODES = {"vq_autoencoder": (BATCH, 4, 4), "titok": (BATCH, 5)}


def _small_case(name):
  """(create kwargs, abstract inputs, expected shape of the (first) output) for model `name`."""
  if name in _GENERATIVE:
    return _GENERATIVE[name]
  if name.startswith("dit_"):  # the named DiT sizes: only the resolution is small
    return {"img_size": 16}, *_denoiser(16, 4)
  accepted = registry._accepted_keywords(registry._REGISTRY[name])
  kwargs = {"in_chans": 3}
  if "cifar" in accepted:
    kwargs["cifar"] = True
  elif "img_size" in accepted:
    kwargs["img_size"] = 32
  return kwargs, (_spec(BATCH, 32, 32, 3),), (BATCH, NUM_CLASSES)


@pytest.mark.parametrize("name", models.available())
def test_every_model_builds_and_runs_abstractly(name):
  kwargs, inputs, expected = _small_case(name)

  def forward(*inputs):
    model = models.create(name, num_classes=NUM_CLASSES, **kwargs)
    model.eval()
    return model(*inputs)

  # Build and apply traced as one function: shapes only, and about half the time of building
  # with nnx.eval_shape, then splitting the model to apply it.
  out = jax.eval_shape(forward, *inputs)
  if isinstance(out, tuple):  # a tokenizer: (reconstruction, Quantized)
    out, quantized = out
    assert quantized.codes.shape == _CODES[name], quantized.codes.shape
  assert out.shape == expected and out.dtype == jnp.float32, (out.shape, out.dtype)
