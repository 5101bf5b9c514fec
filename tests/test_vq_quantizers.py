"""Quantizers: shapes, gradient estimators, EMA/k-means/restarts, FSQ against the reference, and
the codebook staying identical on 8 data-parallel devices."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxlab.metrics import codebook as codebook_metrics
from jaxlab.metrics import image_quality
from jaxlab.models.vq import quantizers
from jaxlab.models.vq.base import rotation_trick, straight_through


@pytest.fixture(autouse=True)
def _no_mesh_needed():
  with nnx.use_eager_sharding(False):  # parameters carry logical axes; no mesh in these tests
    yield


# Jitted calls (state updates carried by nnx.jit): op-by-op eager dispatch is much slower.
apply = nnx.jit(lambda q, x: q(x))


QUANTIZERS = {
    "vq": {"codebook_size": 16},
    "vq_cosine_projected": {"name": "vq", "codebook_size": 16, "cosine": True, "codebook_dim": 4,
                                "ema_decay": None, "gradient": "rotation"},
    "residual_vq": {"codebook_sizes": (4, 8, 16), "quantizer_dropout": 0.5},
    "fsq": {"levels": (8, 5, 5, 5)},
    "lfq": {"bits": 5},
    "simvq": {"codebook_size": 16},
}


@pytest.mark.parametrize("key", sorted(QUANTIZERS))
def test_shapes_and_codes_decode_to_values(key):
  kwargs = dict(QUANTIZERS[key])
  name = kwargs.pop("name", key)
  q = quantizers.create(name, dim=8, rngs=nnx.Rngs(0), **kwargs)
  x = jax.random.normal(jax.random.key(1), (2, 3, 5, 8))
  out = apply(q, x)  # train mode: codebook updates, quantizer dropout
  levels = (3,) if name == "residual_vq" else ()
  chex.assert_shape(out.values, x.shape)
  chex.assert_shape(out.codes, x.shape[:-1] + levels)
  assert out.codes.dtype == jnp.int32 and out.loss.shape == ()
  assert {"usage", "perplexity"} <= set(out.stats)
  q.eval()  # frozen: the values are exactly the codes' vectors
  out = apply(q, x)
  np.testing.assert_allclose(q.decode_codes(out.codes), out.values, atol=1e-5)
  assert int(out.codes.max()) < q.codebook_size


def test_unknown_quantizer_and_keyword_fail_in_one_line():
  with pytest.raises(ValueError, match=r"unknown quantizer 'pq'; valid: fsq, lfq, residual_vq, simvq, vq$"):
    quantizers.create("pq", dim=4, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"unknown keyword\(s\) codebook for quantizer 'vq'"):
    quantizers.create("vq", dim=4, codebook=8, codebook_size=8, rngs=nnx.Rngs(0))


def test_straight_through_passes_the_gradient_unchanged():
  x = jax.random.normal(jax.random.key(0), (6, 4))
  q = jax.random.normal(jax.random.key(1), (6, 4))
  g = jax.random.normal(jax.random.key(2), (6, 4))
  value, vjp = jax.vjp(lambda x: straight_through(x, q), x)
  np.testing.assert_allclose(value, q, atol=1e-6)
  np.testing.assert_allclose(vjp(g)[0], g, atol=1e-6)


def test_rotation_trick_rotates_and_scales_the_gradient():
  x = np.asarray(jax.random.normal(jax.random.key(0), (5, 4)))
  q = np.asarray(jax.random.normal(jax.random.key(1), (5, 4)))
  g = np.asarray(jax.random.normal(jax.random.key(2), (5, 4)))
  value, vjp = jax.vjp(lambda x: rotation_trick(x, jnp.asarray(q)), jnp.asarray(x))
  np.testing.assert_allclose(value, q, atol=1e-5)  # forward: exactly the code
  grad = np.asarray(vjp(jnp.asarray(g))[0])
  for i in range(5):  # Fifty et al. eq. 4: dL/dx = (|q|/|x|) R^T dL/dq, R the rotation x^ -> q^
    xh, qh = x[i] / np.linalg.norm(x[i]), q[i] / np.linalg.norm(q[i])
    w = (xh + qh) / np.linalg.norm(xh + qh)
    rotation = np.eye(4) - 2 * np.outer(w, w) + 2 * np.outer(qh, xh)
    np.testing.assert_allclose(rotation @ xh, qh, atol=1e-5)
    scale = np.linalg.norm(q[i]) / np.linalg.norm(x[i])
    np.testing.assert_allclose(grad[i], scale * rotation.T @ g[i], rtol=1e-4, atol=1e-5)
    # A rotation keeps the gradient's length; only the norm ratio rescales it.
    np.testing.assert_allclose(np.linalg.norm(grad[i]), scale * np.linalg.norm(g[i]), rtol=1e-4)


def test_vector_quantizer_gradients_reach_encoder_and_codebook():
  q = quantizers.create("vq", dim=4, codebook_size=8, ema_decay=None, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (10, 4))
  g = jax.random.normal(jax.random.key(2), (10, 4))

  def loss(q, x):
    out = q(x)
    return jnp.sum(out.values * g) + out.loss

  grads_q, grads_x = nnx.grad(loss, argnums=(0, 1))(q, x)
  out = q(x)
  codebook = np.asarray(q.codebook[...])
  chosen = codebook[np.asarray(out.codes)]
  # Straight-through g plus the commitment term's 0.25 * 2 (x - e) / N·D.
  np.testing.assert_allclose(grads_x, g + 0.25 * 2 * (x - chosen) / x.size, rtol=1e-4, atol=1e-6)
  # The codebook loss moves each chosen code toward its inputs: 2 (e - x) / N·D summed per code.
  expected = np.zeros_like(codebook)
  np.add.at(expected, np.asarray(out.codes), 2 * (chosen - np.asarray(x)) / x.size)
  np.testing.assert_allclose(grads_q["codebook"][...], expected, rtol=1e-4, atol=1e-6)


def test_ema_update_matches_the_formula():
  q = quantizers.create("vq", dim=3, codebook_size=4, ema_decay=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
  init = np.asarray(q.codebook[...])
  x = np.asarray(jax.random.normal(jax.random.key(1), (20, 3)))
  codes = np.asarray(apply(q, jnp.asarray(x)).codes)
  counts = np.bincount(codes, minlength=4).astype(np.float32)
  sums = np.zeros((4, 3), np.float32)
  np.add.at(sums, codes, x)
  size = 0.9 * 1.0 + 0.1 * counts  # counts start at one per code, sums at the codes
  embed_sum = 0.9 * init + 0.1 * sums
  total = size.sum()
  smoothed = (size + 1e-5) / (total + 4e-5) * total
  np.testing.assert_allclose(q.cluster_size[...], size, rtol=1e-6)
  np.testing.assert_allclose(q.codebook[...], embed_sum / smoothed[:, None], rtol=1e-5)


def _far_cluster(key, n=256, dim=8):
  """Data far from the initial codebook (around the origin): one code captures all of it."""
  return 3.0 + 0.5 * jax.random.normal(key, (n, dim))


@pytest.mark.parametrize("restart", [False, True])
def test_dead_code_restart_revives_codes(restart):
  q = quantizers.create("vq", dim=8, codebook_size=32, ema_decay=0.9, restart_dead=restart,
                        dead_threshold=0.8, rngs=nnx.Rngs(0))
  for step in range(6):
    out = apply(q, _far_cluster(jax.random.key(step)))
  q.eval()
  usage = float(apply(q, _far_cluster(jax.random.key(99))).stats["usage"])
  if restart:  # dead codes were moved onto data and are chosen now
    assert usage > 0.8, usage
    assert float(out.stats["dead_fraction"]) < 0.2
  else:  # collapse: the data sits around one or two codes
    assert usage < 0.15, usage
    assert float(out.stats["dead_fraction"]) > 0.8


def test_kmeans_init_finds_the_clusters():
  centers = np.asarray([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0], [0.0, -4.0]], np.float32)
  labels = np.arange(400) % 4
  x = centers[labels] + 0.1 * np.random.RandomState(0).standard_normal((400, 2)).astype(np.float32)
  q = quantizers.create("vq", dim=2, codebook_size=4, kmeans_init=True, kmeans_iters=10, rngs=nnx.Rngs(3))
  assert not bool(q.initialized[...])
  out = apply(q, jnp.asarray(x))
  assert bool(q.initialized[...])
  # Each cluster gets its own code, and each code sits on its cluster's centre.
  codes = np.asarray(out.codes)
  assert len(set(codes.tolist())) == 4
  for k in range(4):
    assert len(set(codes[labels == k].tolist())) == 1
  found = np.asarray(q.codebook[...])[codes[:4]]
  np.testing.assert_allclose(found, centers[labels[:4]], atol=0.1)


def _train_step(graphdef):
  def step(state, x):
    q = nnx.merge(graphdef, state)
    out = q(x)
    return nnx.state(q), out.codes
  return step


def test_codebook_updates_identical_on_8_data_parallel_devices():
  """k-means init, EMA and restarts on a batch sharded 8 ways give the single-device codebook."""
  q = quantizers.create("vq", dim=4, codebook_size=16, kmeans_init=True, restart_dead=True,
                        dead_threshold=2.0, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(q)
  batches = [jax.random.normal(jax.random.key(i), (64, 4)) + i for i in range(3)]

  single = jax.jit(_train_step(graphdef), device=None)
  one_state = state
  for x in batches:
    one_state, one_codes = single(one_state, x)

  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  sharded = jax.jit(_train_step(graphdef), in_shardings=(replicated, batch_sharding),
                    out_shardings=(replicated, batch_sharding))
  many_state = jax.device_put(state, replicated)
  for x in batches:
    many_state, many_codes = sharded(many_state, jax.device_put(x, batch_sharding))

  codebook = many_state["codebook"][...]
  assert codebook.sharding.is_fully_replicated
  shards = [np.asarray(s.data) for s in codebook.addressable_shards]
  assert len(shards) == 8 and all(np.array_equal(shards[0], s) for s in shards)
  np.testing.assert_allclose(shards[0], one_state["codebook"][...], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(many_state["cluster_size"][...], one_state["cluster_size"][...], rtol=1e-5)
  np.testing.assert_array_equal(many_codes, one_codes)


def test_residual_levels_and_quantizer_dropout():
  q = quantizers.create("residual_vq", dim=4, codebook_sizes=(4, 16, 64), quantizer_dropout=1.0,
                        rngs=nnx.Rngs(0))
  assert [level.codebook_size for level in q.levels] == [4, 16, 64]
  x = jax.random.normal(jax.random.key(1), (32, 4))
  active = []
  for _ in range(12):
    out = apply(q, x)
    n = int(out.stats["active_levels"])
    active.append(n)
    codes = np.asarray(out.codes)
    assert (codes[:, :n] >= 0).all() and (codes[:, n:] == -1).all()
  assert set(active) == {1, 2, 3}
  # Each further level reduces the error (coarse to fine).
  q.eval()
  out = apply(q, x)
  errors = [float(jnp.mean(jnp.square(x - q.decode_codes(out.codes.at[:, n:].set(-1))))) for n in (1, 2, 3)]
  assert errors[0] > errors[1] > errors[2]


# vector-quantize-pytorch 1.32.0 (torch 2.13.0, CPU): FSQ(levels=[8, 5, 5, 5]) applied to
# np.random.RandomState(0).standard_normal((2, 16, 4)) * 1.5 (float32); indices and 4 * output.
FSQ_REFERENCE_CODES = [
    [991, 567, 907, 743, 135, 192, 287, 719, 441, 279, 800, 810, 608, 682, 268, 9],
    [613, 577, 127, 449, 152, 399, 872, 957, 716, 807, 72, 999, 873, 943, 926, 857]]
FSQ_REFERENCE_VALUES_X4 = [
    [3, 2, 4, 4, 3, -4, 4, 0, -1, 2, 0, 4, 3, 0, 2, 2, 3, -2, 2, -4, -4, 4, 4, -4, 3, -4, 0, -2, 3,
     4, 0, 2, -3, -4, -2, 0, 3, 4, -2, -2, -4, -4, -4, 4, -2, -2, -4, 4, -4, -2, -4, 2, -2, -4, 0,
     2, 0, 2, -2, -2, -3, -2, -4, -4],
    [1, -2, -4, 2, -3, 0, 4, 0, 3, -4, 2, -4, -3, -2, -2, 0, -4, 4, 2, -4, 3, 4, 4, -2, -4, 4, -2,
     4, 1, 4, 2, 4, 0, 4, 0, 2, 3, -4, -4, 4, -4, 4, -2, -4, 3, 4, 4, 4, -3, 4, -2, 4, 3, 0, 2, 4,
     2, -4, 2, 4, -3, 0, -2, 4]]


def test_fsq_matches_vector_quantize_pytorch():
  z = (np.random.RandomState(0).standard_normal((2, 16, 4)) * 1.5).astype(np.float32)
  fsq = quantizers.create("fsq", dim=4, levels=(8, 5, 5, 5), rngs=nnx.Rngs(0))
  out = fsq(jnp.asarray(z))
  np.testing.assert_array_equal(out.codes, np.asarray(FSQ_REFERENCE_CODES))
  expected = np.asarray(FSQ_REFERENCE_VALUES_X4, np.float32).reshape(2, 16, 4) / 4
  np.testing.assert_array_equal(out.values, expected)
  assert fsq.codebook_size == 1000


def test_lfq_codes_are_the_sign_bits_and_entropy_loss_prefers_spread_codes():
  lfq = quantizers.create("lfq", dim=3, bits=3, rngs=nnx.Rngs(0))
  x = jnp.asarray([[0.5, -0.2, 0.1], [-1.0, -1.0, 2.0]])
  out = lfq(x)
  np.testing.assert_array_equal(out.codes, [0b101, 0b001])
  np.testing.assert_array_equal(out.values, [[1, -1, 1], [-1, -1, 1]])
  spread = lfq(jnp.asarray(np.random.RandomState(0).standard_normal((256, 3)), jnp.float32))
  collapsed = lfq(jnp.full((256, 3), 0.7))
  assert float(spread.stats["codebook_entropy"]) > np.log(8) - 0.05
  assert float(spread.loss) < float(collapsed.loss)


def test_simvq_trains_only_its_map():
  q = quantizers.create("simvq", dim=4, codebook_size=8, rngs=nnx.Rngs(0))
  assert set(nnx.to_pure_dict(nnx.state(q, nnx.Param))) == {"codebook_transform"}
  x = jax.random.normal(jax.random.key(1), (16, 4))
  grads = nnx.grad(lambda q: q(x).loss)(q)
  assert float(jnp.abs(grads["codebook_transform"][...]).sum()) > 0


def test_codebook_metrics():
  counts = codebook_metrics.code_counts(jnp.asarray([0, 0, 1, 3, -1]), 4)
  np.testing.assert_array_equal(counts, [2, 1, 0, 1])
  stats = codebook_metrics.usage(counts)
  p = np.asarray([0.5, 0.25, 0.25])
  np.testing.assert_allclose(stats["usage"], 0.75)
  np.testing.assert_allclose(stats["entropy"], -(p * np.log(p)).sum(), rtol=1e-6)
  np.testing.assert_allclose(stats["perplexity"], np.exp(-(p * np.log(p)).sum()), rtol=1e-6)
  uniform = codebook_metrics.usage(jnp.ones(16))
  np.testing.assert_allclose(uniform["perplexity"], 16.0, rtol=1e-5)
  np.testing.assert_allclose(codebook_metrics.dead_fraction(jnp.asarray([0.1, 2.0, 0.4, 1.0]), 0.5), 0.5)


def test_psnr_and_ssim_match_tensorflow():
  rng = np.random.RandomState(0)
  a = rng.rand(3, 16, 16, 2).astype(np.float32)
  b = np.clip(a + 0.1 * rng.randn(*a.shape), 0, 1).astype(np.float32)
  np.testing.assert_allclose(image_quality.psnr(a, b), tf.image.psnr(a, b, 1.0).numpy(), rtol=1e-5)
  np.testing.assert_allclose(image_quality.ssim(a, b), tf.image.ssim(a, b, 1.0).numpy(), rtol=1e-4)
  small_a, small_b = a[:, :8, :8, :1], b[:, :8, :8, :1]  # the window shrinks to the image
  np.testing.assert_allclose(image_quality.ssim(small_a, small_b),
                             tf.image.ssim(small_a, small_b, 1.0, filter_size=8).numpy(), rtol=1e-4)
