"""timm.optim.Muon against its NumPy transcription (tests/muon_reference.py).

Same initial parameters and the same 25 gradients, on a pytree with a (8,6) matrix and a
(4,3,3,3) conv kernel (both routed to Muon by timm's rule), a (3,8) matrix (aspect rule sends it to
the fallback), a (6,) vector and a (1,) leaf (AdamW fallback). Newton-Schulz is checked both with
float32 math against float64, and in timm's default bfloat16 against a NumPy emulation of timm's
bf16 rounding (which matches timm itself to ~1e-5 relative).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab.optim import muon  # noqa: F401  (registers 'muon')
from jaxlab.optim import registry
import muon_reference as ref
from optimizer_harness import jitted_optimizer

SHAPES = {"w": (8, 6), "conv": (4, 3, 3, 3), "tall": (3, 8), "b": (6,), "s": (1,)}
KEYS = sorted(SHAPES)
STEPS = 25
HP = dict(lr=0.01, momentum=0.8, weight_decay=0.1, betas=(0.8, 0.9), eps=1e-6)


def _data(seed=0):
  rng = np.random.default_rng(seed)
  params = {k: rng.normal(size=s) for k, s in SHAPES.items()}
  grads = [{k: rng.normal(size=s) * (1 + i % 3) for k, s in SHAPES.items()} for i in range(STEPS)]
  return params, grads


def _jitted(hparams, params64, ns_dtype):
  if ns_dtype == "bfloat16":  # the registry path: timm's default bf16 Newton-Schulz
    return jitted_optimizer("muon", hparams, params64)
  tx = registry.entry("muon").build(**{**registry.entry("muon").defaults, **hparams}, ns_dtype=ns_dtype)

  @jax.jit
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params64)
  return step, params, tx.init(params)


def _run(hparams, ns_dtype):
  params64, grads = _data()
  step, params, state = _jitted(hparams, params64, ns_dtype)
  reference = ref.Muon(**hparams, ns_dtype="float64" if ns_dtype == "float32" else "bfloat16")
  ref_params = [params64[k].copy() for k in KEYS]
  for t in range(STEPS):
    params, state = step(params, state, jax.tree.map(jnp.float32, grads[t]))
    reference.step(ref_params, [grads[t][k] for k in KEYS])
    for k, want in zip(KEYS, ref_params):
      np.testing.assert_allclose(np.asarray(params[k]), want, rtol=1e-4, atol=1e-6, err_msg=f"{k} step {t}")
  moved = max(np.abs(ref_params[i] - params64[k]).max() for i, k in enumerate(KEYS))
  assert moved > 1e-2  # the comparison is not vacuous


CASES = [
    {},
    {"nesterov": True},
    {"fallback_lr_scale": 0.5, "adjust_lr_fn": "original", "ns_coefficients": "original", "ns_steps": 3},
    {"adjust_lr_fn": "rms_to_rms", "safety_factor": 1.05, "ns_steps": 4,
     "ns_coefficients": [(3.4445, -4.7750, 2.0315), (3.0, -3.2, 1.2)]},  # last triple repeats
]


@pytest.mark.parametrize("flags", CASES)
def test_matches_reference_float32_newton_schulz(flags):
  _run({**HP, **flags}, "float32")


@pytest.mark.parametrize("flags", CASES[:2])
def test_matches_reference_bfloat16_newton_schulz(flags):
  # Both sides round every op to bf16 after float32 (JAX) / float64 (NumPy) math; they agree to
  # rtol 1e-4 here because the parameters' update is lr-scaled and rounding ties are rare.
  _run({**HP, **flags}, "bfloat16")


def test_routing_is_timms():
  assert [muon.suitable_for_muon(SHAPES[k]) for k in KEYS] == [False, True, False, False, True]
  assert not muon.suitable_for_muon((1, 196, 768)) and not muon.suitable_for_muon((96, 1, 3, 3))
  assert muon.suitable_for_muon((96, 3, 4, 4)) and not muon.suitable_for_muon((4, 2048))


def test_defaults_are_timms():
  assert registry.entry("muon").reference == "timm.optim.Muon"
  assert registry.entry("muon").defaults == dict(
      lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=False, ns_steps=5, ns_coefficients="quintic",
      eps=1e-7, safety_factor=1.0, adjust_lr_fn="match_rms_adamw", conv_mode="flatten",
      normalize_spatial=True, adamw_lr=None, fallback_lr_scale=1.0, betas=(0.9, 0.95), algo="muon",
      scale_eps=False)


def test_defaults_match_reference():
  params64, grads = _data(1)
  step, params, state = jitted_optimizer("muon", {}, params64)
  reference = ref.Muon(ns_dtype="bfloat16")
  ref_params = [params64[k].copy() for k in KEYS]
  for t in range(5):
    params, state = step(params, state, jax.tree.map(jnp.float32, grads[t]))
    reference.step(ref_params, [grads[t][k] for k in KEYS])
  for k, want in zip(KEYS, ref_params):
    np.testing.assert_allclose(np.asarray(params[k]), want, rtol=1e-4, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("bad", [{"conv_mode": "batched"}, {"algo": "adamuon"}, {"scale_eps": True}])
def test_unsupported_options_raise(bad):
  with pytest.raises(ValueError):
    registry.create("muon", **bad)


def test_adamw_lr_is_a_fallback_scale():
  params64, grads = _data()
  a = jitted_optimizer("muon", dict(lr=0.02, adamw_lr=0.01), params64)
  b = jitted_optimizer("muon", dict(lr=0.02, fallback_lr_scale=0.5), params64)
  (pa, _), (pb, _) = a[0](a[1], a[2], grads[0]), b[0](b[1], b[2], grads[0])
  for k in KEYS:
    np.testing.assert_allclose(np.asarray(pa[k]), np.asarray(pb[k]), rtol=1e-6)
