"""torch.optim's SGD, Adam, AdamW, Adamax, NAdam, RAdam, Adagrad, Adadelta and RMSprop against NumPy
transcriptions of their `step()` (tests/torch_optim_reference.py).

Same initial parameters and the same 25 gradients; parameters agree after every step. eps is large
(0.1) where it sits next to a square root, so a misplaced eps changes the trajectory; gradients
shrink after step 10, so amsgrad's maximum matters.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.optim import registry
from jaxlab.optim import torch_optimizers  # noqa: F401  (registers the optimizers)
import torch_optim_reference as ref
from optimizer_harness import jitted_optimizer

SHAPES = {"w": (5, 3), "b": (3,), "s": (1,)}
KEYS = sorted(SHAPES)
STEPS = 25

REFERENCES = {
    "sgd": ref.SGD, "adam": ref.Adam, "adamw": ref.AdamW, "adamax": ref.Adamax, "nadam": ref.NAdam,
    "radam": ref.RAdam, "adagrad": ref.Adagrad, "adadelta": ref.Adadelta, "rmsprop": ref.RMSprop,
}

# The torch 2.13 constructors' defaults (maximize, foreach, capturable, differentiable, fused left out).
TORCH_DEFAULTS = {
    "sgd": dict(lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False),
    "adam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
                 decoupled_weight_decay=False),
    "adamw": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False),
    "adamax": dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0),
    "nadam": dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
                  decoupled_weight_decay=False),
    "radam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                  decoupled_weight_decay=False),
    "adagrad": dict(lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10),
    "adadelta": dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0),
    "rmsprop": dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False),
}

SGD = dict(lr=0.05, momentum=0.8, weight_decay=0.05)
ADAM = dict(lr=0.02, betas=(0.8, 0.95), eps=0.1, weight_decay=0.05)
NADAM = dict(lr=0.02, betas=(0.8, 0.95), eps=0.1, weight_decay=0.05, momentum_decay=0.05)
RADAM = dict(lr=0.02, betas=(0.8, 0.9), eps=0.1, weight_decay=0.05)
ADAGRAD = dict(lr=0.1, lr_decay=0.05, weight_decay=0.05, initial_accumulator_value=0.5, eps=0.1)
ADADELTA = dict(lr=0.5, rho=0.8, eps=1e-3, weight_decay=0.05)
RMSPROP = dict(lr=0.01, alpha=0.9, eps=0.1, weight_decay=0.05, momentum=0.8)

CASES = [
    ("sgd", SGD),
    ("sgd", {**SGD, "nesterov": True}),
    ("sgd", {**SGD, "dampening": 0.3}),
    ("sgd", {**SGD, "momentum": 0.0}),
    ("adam", ADAM),
    ("adam", {**ADAM, "amsgrad": True}),
    ("adam", {**ADAM, "decoupled_weight_decay": True}),
    ("adam", {**ADAM, "decoupled_weight_decay": True, "amsgrad": True}),
    ("adamw", {**ADAM, "weight_decay": 0.1}),
    ("adamw", {**ADAM, "weight_decay": 0.1, "amsgrad": True}),
    ("adamax", ADAM),
    ("nadam", NADAM),
    ("nadam", {**NADAM, "decoupled_weight_decay": True}),
    ("radam", RADAM),
    ("radam", {**RADAM, "decoupled_weight_decay": True}),
    ("radam", {**RADAM, "betas": (0.9, 0.999)}),  # rectification from step 6 (rho_6 ≈ 5.99)
    ("adagrad", ADAGRAD),
    ("adadelta", ADADELTA),
    ("rmsprop", RMSPROP),
    ("rmsprop", {**RMSPROP, "centered": True}),
    ("rmsprop", {**RMSPROP, "momentum": 0.0}),
    ("rmsprop", {**RMSPROP, "momentum": 0.0, "centered": True}),
]


def _data(seed=0):
  rng = np.random.default_rng(seed)
  params = {k: rng.normal(size=s) for k, s in SHAPES.items()}
  scale = lambda i: (1 + i % 3) * (2.0 if i < 10 else 0.3)
  grads = [{k: rng.normal(size=s) * scale(i) for k, s in SHAPES.items()} for i in range(STEPS)]
  return params, grads


def _compare(name, hparams, reference, *, lrs=None, rtol=1e-4, atol=1e-6):
  params64, grads = _data()
  step, params, state = jitted_optimizer(name, hparams, params64)

  ref_params = [params64[k].copy() for k in KEYS]
  for t in range(STEPS):
    if lrs is not None:
      reference.lr = lrs[t]  # a torch scheduler sets group['lr'] before the step
    reference.step(ref_params, [grads[t][k] for k in KEYS])
    params, state = step(params, state, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), grads[t]))
    for k, want in zip(KEYS, ref_params):
      np.testing.assert_allclose(np.asarray(params[k]), want, rtol=rtol, atol=atol,
                                 err_msg=f"{name} {hparams} step {t + 1} leaf {k}")
  return params64, ref_params


@pytest.mark.parametrize("name,hparams", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_matches_torch(name, hparams):
  reference = REFERENCES[name](**hparams)
  start, end = _compare(name, hparams, reference)
  # The trajectory moved: a no-op optimizer could not pass.
  assert max(np.max(np.abs(a - start[k])) for k, a in zip(KEYS, end)) > 1e-2
  if name == "radam":  # both sides of the rectification threshold were taken
    assert reference.rectified[0] is False and reference.rectified[-1] is True


def test_amsgrad_changes_the_trajectory():
  # Guards the amsgrad cases above: with these gradients the maximum is active.
  _, plain = _compare("adam", ADAM, ref.Adam(**ADAM))
  _, ams = _compare("adam", {**ADAM, "amsgrad": True}, ref.Adam(**ADAM, amsgrad=True))
  assert not np.allclose(plain[0], ams[0], rtol=1e-3)


SCHEDULED = [
    ("sgd", {**SGD, "dampening": 0.3}),
    ("sgd", {**SGD, "nesterov": True}),
    ("adamw", {**ADAM, "weight_decay": 0.1, "amsgrad": True}),
    ("nadam", {**NADAM, "decoupled_weight_decay": True}),
    ("radam", {**RADAM, "decoupled_weight_decay": True}),
    ("adagrad", ADAGRAD),
    ("rmsprop", RMSPROP),
]


@pytest.mark.parametrize("name,hparams", SCHEDULED, ids=[n for n, _ in SCHEDULED])
def test_schedule_is_read_at_each_step(name, hparams):
  # lr as an optax schedule gives torch's trajectory under a scheduler setting group['lr'].
  peak = hparams["lr"]
  schedule = lambda count: peak * (0.2 + 0.05 * count)
  lrs = [schedule(t) for t in range(STEPS)]
  _compare(name, {**hparams, "lr": schedule}, REFERENCES[name](**hparams), lrs=lrs)


@pytest.mark.parametrize("name", sorted(TORCH_DEFAULTS))
def test_defaults_are_torch_defaults(name):
  found = registry.entry(name)
  assert found.defaults == TORCH_DEFAULTS[name]
  assert found.reference == "torch.optim." + REFERENCES[name].__name__
  # The defaults flow through create(): same trajectory as the reference's own defaults.
  _compare(name, {}, REFERENCES[name]())


def test_sgd_nesterov_needs_momentum_and_no_dampening():
  with pytest.raises(ValueError, match="nesterov"):
    registry.create("sgd", lr=0.1, nesterov=True)
  with pytest.raises(ValueError, match="nesterov"):
    registry.create("sgd", lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)


@pytest.mark.parametrize("name,hparams", [CASES[2], CASES[5], CASES[11], CASES[16], CASES[19]],
                         ids=["sgd", "adam", "nadam", "adagrad", "rmsprop"])
def test_state_leaves_mirror_params(name, hparams):
  # Sharding gives optimizer state the parameters' sharding: per-parameter leaves keep their shape.
  params = {k: jnp.zeros(s) for k, s in SHAPES.items()}
  state = registry.create(name, **hparams).init(params)
  shapes = {leaf.shape for leaf in jax.tree.leaves(state)}
  assert shapes <= set(SHAPES.values()) | {()}
  assert set(SHAPES.values()) <= shapes
