"""Weight averaging transforms (ema, sema, swa) against NumPy transcriptions of their definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab import optim

STEPS = 25


def _params():
  rng = np.random.default_rng(0)
  return {"w": rng.normal(size=(5, 3)).astype(np.float32), "b": rng.normal(size=(3,)).astype(np.float32)}


def _grads():
  rng = np.random.default_rng(1)
  return [{"w": rng.normal(size=(5, 3)).astype(np.float32), "b": rng.normal(size=(3,)).astype(np.float32)}
          for _ in range(STEPS)]


def _run(tx, params, grads):
  state = tx.init(params)
  update = jax.jit(tx.update)
  history = []
  for g in grads:
    updates, state = update(g, state, params)
    params = optax.apply_updates(params, updates)
    history.append((jax.tree.map(np.asarray, params), state))
  return history


def _sgd_momentum_reference(params, grads, lr, momentum, ema_momentum=None, switch_every=None):
  """SGD-momentum (PyTorch buffer semantics) + the paper's Switch EMA, in float64 NumPy."""
  p = {k: v.astype(np.float64) for k, v in params.items()}
  ema = {k: v.copy() for k, v in p.items()}
  buf = None
  out = []
  for t, g in enumerate(grads, start=1):
    buf = {k: g[k].astype(np.float64) for k in g} if buf is None else {
        k: momentum * buf[k] + g[k] for k in g}
    p = {k: p[k] - lr * buf[k] for k in p}
    if ema_momentum is not None:
      ema = {k: ema_momentum * ema[k] + (1 - ema_momentum) * p[k] for k in p}
      if switch_every and t % switch_every == 0:
        p = {k: ema[k].copy() for k in p}  # switch: the model takes the EMA; momentum is kept
    out.append((p, ema, buf))
  return out


def test_sema_follows_the_paper_and_keeps_inner_state():
  params, grads = _params(), _grads()
  tx = optax.chain(optim.create("sgd", lr=0.1, momentum=0.9), optim.sema(momentum=0.8, switch_every=4))
  history = _run(tx, params, grads)
  plain = _run(optim.create("sgd", lr=0.1, momentum=0.9), params, grads)
  reference = _sgd_momentum_reference(params, grads, 0.1, 0.9, ema_momentum=0.8, switch_every=4)
  for t, ((p, state), (ref_p, ref_ema, _)) in enumerate(zip(history, reference), start=1):
    for k in p:
      np.testing.assert_allclose(p[k], ref_p[k], rtol=1e-4, atol=1e-6, err_msg=f"step {t}")
      np.testing.assert_allclose(optim.averaged_params(state)[k], ref_ema[k], rtol=1e-4, atol=1e-6)
    # Switching leaves the inner optimizer's state (momentum) exactly as plain SGD's.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), state[0], plain[t - 1][1])
    if t % 4 == 0:  # right after a switch the model is the EMA
      for k in p:
        np.testing.assert_allclose(p[k], optim.averaged_params(state)[k], rtol=1e-6)
  assert not np.allclose(history[4][0]["w"], optim.averaged_params(history[4][1])["w"])


def test_ema_without_switching_never_touches_params():
  params, grads = _params(), _grads()
  plain = _run(optim.create("sgd", lr=0.1, momentum=0.9), params, grads)
  averaged = _run(optax.chain(optim.create("sgd", lr=0.1, momentum=0.9), optim.ema(momentum=0.8)),
                  params, grads)
  reference = _sgd_momentum_reference(params, grads, 0.1, 0.9, ema_momentum=0.8)
  for (p, _), (q, state), (_, ref_ema, _) in zip(plain, averaged, reference):
    np.testing.assert_allclose(p["w"], q["w"], rtol=1e-6)
    np.testing.assert_allclose(optim.averaged_params(state)["w"], ref_ema["w"], rtol=1e-4, atol=1e-6)


def test_ema_momentum_warmup_is_linear():
  params = {"x": np.zeros((1,), np.float32)}
  tx = optim.ema(momentum=0.9, warmup_steps=3)
  state = tx.init(params)
  expected_ema = 0.0
  p = 0.0
  for t in range(1, 6):
    p += 1.0
    _, state = tx.update({"x": np.ones((1,), np.float32)}, state, {"x": np.full((1,), p - 1, np.float32)})
    m = 0.9 * min(1.0, t / 3)
    expected_ema = m * expected_ema + (1 - m) * p
    np.testing.assert_allclose(state.averaged_params["x"], [expected_ema], rtol=1e-6)


def test_swa_is_the_mean_of_snapshots():
  params, grads = _params(), _grads()
  history = _run(optax.chain(optim.create("sgd", lr=0.1), optim.swa(start_step=5, every=3)), params, grads)
  snapshots = [p["w"] for t, (p, _) in enumerate(history, start=1) if t > 5 and (t - 5) % 3 == 0]
  np.testing.assert_allclose(optim.averaged_params(history[-1][1])["w"], np.mean(snapshots, 0), rtol=1e-5)


def test_sema_rejects_a_non_positive_period():
  with pytest.raises(ValueError, match="switch_every must be a positive"):
    optim.sema(switch_every=0)


def test_weight_decay_labels():
  params = {"conv": {"kernel": jnp.zeros((3, 3, 4, 8))}, "bn": {"scale": jnp.zeros((8,))},
            "pos_embed": jnp.zeros((1, 16, 8)), "head": {"kernel": jnp.zeros((8, 10)), "bias": jnp.zeros((10,))}}
  labels = optim.weight_decay_labels(params, exclude_patterns=(r"pos_embed",), exclude_1d=True)
  assert labels == {"conv": {"kernel": "decay"}, "bn": {"scale": "no_decay"}, "pos_embed": "no_decay",
                    "head": {"kernel": "decay", "bias": "no_decay"}}


def test_default_exclusions_are_timms_no_weight_decay_names():
  from jaxlab.config import base_config  # pylint: disable=import-outside-toplevel
  params = {"pos_embed": jnp.zeros((1, 5, 8)), "cls_token": jnp.zeros((1, 1, 8)),
            "layers": {"0": {"blocks": {"0": {"attn": {"relative_position_bias_table": jnp.zeros((169, 3)),
                                                       "qkv": {"kernel": jnp.zeros((8, 24))}}}}}},
            "my_pos_embed_proj": {"kernel": jnp.zeros((8, 8))}}
  labels = optim.weight_decay_labels(params, base_config().optim.weight_decay_exclude)
  assert labels["pos_embed"] == labels["cls_token"] == "no_decay"
  attn = labels["layers"]["0"]["blocks"]["0"]["attn"]
  assert attn["relative_position_bias_table"] == "no_decay" and attn["qkv"]["kernel"] == "decay"
  assert labels["my_pos_embed_proj"]["kernel"] == "decay"
