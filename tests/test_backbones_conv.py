"""Convnet backbones: AlexNet, VGG-13, ResNets, DenseNet-121, MobileNetV2, EfficientNet-B0, RepVGG-A1,
ConvNeXt (V1/V2). Parameter counts, forward shapes, CIFAR forms, train step, BN modes, sharding.

Reference parameter counts come from the fixtures that tests/timm_reference/make_fixtures.py wrote
with timm 1.0.31 / torchvision 0.29 (torch not needed here). Structures are built with
nnx.eval_shape and filled with numpy values (tests/backbone_harness.py): building them eagerly
costs a compile per parameter shape. Weight import is tested in test_timm_import.py.
"""

import json
import pathlib

import backbone_harness as harness
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxlab import sharding
from jaxlab.models import layers
from jaxlab.state import ModelGraph

FIXTURES = pathlib.Path(__file__).parent / "timm_reference" / "fixtures"
NAMES = ("alexnet", "vgg13", "resnet18", "resnet34", "resnet50", "resnet101", "densenet121",
         "mobilenetv2_100", "efficientnet_b0", "repvgg_a1", "convnext_tiny", "convnextv2_tiny")
NUM_CLASSES = 7  # not 10 or 1000, so a hard-coded head size would show


def _timm_param_count(name):
  return json.loads((FIXTURES / f"{name}.json").read_text())["param_count"]


def _images(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.mark.parametrize("name", NAMES)
def test_param_count_equals_timm(name):
  assert harness.param_count(harness.abstract(name, num_classes=1000)) == _timm_param_count(name)


@pytest.mark.parametrize("name,num_classes,expected", [
    # kuangliu/pytorch-cifar ResNet18(): 3x3 stem, no max-pool, same blocks as timm's resnet18.
    ("resnet18", 10, 11_173_962),
    # kuangliu/pytorch-cifar VGG('VGG13'): timm vgg13_bn's features (9,410,880) + Linear(512, 10).
    ("vgg13", 10, 9_410_880 + 512 * 10 + 10),
    # Only the stem conv changes: 3x3x3x96 instead of 4x4x3x96 weights (timm convnext_tiny).
    ("convnext_tiny", 1000, 28_589_128 - (16 - 9) * 3 * 96),
    # Same parameters, other strides.
    ("mobilenetv2_100", 1000, 3_504_872),
    # RepVGG: the first stage's first block now keeps its shape, so it gains an identity BN.
    ("repvgg_a1", 1000, 14_092_264 + 2 * 64),
    # 3x3 instead of 7x7 stem conv with 64 outputs.
    ("densenet121", 1000, 7_978_856 - (49 - 9) * 3 * 64),
])
def test_cifar_form_param_count(name, num_classes, expected):
  assert harness.param_count(harness.abstract(name, num_classes, cifar=True)) == expected


@pytest.mark.parametrize("name", NAMES)
def test_imagenet_form_output_shape(name):
  # Shapes only, at 64 pixels (VGG's pre-logits resample its 2x2 features to 7x7, as timm's).
  # (The 1000-class structure of the count test; the CIFAR forms run with NUM_CLASSES.)
  logits = harness.output_shape(harness.abstract(name, 1000), (2, 64, 64, 3))
  assert logits.shape == (2, 1000) and logits.dtype == jnp.float32


# resnet34/101 are resnet18/50 with more blocks of the same kinds: their CIFAR forms are only
# shape-checked, to save the compile time.
@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("resnet34", "resnet101")])
def test_cifar_form_jitted_forward(name):
  model = harness.built(name, NUM_CLASSES, cifar=True)
  model.eval()
  logits = harness.jit_apply(model, _images((2, 32, 32, 3)))
  chex.assert_shape(logits, (2, NUM_CLASSES))
  chex.assert_tree_all_finite(logits)
  assert logits.dtype == jnp.float32
  assert not np.allclose(logits[0], logits[1])  # the input reaches the logits


@pytest.mark.parametrize("name", ["resnet34", "resnet101"])
def test_cifar_form_output_shape(name):
  logits = harness.output_shape(harness.abstract(name, NUM_CLASSES, cifar=True), (2, 32, 32, 3))
  assert logits.shape == (2, NUM_CLASSES) and logits.dtype == jnp.float32


def test_cifar_stems_keep_resolution():
  # A CIFAR stem does not downsample: stride-1 3x3 conv, and no max-pool after it.
  for name, stem in [("resnet50", lambda m: m.conv1), ("densenet121", lambda m: m.features.conv0),
                     ("efficientnet_b0", lambda m: m.conv_stem),
                     ("convnext_tiny", lambda m: m.stem.layers[0]),
                     ("repvgg_a1", lambda m: m.stem.conv_kxk.conv)]:
    imagenet = stem(harness.abstract(name, 1000))
    cifar = stem(harness.abstract(name, NUM_CLASSES, cifar=True))
    assert cifar.kernel_size == (3, 3) and cifar.strides == 1, name
    assert imagenet.strides in (2, 4, (2, 2), (4, 4)), name


def _resnet_features(model, x):
  x = nnx.relu(model.bn1(model.conv1(x)))
  for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
    for block in stage:
      x = block(x)
  return x


def _convnext_features(model, x):
  x = model.stem(x)
  for stage in model.stages:
    x = stage(x)
  return x


@pytest.mark.parametrize("name,features", [("resnet18", _resnet_features),
                                           ("convnextv2_tiny", _convnext_features)])
def test_cifar_form_ends_in_4x4_maps(name, features):
  # Total stride 8 in the CIFAR forms, as for the CIFAR ResNets: 32x32 inputs end in 4x4 maps.
  model = harness.abstract(name, NUM_CLASSES, cifar=True)
  model.eval()
  graphdef, state = nnx.split(model)
  shape = jax.eval_shape(lambda s, x: features(nnx.merge(graphdef, s), x), state,
                         jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  assert shape.shape[1:3] == (4, 4)


@pytest.mark.parametrize("name,blocks,last_rate", [
    # timm: linspace(0, rate, blocks) for ResNet, RepVGG (blocks with an identity), ConvNeXt;
    # rate * index / blocks for EfficientNet (timm's _efficientnet_builder). Counted: blocks
    # with a nonzero rate (the first block's is 0).
    ("resnet50", 16 - 1, 0.2),
    ("convnext_tiny", 18 - 1, 0.2),
    ("repvgg_a1", 17, 0.2 * 19 / 20),  # 21 blocks; the 4 stride-2 ones have no identity branch
    ("efficientnet_b0", 9, 0.2 * 14 / 16),  # 16 blocks; only the 9 shape-keeping ones add
])
def test_drop_path_rates_follow_timm(name, blocks, last_rate):
  model = harness.abstract(name, drop_path_rate=0.2)
  rates = [node.rate for _, node in nnx.iter_graph(model)
           if isinstance(node, layers.DropPath) and node.rate > 0]
  assert len(rates) == blocks
  assert rates == sorted(rates)
  np.testing.assert_allclose(rates[-1], last_rate, rtol=1e-6)


def _batch_stats(model):
  return jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))


def test_batch_norm_running_stats_move_in_train_mode_only():
  model = harness.built("resnet18", NUM_CLASSES, cifar=True)
  x = _images((4, 32, 32, 3)) * 3.0 + 1.0  # far from the running mean 0 / var 1
  before = _batch_stats(model)
  model.eval()
  eval_logits = harness.jit_apply(model, x)
  chex.assert_trees_all_equal(_batch_stats(model), before)
  # Running statistics, not the batch's: an example's logits do not depend on its batch.
  chex.assert_trees_all_close(harness.jit_apply(model, x[:1]), eval_logits[:1], rtol=1e-4,
                              atol=1e-4)
  model.train()
  train_logits = harness.jit_apply(model, x)
  after = _batch_stats(model)
  assert not np.allclose(train_logits, eval_logits)
  for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    assert not np.allclose(old, new)
  # PyTorch momentum 0.1: running mean = 0.9 * 0 + 0.1 * batch mean of the stem conv's output.
  batch_mean = jnp.mean(model.conv1(x), axis=(0, 1, 2))
  chex.assert_trees_all_close(model.bn1.mean[...], 0.1 * batch_mean, rtol=1e-4, atol=1e-5)


def test_drop_path_is_random_in_train_mode_and_off_in_eval_mode():
  model = harness.built("resnet18", NUM_CLASSES, cifar=True, drop_path_rate=0.5)
  x = _images((4, 32, 32, 3))
  apply = nnx.jit(lambda m, x: m(x))
  first, second = apply(model, x), apply(model, x)  # the rng stream advances between calls
  assert not np.allclose(first, second)
  model.eval()
  chex.assert_trees_all_equal(apply(model, x), apply(model, x))


@pytest.mark.parametrize("name,kwargs", [("resnet18", {"drop_path_rate": 0.1}), ("vgg13", {})])
def test_train_step_reduces_the_loss(name, kwargs):
  # Residual (with drop path) and plain BN networks train. Depthwise/multi-branch models are left
  # out: compiling their backward pass takes minutes on a busy 2-core CPU (XLA's grouped-conv
  # gradients). The step is pure, as
  # jaxlab's trainer runs it (ModelGraph: params and batch statistics as plain dicts).
  model = harness.built(name, NUM_CLASSES, cifar=True, **kwargs)
  graph = ModelGraph.of(model)
  params, model_state = ModelGraph.state_of(model)
  x = _images((8, 32, 32, 3))
  labels = jnp.arange(8) % NUM_CLASSES
  tx = optax.adam(1e-3)

  def loss_fn(params, model_state, rng):
    model = graph.merge(params, model_state, train=True, rng=rng)
    loss = optax.softmax_cross_entropy_with_integer_labels(model(x), labels).mean()
    return loss, ModelGraph.state_of(model)[1]

  @jax.jit
  def step(params, model_state, opt_state, rng):
    (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, model_state, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), model_state, opt_state, loss, grads

  opt_state = tx.init(params)
  losses = []
  for _ in range(3):  # the same drop-path masks each step: the loss moves only by the updates
    params, model_state, opt_state, loss, grads = step(params, model_state, opt_state,
                                                       jax.random.PRNGKey(0))
    losses.append(float(loss))
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
  assert all(np.isfinite(norms)) and all(n > 0 for n in norms)


def test_bfloat16_compute_with_float32_params_and_logits():
  model = harness.built("resnet18", NUM_CLASSES, cifar=True, dtype=jnp.bfloat16)
  assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.float32)}
  model.eval()
  jaxpr = jax.make_jaxpr(lambda x: model(x))(jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
  conv_inputs = {v.aval.dtype for e in jaxpr.jaxpr.eqns if e.primitive.name == "conv_general_dilated"
                 for v in e.invars}
  assert conv_inputs == {jnp.dtype(jnp.bfloat16)}
  assert jaxpr.out_avals[0].dtype == jnp.float32


@pytest.mark.parametrize("name", NAMES)
def test_every_param_has_logical_axes(name):
  for path, param in nnx.to_flat_state(nnx.state(harness.abstract(name, 1000), nnx.Param)):
    axes = param.get_metadata().get("out_sharding")
    assert isinstance(axes, tuple) and len(axes) == param.ndim, (path, axes)
    if param.ndim == 4:
      assert axes == (None, None, "conv_in", "conv_out"), (path, axes)


def test_sharded_forward_on_eight_devices_matches_one_device():
  model = harness.built("resnet18", NUM_CLASSES, cifar=True)
  model.eval()
  x = _images((8, 32, 32, 3))
  expected = harness.jit_apply(model, x)

  mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": 2, "fsdp": 2, "tensor": 2}))
  config = ml_collections.ConfigDict({"rules": (("conv_out", "tensor"),), "fsdp_min_size": 2**14})
  graph = ModelGraph.of(model)
  params, model_state = ModelGraph.state_of(model)
  shardings = sharding.params_sharding(
      jax.eval_shape(lambda: params), sharding.logical_axes(nnx.state(model, nnx.Param)), mesh,
      config)
  placed = jax.device_put(params, shardings)
  kernel = placed["layer2"][0]["conv2"]["kernel"]
  assert kernel.sharding.spec == P(None, None, "fsdp", "tensor")  # tensor- and FSDP-sharded
  batch = jax.device_put(x, sharding.batch_sharding(mesh))
  forward = jax.jit(lambda p, s, images: graph.merge(p, s, train=False)(images))
  logits = forward(placed, model_state, batch)
  assert len(logits.sharding.device_set) == 8
  chex.assert_trees_all_close(logits, expected, rtol=1e-4, atol=1e-4)
