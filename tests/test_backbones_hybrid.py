"""MogaNet-S, UniRepLKNet-T and TransNeXt-Tiny (built from the authors' code; timm has none of them).

Parameter counts are checked against the authors' models, counted layer by layer from their
PyTorch code (see each module's docstring). The full-size models are only traced (`nnx.eval_shape`,
`jax.eval_shape`); real jitted forwards, train steps and mode switches run on reduced-depth,
reduced-width builds of the same classes, which exercise every layer type at CPU-test cost.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxlab import models
from jaxlab.models.backbones import moganet, transnext, unireplknet
from jaxlab.state import ModelGraph

# name -> parameter count with 1000 and with 100 classes, counted from the authors' constructors
# (MogaNet(arch='small') in Westlake-AI/MogaNet models/moganet.py; unireplknet_t() with deploy=False
# in AILab-CVC/UniRepLKNet unireplknet.py; transnext_tiny() in DaiShiResearch/TransNeXt
# classification/transnext_native.py). Papers: 25.3M, 31M, 28.2M.
REFERENCE_COUNTS = {
    "moganet_small": (25_335_675, 24_873_975),
    "unireplknet_tiny": (31_693_420, 31_116_520),
    "transnext_tiny": (28_258_960, 27_739_660),
}
NAMES = tuple(REFERENCE_COUNTS)


def _param_count(model):
  return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _trace(name, num_classes, size, **kwargs):
  """Logits and parameters of `name` built and applied (eval mode) abstractly: shapes only."""
  def forward(x):
    model = models.create(name, num_classes=num_classes, rngs=nnx.Rngs(0), **kwargs)
    model.eval()
    return model(x), nnx.state(model, nnx.Param)
  return jax.eval_shape(forward, jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32))


@pytest.mark.parametrize("name", NAMES)
def test_param_count_and_output_at_224(name):
  logits, params = _trace(name, 1000, 224)
  chex.assert_shape(logits, (2, 1000))
  assert sum(p.size for p in jax.tree.leaves(params)) == REFERENCE_COUNTS[name][0]
  for path, param in nnx.to_flat_state(params):
    axes = param.get_metadata().get("out_sharding")
    assert isinstance(axes, tuple) and len(axes) == param.ndim, (name, path, axes)


@pytest.mark.parametrize("name", NAMES)
def test_cifar_form_in_bfloat16(name):
  logits, params = _trace(name, 100, 32, cifar=True, dtype=jnp.bfloat16)
  chex.assert_shape(logits, (2, 100))
  assert logits.dtype == jnp.float32
  assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  # The CIFAR form keeps the parameters (TransNeXt: but for its 3x3 instead of 7x7 stem kernel).
  stem_difference = (7 * 7 - 3 * 3) * 3 * 72 if name == "transnext_tiny" else 0
  assert sum(p.size for p in jax.tree.leaves(params)) == REFERENCE_COUNTS[name][1] - stem_difference


# Reduced builds of the same classes: every layer type at a fraction of the compile time. Their
# values are drawn on the host (numpy) into the abstract model, so no initialiser is compiled.
def _host_values(abstract, seed=0):
  graph, state = nnx.split(abstract)
  rng = np.random.default_rng(seed)
  flat = []
  for path, var in nnx.to_flat_state(state):
    value = var.get_value()
    shape, dtype = value.shape, value.dtype
    if issubclass(var.type, nnx.RngKey):
      value = jax.random.key(seed + len(flat))
    elif issubclass(var.type, nnx.RngCount):
      value = jnp.zeros(shape, dtype)
    elif path[-1] == "var":  # BatchNorm running variance
      value = rng.uniform(0.5, 1.5, shape)
    elif path[-1] in ("mean", "bias") or len(shape) < 2 and path[-1] != "scale":
      value = 0.1 * rng.normal(size=shape)
    elif path[-1] == "scale":  # norm scales
      value = 1.0 + 0.1 * rng.normal(size=shape)
    else:  # kernels and per-head tables: unit-variance outputs
      value = rng.normal(size=shape) / np.sqrt(max(1, np.prod(shape[:-1])))
    flat.append((path, var.replace(jnp.asarray(value, dtype))))
  return nnx.merge(graph, nnx.from_flat_state(flat))


def _small(name, drop_path_rate=0.1, dtype=jnp.float32):
  def build():
    kw = {"num_classes": 5, "in_channels": 3, "drop_path_rate": drop_path_rate, "dtype": dtype,
              "param_dtype": jnp.float32, "rngs": nnx.Rngs(0)}
    with nnx.use_eager_sharding(False):  # as models.create builds them: annotated, not yet placed
      if name == "moganet_small":
        return moganet.MogaNet(dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), ffn_ratios=(2,) * 4,
                               cifar=True, **kw)
      if name == "unireplknet_tiny":
        return unireplknet.UniRepLKNet(dims=(8, 16, 32, 64), depths=(2, 1, 1, 1),
                                       kernel_sizes=((3, 13), (13,), (13,), (3,)), cifar=True,
                                       **kw)
      return transnext.TransNeXt(dims=(8, 16, 32, 64), num_heads=(1, 2, 4, 8),
                                 mlp_ratios=(2,) * 4, depths=(1, 1, 1, 1),
                                 sr_ratios=(8, 4, 2, 1), patch_size=2, img_size=32, **kw)
  return _host_values(nnx.eval_shape(build))


def _images(n=4, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, 32, 32, 3), jnp.float32)


@nnx.jit
def _eval_and_train(model, x):
  model.eval()
  evaluated = model(x)
  model.train()
  return evaluated, model(x)


@pytest.mark.parametrize("name", NAMES)
def test_train_and_eval_modes(name):
  model = _small(name)
  before = nnx.clone(model)
  eval_a, train = _eval_and_train(model, _images())
  eval_b, _ = _eval_and_train(nnx.clone(before), _images())  # same graph: no recompilation
  chex.assert_shape(eval_a, (4, 5))
  assert np.isfinite(eval_a).all() and np.isfinite(train).all()
  np.testing.assert_array_equal(eval_a, eval_b)  # eval is deterministic
  # Train mode differs: batch statistics (MogaNet, UniRepLKNet) and drop path (all three).
  assert not np.allclose(train, eval_a, atol=1e-4)
  if name != "transnext_tiny":  # BatchNorm running statistics moved towards the batch's
    moved = [not np.allclose(a[...], b[...]) for (path, a), (_, b) in zip(
        nnx.to_flat_state(nnx.state(model, nnx.BatchStat)),
        nnx.to_flat_state(nnx.state(before, nnx.BatchStat))) if path[-1] == "mean"]
    assert moved and all(moved)


def test_one_train_step_lowers_the_loss():
  # As the trainer runs it: pure-dict parameters and batch statistics, the module merged in train
  # mode inside the differentiated function, drop path drawing from a reseeded stream.
  graph = ModelGraph.of(_small("moganet_small", drop_path_rate=0.1))
  params, model_state = ModelGraph.state_of(_small("moganet_small", drop_path_rate=0.1))
  x, labels = _images(8, seed=1), jnp.arange(8) % 5
  tx = optax.sgd(0.01)

  def loss_fn(params, model_state, rng):
    model = graph.merge(params, model_state, train=True, rng=rng)
    logits = model(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, ModelGraph.state_of(model)[1]

  @jax.jit
  def step(params, model_state):
    (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, model_state, jax.random.PRNGKey(0))
    updates, _ = tx.update(grads, tx.init(params), params)
    return loss, grads, new_state, optax.apply_updates(params, updates)

  loss, grads, new_state, new_params = step(params, model_state)
  new_loss = step(new_params, model_state)[0]  # same batch, same drop-path masks; no recompile
  # Every parameter gets a gradient: the gating, decomposition scales and layer scales too.
  for path, grad in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert np.abs(np.asarray(grad)).max() > 0, jax.tree_util.keystr(path)
  assert not np.allclose(new_state["norm4"]["mean"], model_state["norm4"]["mean"])
  assert float(new_loss) < float(loss)


def test_aggregated_attention_gradients_reach_every_parameter():
  def build():
    with nnx.use_eager_sharding(False):
      return transnext.AggregatedAttention(8, 2, resolution=8, sr_ratio=4, dtype=jnp.float32,
                                           param_dtype=jnp.float32, rngs=nnx.Rngs(0))
  attn = _host_values(nnx.eval_shape(build))
  graph, params = nnx.split(attn, nnx.Param)
  x = jax.random.normal(jax.random.key(2), (2, 64, 8))

  @jax.jit
  def grads(params):
    return jax.grad(lambda p: jnp.sum(jnp.sin(nnx.merge(graph, p)(x, 8, 8))))(params)

  for path, grad in nnx.to_flat_state(grads(params)):
    assert np.abs(np.asarray(grad[...])).max() > 0, path


def test_dilated_reparam_block_equals_its_merged_large_kernel():
  # The authors' structural re-parameterisation: in eval mode the large kernel, the dilated branches
  # and their BatchNorms are one 13x13 depthwise conv with bias. This pins the branches' kernel
  # sizes, dilations and padding.
  channels = 4
  with nnx.use_eager_sharding(False):
    block = _host_values(nnx.eval_shape(lambda: unireplknet.DilatedReparamBlock(
        channels, 13, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(0))))
  rng = np.random.default_rng(0)
  for _, bn in nnx.iter_graph(block):
    if isinstance(bn, nnx.BatchNorm):
      bn.mean[...] = jnp.asarray(rng.normal(size=channels), jnp.float32)
      bn.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, size=channels), jnp.float32)
      bn.scale[...] = jnp.asarray(rng.normal(size=channels), jnp.float32)
      bn.bias[...] = jnp.asarray(rng.normal(size=channels), jnp.float32)
  block.eval()
  x = jnp.asarray(rng.normal(size=(2, 15, 15, channels)), jnp.float32)

  def fused(conv, bn):
    std = np.sqrt(np.asarray(bn.var[...]) + bn.epsilon)
    factor = np.asarray(bn.scale[...]) / std
    return np.asarray(conv.kernel[...]) * factor, np.asarray(bn.bias[...]) - np.asarray(bn.mean[...]) * factor

  kernel, bias = fused(block.lk_origin, block.origin_bn)
  for k, r in block.branches:
    small, b = fused(getattr(block, f"dil_conv_k{k}_{r}"), getattr(block, f"dil_bn_k{k}_{r}"))
    size = r * (k - 1) + 1
    dilated = np.zeros((size, size, 1, channels), np.float32)
    dilated[::r, ::r] = small
    start = (13 - size) // 2
    kernel[start:start + size, start:start + size] += dilated
    bias = bias + b
  merged = jax.lax.conv_general_dilated(
      x, jnp.asarray(kernel), (1, 1), ((6, 6), (6, 6)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels) + bias
  chex.assert_trees_all_close(block(x), merged, atol=1e-4, rtol=1e-4)


def test_transnext_window_mask_and_position_table():
  valid, count = transnext.local_window_mask(4, 5)
  assert valid.shape == (20, 9)
  # Corners see 4 of their 3x3 neighbours, edges 6, the interior 9; the centre is always valid.
  np.testing.assert_array_equal(count.reshape(4, 5)[[0, 0, 3, 3], [0, 4, 0, 4]], 4)
  assert count.reshape(4, 5)[1, 2] == 9 and count.reshape(4, 5)[0, 2] == 6
  assert valid[:, 4].all()
  index, table = transnext.relative_position_cpb(4, 2, 4)
  assert index.shape == (16 * 4,) and index.max() == len(table) - 1
  # Keys at the average-pooled positions 0.5 and 2.5; offsets scaled by 8/(4-1), log-spaced.
  offsets = np.unique(np.arange(4)[:, None] - np.array([0.5, 2.5])[None]) * 8 / 3
  expected = np.sign(offsets) * np.log2(np.abs(offsets) + 1) / 3
  np.testing.assert_allclose(np.unique(table[:, 0]), np.sort(expected), rtol=1e-5)


def test_transnext_rejects_an_input_or_img_size_it_was_not_built_for():
  with pytest.raises(ValueError, match="img_size 40"):
    models.create("transnext_tiny", num_classes=10, rngs=nnx.Rngs(0), img_size=40)
  model = nnx.eval_shape(lambda: _small("transnext_tiny"))
  with pytest.raises(ValueError, match="expects NHWC input of shape"):
    jax.eval_shape(lambda x: model(x), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
