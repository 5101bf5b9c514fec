"""Schedule-Free AdamW, Prodigy and SOAP against NumPy transcriptions of the authors' releases;
SAM's perturbation and gradient on a quadratic where both are known in closed form.

Same initial parameters and the same 25 gradients; parameters agree after every step.
"""

from flax import serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from jaxlab.optim import registry, weight_decay_labels
from jaxlab.optim import recent_optimizers as recent
import recent_optim_reference as ref
from optimizer_harness import jitted_optimizer

# A matrix, a vector and a (1,) leaf; SOAP adds full-rank shapes (see _soap_shapes).
SHAPES = {"w": (5, 3), "b": (3,), "s": (1,)}
STEPS = 25


def _data(shapes, seed=0, drift=0.0):
  rng = np.random.default_rng(seed)
  params = {k: rng.normal(size=s) for k, s in shapes.items()}
  grads = [{k: rng.normal(size=s) * (1 + i % 3) + drift for k, s in shapes.items()}
           for i in range(STEPS)]
  return params, grads


def _compare(name, hparams, reference, *, shapes=SHAPES, lrs=None, rtol=1e-4, atol=1e-6,
             check=None, drift=0.0):
  params64, grads = _data(shapes, drift=drift)
  keys = sorted(shapes)
  step, params, state = jitted_optimizer(name, hparams, params64)

  ref_params = [params64[k].copy() for k in keys]
  for t in range(STEPS):
    if lrs is not None:
      reference.lr = lrs[t]  # a torch scheduler sets group['lr']
    reference.step(ref_params, [grads[t][k] for k in keys])
    params, state = step(params, state, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32),
                                                      grads[t]))
    for k, want in zip(keys, ref_params):
      np.testing.assert_allclose(np.asarray(params[k]), want, rtol=rtol, atol=atol,
                                 err_msg=f"{name} {hparams} step {t + 1} leaf {k}")
    if check is not None:
      check(params, state, ref_params, keys)
  # The trajectory moved: a no-op optimizer could not pass.
  assert max(np.max(np.abs(a - params64[k])) for k, a in zip(keys, ref_params)) > 1e-3
  return params, state


def test_defaults_are_the_reference_constructors():
  assert registry.entry("schedule_free_adamw").defaults == dict(
      lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_steps=0, r=0.0,
      weight_lr_power=2.0, foreach=True)
  assert registry.entry("prodigy").defaults == dict(
      lr=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8, weight_decay=0.0, decouple=True,
      use_bias_correction=False, safeguard_warmup=False, d0=1e-6, d_coef=1.0,
      growth_rate=float("inf"), fsdp_in_use=False, slice_p=1)
  assert registry.entry("soap").defaults == dict(
      lr=3e-3, betas=(0.95, 0.95), shampoo_beta=-1, eps=1e-8, weight_decay=0.01,
      precondition_frequency=10, max_precond_dim=10000, merge_dims=False, precondition_1d=False,
      normalize_grads=False, data_format="channels_first", correct_bias=True)
  assert registry.entry("sam").defaults == dict(base_optimizer="sgd", rho=0.05, adaptive=False)
  # The reference's **kwargs: the base optimizer's hyperparameters are SAM's too.
  assert registry.entry("sam").resolve({"base_optimizer": "adamw"}) == {
      **registry.entry("adamw").defaults, "base_optimizer": "adamw", "rho": 0.05, "adaptive": False}


# --- Schedule-Free AdamW ----------------------------------------------------------------------

SF = dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1, warmup_steps=5, r=0.5,
          weight_lr_power=1.5)


@pytest.mark.parametrize("hparams", [SF, dict(SF, warmup_steps=0, r=0.0, weight_decay=0.0)])
def test_schedule_free_adamw(hparams):
  reference = ref.AdamWScheduleFree(**hparams)

  def check_eval_params(params, state, ref_params, keys):
    # The eval point x, from a state nested in a chain, equals the reference's after eval().
    x = recent.schedule_free_eval_params(params, (optax.EmptyState(), state))
    for k, want in zip(keys, reference.eval_params(ref_params)):
      np.testing.assert_allclose(np.asarray(x[k]), want, rtol=1e-4, atol=1e-6)

  _compare("schedule_free_adamw", hparams, reference, check=check_eval_params)


def test_schedule_free_adamw_with_schedule():
  lrs = [0.05 * (1 - t / STEPS) for t in range(STEPS)]
  _compare("schedule_free_adamw", dict(SF, lr=optax.linear_schedule(0.05, 0.0, STEPS)),
           ref.AdamWScheduleFree(**SF), lrs=lrs)


# --- Prodigy ----------------------------------------------------------------------------------

PRODIGY = dict(lr=0.5, betas=(0.85, 0.99), eps=1e-4, weight_decay=0.1, d0=1e-3)
# Gradients with a common drift: steps along -g make progress, so d grows (11-22 times in 25
# steps); pure noise would leave d at d0.
DRIFT = 1.0


@pytest.mark.parametrize("flags", [
    dict(),
    dict(decouple=False, use_bias_correction=True),
    dict(safeguard_warmup=True, growth_rate=1.5, betas=(0.0, 0.99)),
    dict(beta3=0.9, d_coef=2.0, eps=0.1),  # eps large enough that d·eps in the denominator counts
])
def test_prodigy(flags):
  hparams = dict(PRODIGY, **flags)
  reference = ref.Prodigy(**hparams)
  _compare("prodigy", hparams, reference, drift=DRIFT)
  assert reference.d > 2 * hparams["d0"]


def test_prodigy_zero_lr_steps_change_nothing():
  # Warmup from lr 0: the reference returns early, d and its step count k stay put.
  lrs = [0.0, 0.0] + [0.5] * (STEPS - 2)
  schedule = lambda count: jnp.where(count < 2, 0.0, 0.5)
  hparams = dict(PRODIGY, use_bias_correction=True)  # bias correction reads k
  reference = ref.Prodigy(**hparams)
  _compare("prodigy", dict(hparams, lr=schedule), reference, lrs=lrs, drift=DRIFT)
  assert reference.k == STEPS - 2


def test_optax_prodigy_matches_with_bias_correction():
  # The docstring's claim: optax.contrib.prodigy is the reference with bias correction on.
  hparams = dict(PRODIGY, use_bias_correction=True)
  tx = optax.contrib.prodigy(0.5, betas=(0.85, 0.99), eps=1e-4, estim_lr0=1e-3,
                             weight_decay=0.1)
  params64, grads = _data(SHAPES, drift=DRIFT)
  keys = sorted(SHAPES)
  reference = ref.Prodigy(**hparams)
  ref_params = [params64[k].copy() for k in keys]
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params64)
  state = tx.init(params)

  @jax.jit
  def step(params, state, g):
    updates, state = tx.update(g, state, params)
    return optax.apply_updates(params, updates), state

  for t in range(STEPS):
    reference.step(ref_params, [grads[t][k] for k in keys])
    params, state = step(params, state, jax.tree.map(jnp.float32, grads[t]))
  for k, want in zip(keys, ref_params):
    np.testing.assert_allclose(np.asarray(params[k]), want, rtol=1e-4, atol=1e-6)


# --- SOAP -------------------------------------------------------------------------------------

# Statistics full-rank from the first gradient (square matrix, conv kernel whose every mode is
# smaller than the product of the others), so the first eigenbasis is unique; 'wide' has a dim
# over max_precond_dim=8, left unpreconditioned.
SOAP_SHAPES = {"w": (4, 4), "conv": (2, 3, 2, 2), "wide": (3, 12), "b": (3,), "s": (1,)}
SOAP = dict(lr=0.01, betas=(0.9, 0.95), shampoo_beta=0.8, eps=1e-6, weight_decay=0.1,
            precondition_frequency=3, max_precond_dim=8)


@pytest.mark.parametrize("flags", [dict(), dict(shampoo_beta=-1, normalize_grads=True),
                                   dict(correct_bias=False, precondition_1d=True)])
def test_soap(flags):
  hparams = dict(SOAP, **flags)
  shapes = dict(SOAP_SHAPES)
  if flags.get("precondition_1d"):
    del shapes["b"]  # a vector's g·gᵀ is rank 1: its first eigenbasis is not unique
  _compare("soap", hparams, ref.SOAP(**hparams), shapes=shapes)


def test_soap_first_step_leaves_params():
  tx = registry.create("soap", **SOAP)
  params = {"w": jnp.ones((4, 4))}
  updates, _ = tx.update({"w": jnp.full((4, 4), 2.0)}, tx.init(params), params)
  assert float(jnp.max(jnp.abs(updates["w"]))) == 0.0


def test_soap_state_saves_and_restores_with_orbax(tmp_path):
  # build()'s weight-decay groups: the 1-D group's SOAP preconditions nothing, and its state must
  # still save (Orbax refuses zero-size arrays), restore, and step on exactly as before.
  tx = optax.partition({"decay": registry.create("soap", **SOAP),
                        "no_decay": registry.create("soap", **dict(SOAP, weight_decay=0.0))},
                       weight_decay_labels)
  params64, grads = _data(SOAP_SHAPES)
  as32 = lambda tree: jax.tree.map(jnp.float32, tree)

  @jax.jit
  def step(params, state, g):
    updates, state = tx.update(g, state, params)
    return optax.apply_updates(params, updates), state

  params = as32(params64)
  state = tx.init(params)
  for t in range(4):
    params, state = step(params, state, as32(grads[t]))
  assert all(x.size for x in jax.tree.leaves(state))
  checkpointer = ocp.StandardCheckpointer()
  saved = serialization.to_state_dict(state)
  checkpointer.save(tmp_path / "opt_state", saved)
  checkpointer.wait_until_finished()
  restored = checkpointer.restore(tmp_path / "opt_state",
                                  jax.tree.map(ocp.utils.to_shape_dtype_struct, saved))
  restored = serialization.from_state_dict(state, restored)
  resumed = params
  for t in range(4, 12):  # across basis refreshes (every 3 steps)
    params, state = step(params, state, as32(grads[t]))
    resumed, restored = step(resumed, restored, as32(grads[t]))
  for a, b in zip(jax.tree.leaves((params, state)), jax.tree.leaves((resumed, restored))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --- SAM --------------------------------------------------------------------------------------

# L(p) = Σ_leaves ½ Σ a·(p - c)², so ∇L(p) = a·(p - c) per entry.
A = {"w": np.linspace(0.5, 3.0, 15).reshape(5, 3), "b": np.array([1.0, 2.0, 4.0])}
C = {"w": np.full((5, 3), 0.3), "b": np.array([-1.0, 0.5, 2.0])}
P = {"w": np.arange(15.0).reshape(5, 3) / 7 - 1, "b": np.array([0.7, -0.2, 1.5])}


def _loss(params, scale):
  return scale * sum(0.5 * jnp.sum(A[k] * (params[k] - C[k]) ** 2) for k in params)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_gradient_on_quadratic(adaptive):
  rho = 0.3
  g = {k: A[k] * (P[k] - C[k]) for k in P}
  if adaptive:  # ASAM: e = rho · p² g / ‖|p| g‖
    norm = np.sqrt(sum(np.sum((np.abs(P[k]) * g[k]) ** 2) for k in P))
    e = {k: rho * P[k] ** 2 * g[k] / norm for k in P}
  else:  # SAM: e = rho · g / ‖g‖
    norm = np.sqrt(sum(np.sum(g[k] ** 2) for k in P))
    e = {k: rho * g[k] / norm for k in P}
  want = {k: A[k] * (P[k] + e[k] - C[k]) for k in P}

  keys = sorted(P)
  ref_e = ref.sam_perturbation([g[k] for k in keys], [P[k] for k in keys], rho, adaptive)
  for k, r in zip(keys, ref_e):
    np.testing.assert_allclose(r, e[k], rtol=1e-12)

  params = jax.tree.map(jnp.float32, P)
  e_w = recent.sam_perturbation(jax.tree.map(jnp.float32, g), params, rho, adaptive)
  loss, grads = jax.jit(lambda p: recent.sam_gradient(_loss, p, 2.0, rho=rho,
                                                      adaptive=adaptive))(params)
  np.testing.assert_allclose(float(loss), 2.0 * sum(0.5 * np.sum(A[k] * (P[k] - C[k]) ** 2)
                                                    for k in P), rtol=1e-6)
  for k in keys:
    np.testing.assert_allclose(np.asarray(e_w[k]), e[k], rtol=1e-5, atol=1e-7)
    # Scaling the loss by 2 doubles the gradient but not e_w (it is normalised).
    np.testing.assert_allclose(np.asarray(grads[k]), 2.0 * want[k], rtol=1e-5, atol=1e-6)
  assert max(np.max(np.abs(want[k] - g[k])) for k in keys) > 1e-2  # the perturbation matters


def test_sam_wraps_an_optimizer():
  tx = registry.create("sam", base_optimizer="sgd", rho=0.2, adaptive=True, lr=0.1, momentum=0.9)
  assert (tx.rho, tx.adaptive) == (0.2, True)
  params = jax.tree.map(jnp.float32, P)
  state = tx.init(params)
  ref_params = {k: v.copy() for k, v in P.items()}
  buf = {k: np.zeros_like(v) for k, v in P.items()}
  for _ in range(3):
    _, g = recent.sam_gradient(_loss, params, 1.0, rho=tx.rho, adaptive=tx.adaptive)
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
    # Reference: SAM.second_step restores p and steps torch SGD(momentum=0.9) with that gradient.
    e = _sam_e_np(ref_params, 0.2, True)
    for k in P:  # torch's first buffer is the gradient itself: 0.9·0 + g
      buf[k] = 0.9 * buf[k] + A[k] * (ref_params[k] + e[k] - C[k])
      ref_params[k] = ref_params[k] - 0.1 * buf[k]
  for k in P:
    np.testing.assert_allclose(np.asarray(params[k]), ref_params[k], rtol=1e-5, atol=1e-6)


def _sam_e_np(params, rho, adaptive):
  keys = sorted(params)
  g = [A[k] * (params[k] - C[k]) for k in keys]
  return dict(zip(keys, ref.sam_perturbation(g, [params[k] for k in keys], rho, adaptive)))


@pytest.mark.parametrize("name,hparams", [("schedule_free_adamw", SF), ("prodigy", PRODIGY),
                                          ("soap", SOAP)])
def test_state_maps_like_params(name, hparams):
  # The sharding code maps parameter specs over the state: only param-shaped leaves get them.
  tx = registry.create(name, **hparams)
  params = jax.tree.map(jnp.float32, _data(SOAP_SHAPES)[0])
  specs = optax.tree_map_params(tx, lambda p: jnp.full(p.shape, 7.0), tx.init(params),
                                transform_non_params=lambda _: None)
  leaves = jax.tree.leaves(specs)
  assert leaves and all(float(x.reshape(-1)[0]) == 7.0 for x in leaves)
