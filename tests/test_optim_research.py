"""Adan, NovoGrad, Adafactor, AdaBound, SophiaG and ADOPT against NumPy transcriptions of their references.

Same initial parameters and the same 25 gradients; parameters agree after every step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab.optim import registry
from jaxlab.optim import research_optimizers  # noqa: F401  (registers the optimizers)
from jaxlab.optim.schedules import available_schedules, make_schedule
from jaxlab.optim.transforms import peak_lr
import research_optim_reference as ref

# (5,3) and (6,5) matrices, a 4-D conv-like kernel, a vector and a (1,) leaf.
SHAPES = {"w": (5, 3), "b": (3,), "s": (1,), "conv": (4, 3, 2, 2), "v": (6, 5)}
STEPS = 25


def _data(seed=0):
  rng = np.random.default_rng(seed)
  params = {k: rng.normal(size=s) for k, s in SHAPES.items()}
  grads = [{k: rng.normal(size=s) * (1 + i % 3) for k, s in SHAPES.items()} for i in range(STEPS)]
  hess = [{k: rng.normal(size=s) for k, s in SHAPES.items()} for _ in range(STEPS)]
  return params, grads, hess


def _as_list(tree):
  return [tree[k] for k in sorted(SHAPES)]


def _compare(name, hparams, reference, *, sophia_every=None, bs=5120, rtol=1e-4, atol=1e-6):
  params64, grads, hess = _data()
  tx = registry.create(name, **hparams)
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params64)
  state = tx.init(params)

  @jax.jit
  def step(params, state, g, hg, flag):
    extra = dict(hessian_grads=hg, hessian_update=flag) if sophia_every else {}
    updates, state = tx.update(g, state, params, **extra)
    return optax.apply_updates(params, updates), state

  ref_params = _as_list({k: v.copy() for k, v in params64.items()})
  for t in range(STEPS):
    flag = bool(sophia_every) and t % sophia_every == 0 and t > 0
    if flag:  # the reference updates the Hessian right after iteration t-1
      reference.update_hessian(ref_params, _as_list(hess[t]))
    if sophia_every:
      reference.step(ref_params, _as_list(grads[t]), bs=bs)
    else:
      reference.step(ref_params, _as_list(grads[t]))
    g32 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), grads[t])
    hg32 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), hess[t])
    params, state = step(params, state, g32, hg32, jnp.asarray(flag))
    for got, want in zip(_as_list(params), ref_params):
      np.testing.assert_allclose(np.asarray(got), want, rtol=rtol, atol=atol,
                                 err_msg=f"{name} {hparams} step {t + 1}")
  # The trajectory moved: a no-op optimizer could not pass.
  assert max(np.max(np.abs(a - b)) for a, b in zip(ref_params, _as_list(params64))) > 1e-3


ADAN = dict(lr=0.01, betas=(0.9, 0.8, 0.95), eps=1e-6, weight_decay=0.05)


@pytest.mark.parametrize("flags", [{}, {"no_prox": True}, {"caution": True}])
def test_adan(flags):
  hp = {**ADAN, **flags}
  _compare("adan", hp, ref.Adan(**hp))


NOVOGRAD = dict(lr=0.01, betas=(0.9, 0.7), eps=1e-5, weight_decay=0.05)


@pytest.mark.parametrize("flags", [{}, {"grad_averaging": True, "amsgrad": True},
                                   {"grad_averaging": True, "decoupled_decay": True}])
def test_novograd(flags):
  hp = {**NOVOGRAD, **flags}
  _compare("novograd", hp, ref.NvNovoGrad(**hp))


@pytest.mark.parametrize("hp", [
    # relative step, parameter scaling, factored 2-D and 4-D leaves (small min_dim_size_to_factor)
    dict(lr=None, eps=1e-20, eps_scale=1e-2, clip_threshold=0.5, decay_rate=-0.7,
         weight_decay=0.05, min_dim_size_to_factor=2),
    dict(lr=None, warmup_init=True, scale_parameter=False, betas=(0.8, 0.0), weight_decay=0.05,
         min_dim_size_to_factor=2),
    dict(lr=0.02, betas=(0.8, 0.0), weight_decay=0.05, min_dim_size_to_factor=2, caution=True),
    dict(lr=0.02, weight_decay=0.05, clip_threshold=0.7),  # nothing factored at the default size
])
def test_adafactor(hp):
  moved_enough = hp.get("warmup_init")  # lr 1e-6·t barely moves the parameters
  params64, grads, _ = _data()
  if moved_enough:
    # compare relative to the step taken: take the difference from the start
    tx = registry.create("adafactor", **hp)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params64)
    state = tx.init(params)
    upd = jax.jit(tx.update)
    reference = ref.Adafactor(**hp)
    ref_params = _as_list({k: v.copy() for k, v in params64.items()})
    total = {k: np.zeros(s) for k, s in SHAPES.items()}
    for t in range(STEPS):
      reference.step(ref_params, _as_list(grads[t]))
      g32 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), grads[t])
      updates, state = upd(g32, state, params)
      params = optax.apply_updates(params, updates)
      total = jax.tree.map(lambda a, u: a + np.asarray(u, np.float64), total, updates)
    for got, start, want in zip(_as_list(total), _as_list(params64), ref_params):
      np.testing.assert_allclose(got, want - start, rtol=1e-4, atol=1e-9)
    assert max(np.max(np.abs(x)) for x in jax.tree.leaves(total)) > 1e-5
  else:
    _compare("adafactor", hp, ref.Adafactor(**hp))


def test_adafactor_factored_state_is_small():
  tx = registry.create("adafactor", min_dim_size_to_factor=2)
  state = tx.init({k: jnp.zeros(s) for k, s in SHAPES.items()})
  # (5,3): 5+3, (6,5): 6+5, conv (4,3,2,2) factored over (0,1): 4·2·2 + 3·2·2; b and s unfactored.
  assert state.exp_avg_sq_row.size + state.exp_avg_sq_col.size == 8 + 11 + 28
  assert state.exp_avg_sq.size == 3 + 1
  # Nothing factored at the default size: no zero-size array either (Orbax cannot save one).
  state = registry.create("adafactor").init({k: jnp.zeros(s) for k, s in SHAPES.items()})
  assert all(x.size for x in jax.tree.leaves(state))


ADABOUND = dict(lr=0.01, betas=(0.8, 0.9), final_lr=0.05, gamma=0.05, eps=1e-6, weight_decay=0.05)


@pytest.mark.parametrize("flags", [{}, {"amsbound": True}])
def test_adabound(flags):
  hp = {**ADABOUND, **flags}
  _compare("adabound", hp, ref.AdaBound(**hp))


@pytest.mark.parametrize("schedule", [
    optax.piecewise_constant_schedule(0.01, {5: 0.5}),  # lr halves after 5 steps
    optax.warmup_cosine_decay_schedule(0.0, 0.01, warmup_steps=5, decay_steps=20),  # from lr 0
    optax.constant_schedule(0.01),
])
def test_adabound_bounds_follow_the_lr_schedule(schedule):
  # The reference is built with the peak lr 0.01 (its base_lr) and a torch scheduler sets its
  # lr: step size and final_lr bounds both scale by lr_t / base_lr, warmup from 0 included.
  tx = registry.create("adabound", **{**ADABOUND, "lr": schedule})
  params64, grads, _ = _data()
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params64)
  state = tx.init(params)
  reference = ref.AdaBound(**ADABOUND)
  ref_params = _as_list({k: v.copy() for k, v in params64.items()})
  upd = jax.jit(tx.update)
  for t in range(20):
    reference.lr = float(schedule(t))
    reference.step(ref_params, _as_list(grads[t]))
    updates, state = upd(jax.tree.map(jnp.float32, grads[t]), state, params)
    params = optax.apply_updates(params, updates)
    for got, want in zip(_as_list(params), ref_params):
      assert np.all(np.isfinite(np.asarray(got))), f"step {t + 1}"
      np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-6,
                                 err_msg=f"step {t + 1}")


@pytest.mark.parametrize("name", available_schedules())
@pytest.mark.parametrize("warmup_steps", [0, 7])
def test_peak_lr_of_the_config_schedules(name, warmup_steps):
  # build() hands AdaBound the config's schedule: its peak is the config's lr.
  schedule = make_schedule(name, peak=0.3, total_steps=100, warmup_steps=warmup_steps,
                           milestones=(40,))
  assert float(peak_lr(schedule, jnp.zeros([]))) == pytest.approx(0.3)
  assert float(peak_lr(schedule, jnp.ones([]))) == 1.0  # never below the current lr


SOPHIA = dict(lr=0.01, betas=(0.9, 0.95), rho=0.03, weight_decay=0.2)


@pytest.mark.parametrize("flags", [{}, {"maximize": True}])
def test_sophia_with_hessian_every_3_steps(flags):
  hp = {**SOPHIA, **flags}
  _compare("sophia", {**hp, "bs": 100}, ref.SophiaG(**hp), sophia_every=3, bs=100)


def test_sophia_hessian_matters():
  # Without the Hessian estimates the trajectory differs (the test above would notice).
  params64, grads, hess = _data()
  tx = registry.create("sophia", **SOPHIA, bs=100)
  params = jax.tree.map(jnp.float32, params64)
  s_with = s_without = tx.init(params)
  g = jax.tree.map(jnp.float32, grads[0])
  s_with = tx.update(g, s_with, params, hessian_grads=jax.tree.map(jnp.float32, hess[0]))[1]
  u_with, _ = tx.update(g, s_with, params)
  u_without, _ = tx.update(g, s_without, params)
  assert not np.allclose(np.asarray(u_with["w"]), np.asarray(u_without["w"]))
  # hessian_update=False leaves the EMA untouched.
  _, s_off = tx.update(g, s_without, params, hessian_grads=jax.tree.map(jnp.float32, hess[0]),
                       hessian_update=jnp.asarray(False))
  assert all(np.all(np.asarray(h) == 0) for h in jax.tree.leaves(s_off.hessian))


def test_sophia_hessian_reaches_through_chain():
  tx = optax.chain(optax.identity(), registry.create("sophia", **SOPHIA))
  params = {"w": jnp.ones((2, 2))}
  state = tx.init(params)
  _, state = tx.update({"w": jnp.ones((2, 2))}, state, params, hessian_grads={"w": jnp.ones((2, 2))})
  np.testing.assert_allclose(np.asarray(state[1].hessian["w"]), 1 - 0.95, rtol=1e-6)


ADOPT = dict(lr=0.01, betas=(0.8, 0.9), eps=1e-3, clip_exp=0.3, weight_decay=0.05)


@pytest.mark.parametrize("flags", [{}, {"decoupled": True, "caution": True, "maximize": True}])
def test_adopt(flags):
  hp = {**ADOPT, **flags}
  _compare("adopt", hp, ref.Adopt(**hp))


def test_defaults_are_the_reference_constructors():
  expected = {
      "adan": dict(lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, no_prox=False,
                   caution=False),
      "novograd": dict(lr=1e-3, betas=(0.95, 0.98), eps=1e-8, weight_decay=0.0,
                       grad_averaging=False, amsgrad=False, decoupled_decay=False,
                       corrected_weight_decay=False),
      "adafactor": dict(lr=None, eps=1e-30, eps_scale=1e-3, clip_threshold=1.0, decay_rate=-0.8,
                        betas=None, weight_decay=0.0, scale_parameter=True, warmup_init=False,
                        min_dim_size_to_factor=16, caution=False),
      "adabound": dict(lr=1e-3, betas=(0.9, 0.999), final_lr=0.1, gamma=1e-3, eps=1e-8,
                       weight_decay=0.0, amsbound=False),
      # bs is SophiaG.step's argument (default 5120), the rest its constructor's.
      "adopt": dict(lr=1e-3, betas=(0.9, 0.9999), eps=1e-6, clip_exp=0.333, weight_decay=0.0,
                    decoupled=False, corrected_weight_decay=False, caution=False, maximize=False),
      # hessian_every: the release's train-loop hess_interval, a hyperparameter of jaxlab's step.
      "sophia": dict(lr=1e-4, betas=(0.965, 0.99), rho=0.04, weight_decay=1e-1, maximize=False,
                     bs=5120, hessian_every=10),
  }
  for name, defaults in expected.items():
    assert registry.entry(name).defaults == defaults, name


@pytest.mark.parametrize("name", ["adan", "novograd", "adafactor", "adabound", "sophia", "adopt"])
def test_defaults_run_with_a_schedule(name):
  lr = None if name == "adafactor" else optax.linear_schedule(1e-3, 1e-4, 10)
  tx = registry.create(name, lr=lr)
  params = {k: jnp.ones(s) for k, s in SHAPES.items()}
  state = tx.init(params)
  updates, state = jax.jit(tx.update)(params, state, params)
  assert all(np.all(np.isfinite(np.asarray(u))) for u in jax.tree.leaves(updates))
