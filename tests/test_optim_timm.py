"""SGDP, AdamP, Lamb, Lars, Lion and AdaBelief against NumPy transcriptions of timm.optim.

Same initial parameters and the same 25 gradients; parameters agree after every step. For SGDP and
AdamP some gradients are made orthogonal to the weights (per output channel, or as a whole) so
both projection branches run.
"""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab.optim import registry
from jaxlab.optim import timm_optimizers  # noqa: F401  (registers the optimizers)
import timm_optim_reference as ref
from optimizer_harness import jitted_optimizer

# A (5,3) matrix, a 4-D conv-like kernel, a vector and a (1,) leaf.
SHAPES = {"w": (5, 3), "conv": (4, 3, 2, 2), "b": (3,), "s": (1,)}
KEYS = sorted(SHAPES)
STEPS = 25


def _data(seed=0):
  rng = np.random.default_rng(seed)
  params = {k: rng.normal(size=s) for k, s in SHAPES.items()}
  grads = [{k: rng.normal(size=s) * (1 + i % 3) for k, s in SHAPES.items()} for i in range(STEPS)]
  return params, grads


def _orthogonalize(grad, param, rows):
  # Remove from each of `rows` row-blocks of grad its component along the parameter's.
  g, p = grad.reshape(rows, -1), param.reshape(rows, -1)
  g = g - p * (g * p).sum(1, keepdims=True) / (p * p).sum(1, keepdims=True)
  return g.reshape(grad.shape)


def _grad_at(t, grads, ref_params, project):
  g = dict(grads[t])
  if project:
    current = dict(zip(KEYS, ref_params))
    if t % 3 == 1:  # scale-invariant 'w' (per output channel): channel projection
      g["w"] = _orthogonalize(g["w"], current["w"], SHAPES["w"][0])
    if t % 3 == 2:  # 'conv' orthogonal as a whole only: layer projection
      g["conv"] = _orthogonalize(g["conv"], current["conv"], 1)
  return g


def _compare(name, hparams, reference, *, project=False, lrs=None, rtol=1e-4, atol=1e-6):
  params64, grads = _data()
  step, params, state = jitted_optimizer(name, hparams, params64)

  ref_params = [params64[k].copy() for k in KEYS]
  for t in range(STEPS):
    if lrs is not None:
      reference.lr = lrs[t]  # a torch scheduler sets group['lr']
    g = _grad_at(t, grads, ref_params, project)
    reference.step(ref_params, [g[k] for k in KEYS])
    params, state = step(params, state, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), g))
    for k, want in zip(KEYS, ref_params):
      np.testing.assert_allclose(np.asarray(params[k]), want, rtol=rtol, atol=atol,
                                 err_msg=f"{name} {hparams} step {t + 1} leaf {k}")
  # The trajectory moved: a no-op optimizer could not pass.
  assert max(np.max(np.abs(a - params64[k])) for k, a in zip(KEYS, ref_params)) > 1e-3
  return reference


SGDP = dict(lr=0.05, momentum=0.8, dampening=0.1, weight_decay=0.05, eps=1e-6, delta=0.15,
            wd_ratio=0.2)


@pytest.mark.parametrize("flags", [{}, {"nesterov": True, "dampening": 0.0}, {"caution": True}])
def test_sgdp(flags):
  hp = {**SGDP, **flags}
  reference = _compare("sgdp", hp, ref.SGDP(**hp), project=True)
  assert {"channel", "layer", None} <= set(reference.hits)  # every projection branch was taken


ADAMP = dict(lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.05, delta=0.15, wd_ratio=0.2)


@pytest.mark.parametrize("flags", [{}, {"nesterov": True}, {"caution": True}])
def test_adamp(flags):
  hp = {**ADAMP, **flags}
  reference = _compare("adamp", hp, ref.AdamP(**hp), project=True)
  assert {"channel", "layer", None} <= set(reference.hits)


LAMB = dict(lr=0.01, betas=(0.8, 0.9), eps=1e-4, weight_decay=0.05, max_grad_norm=2.0)


@pytest.mark.parametrize("flags", [
    {},
    {"grad_averaging": False, "trust_clip": True, "bias_correction": False},
    {"decoupled_decay": True, "caution": True},
    {"weight_decay": 0.0, "always_adapt": True, "max_grad_norm": None},
    {"weight_decay": 0.0},  # no trust ratio at all
])
def test_lamb(flags):
  hp = {**LAMB, **flags}
  _compare("lamb", hp, ref.Lamb(**hp))


def test_lamb_clips_by_the_global_norm():
  # Gradients of norm ≫ max_grad_norm: without the clipping the trajectory would differ.
  params, grads = _data()
  g = jax.tree.map(jnp.float32, grads[0])
  p = jax.tree.map(jnp.float32, params)
  unclipped = registry.create("lamb", **{**LAMB, "max_grad_norm": None})
  clipped = registry.create("lamb", **LAMB)
  u1, _ = unclipped.update(g, unclipped.init(p), p)
  u2, _ = clipped.update(g, clipped.init(p), p)
  assert not np.allclose(np.asarray(u1["b"]), np.asarray(u2["b"]))


LARS = dict(lr=0.5, momentum=0.8, dampening=0.1, weight_decay=0.05, trust_coeff=0.01, eps=1e-6)


@pytest.mark.parametrize("flags", [
    {},
    {"nesterov": True, "dampening": 0.0},
    {"lr": 0.1, "trust_coeff": 0.2, "trust_clip": True},  # r/lr lands on both sides of 1
    {"weight_decay": 0.0, "always_adapt": True},
    {"momentum": 0.0},
])
def test_lars(flags):
  hp = {**LARS, **flags}
  _compare("lars", hp, ref.Lars(**hp))


LION = dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.1)


@pytest.mark.parametrize("flags", [{}, {"caution": True}, {"maximize": True},
                                   {"caution": True, "maximize": True}])
def test_lion(flags):
  hp = {**LION, **flags}
  _compare("lion", hp, ref.Lion(**hp))


ADABELIEF = dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05)


@pytest.mark.parametrize("flags", [
    {},  # rectified (the class default), decoupled decay
    {"rectify": False},  # optax's scale_by_belief
    {"rectify": False, "amsgrad": True},
    {"rectify": False, "decoupled_decay": False},
    {"amsgrad": True, "decoupled_decay": False},
    {"degenerated_to_sgd": False, "fixed_decay": True},
    {"betas": (0.9, 0.999), "eps": 1e-8},  # ρ_t crosses 5 just after step 5
])
def test_adabelief(flags):
  hp = {**ADABELIEF, **flags}
  _compare("adabelief", hp, ref.AdaBelief(**hp))


@pytest.mark.parametrize("name,hp,cls", [
    ("lars", {**LARS, "lr": 0.1, "trust_coeff": 0.2, "trust_clip": True}, ref.Lars),
    ("lamb", {**LAMB, "decoupled_decay": True}, ref.Lamb),
    ("adabelief", ADABELIEF, ref.AdaBelief),
    ("lion", {**LION, "caution": True}, ref.Lion),
    ("sgdp", SGDP, ref.SGDP),
])
def test_lr_schedule(name, hp, cls):
  # The lr drops to a tenth after 10 steps; the reference's group lr is set the same way.
  base = hp["lr"]
  schedule = optax.piecewise_constant_schedule(base, {10: 0.1})
  lrs = [base if t < 10 else base * 0.1 for t in range(STEPS)]
  _compare(name, {**hp, "lr": schedule}, cls(**hp), lrs=lrs, project=name == "sgdp")


@pytest.mark.parametrize("beta2", [0.95, 0.999, 0.9999, 0.99999])
def test_rectification_terms_match_float64(beta2):
  rho_inf = 2 / (1 - beta2) - 1
  t = np.arange(1, 5000)
  rho64 = rho_inf - 2 * t * beta2 ** t / (1 - beta2 ** t)
  rho32 = np.asarray(timm_optimizers._rho(beta2, jnp.asarray(t, jnp.float32)))
  np.testing.assert_allclose(rho32, rho64, rtol=2e-6, atol=2e-6)
  first = next(int(i) for i, r in zip(t, rho64) if r >= 5)
  assert timm_optimizers._first_rectified_step(beta2) == first
  assert timm_optimizers._first_rectified_step(0.5) is None  # ρ∞ = 3 < 5: never rectified


def test_sgdp_needs_lr():
  with pytest.raises(ValueError, match="lr"):
    registry.create("sgdp", momentum=0.9)


def test_corrected_weight_decay_needs_a_float_lr():
  with pytest.raises(ValueError, match="float lr"):
    registry.create("lion", lr=optax.constant_schedule(1e-4), corrected_weight_decay=True)


def test_defaults_are_the_reference_constructors():
  expected = {
      "sgdp": dict(lr=None, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                   eps=1e-8, delta=0.1, wd_ratio=0.1, caution=False),
      "adamp": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, delta=0.1,
                    wd_ratio=0.1, nesterov=False, caution=False),
      "lamb": dict(lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                   grad_averaging=True, max_grad_norm=1.0, trust_clip=False, always_adapt=False,
                   caution=False, decoupled_decay=False, corrected_weight_decay=False),
      "lars": dict(lr=1.0, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                   trust_coeff=0.001, eps=1e-8, trust_clip=False, always_adapt=False),
      "lion": dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, caution=False,
                   corrected_weight_decay=False, maximize=False),
      "adabelief": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0.0, amsgrad=False,
                        decoupled_decay=True, fixed_decay=False, rectify=True,
                        degenerated_to_sgd=True),
  }
  for name, defaults in expected.items():
    assert registry.entry(name).defaults == defaults, name
    assert registry.entry(name).reference.startswith("timm.optim.")
    if name != "sgdp":
      registry.create(name)  # every default builds


def test_state_mirrors_params_and_runs_at_defaults():
  params = {"a": {"w": jnp.ones((4, 3))}, "b": jnp.ones((3,))}
  for name in ["adamp", "lamb", "lars", "lion", "adabelief"]:
    tx = registry.create(name, weight_decay=0.1)
    state = tx.init(params)
    for leaf in jax.tree.leaves(state):
      assert leaf.shape in {(), (4, 3), (3,)}, (name, leaf.shape)
    updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), state, params)
    assert all(np.all(np.isfinite(np.asarray(u))) for u in jax.tree.leaves(updates)), name


@pytest.mark.parametrize("rows,caution", [(5, False), (1, False), (5, True)])
def test_projection_eps_on_small_weights(rows, caution):
  # eps of the order of the weight norms: where it sits (cosine clamp, +eps on the norm) shows.
  rng = np.random.default_rng(1)
  p = rng.normal(size=(5, 3)) * 1e-3
  grad = _orthogonalize(rng.normal(size=(5, 3)), p, rows)
  perturb = rng.normal(size=(5, 3))
  want, want_ratio = ref.projection(p, grad, perturb, 0.1, 0.3, 1e-3, caution)
  got, ratio = timm_optimizers._projection(*(jnp.asarray(x, jnp.float32) for x in (p, grad, perturb)),
                                           0.1, 0.3, 1e-3, caution)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-6)
  assert float(ratio) == pytest.approx(want_ratio)
  assert not np.allclose(want, perturb)  # the projection did something
