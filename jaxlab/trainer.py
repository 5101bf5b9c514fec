"""The training loop, top to bottom: mesh → data → model → state → steps → loop (log, eval, checkpoint).

It does not know what is learned: the task (`jaxlab.tasks`) supplies the model, the loss and the
eval metrics. Call `train_and_evaluate(config, workdir)` with a validated config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import pathlib
import signal
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from jaxlab import config as config_lib
from jaxlab import data, input_size, optim, sharding, stages, steps, tasks
from jaxlab.checkpoint import BestCheckpoint, Checkpointer, run_info
from jaxlab.metrics.progress import Progress
from jaxlab.metrics.writers import MetricWriter
from jaxlab.models.vq.frozen import Frozen
from jaxlab.preemption import Preempted, PreemptionWatch
from jaxlab.state import ModelGraph, TrainState
from jaxlab.workdir import check_space
from jaxlab.workdir import claim as claim_workdir

# Fault injection for the resume tests: the process SIGKILLs itself before this step, or right
# after starting the asynchronous save of this step (while Orbax is still writing it).
_KILL_AT_STEP_ENV = "JAXLAB_SIGKILL_AT_STEP"
_KILL_DURING_SAVE_ENV = "JAXLAB_SIGKILL_DURING_SAVE_OF_STEP"


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything static about a run, built without allocating the model or compiling anything."""
  mesh: jax.sharding.Mesh
  batch_sharding: jax.sharding.NamedSharding
  info: data.DatasetInfo
  total_steps: int
  task: tasks.Task
  optimizer: optim.Optimizer
  graph: ModelGraph
  init_state: Callable[[], TrainState]
  abstract_state: TrainState  # jax.ShapeDtypeStruct leaves carrying their target shardings
  state_sharding: TrainState
  # (tasks.RunModel, abstract module) for each module built from config.model: where a weights
  # file given as init_from.path goes.
  run_models: tuple = ()


def to_global(batch: dict[str, np.ndarray], batch_sharding) -> dict[str, jax.Array]:
  """Per-process numpy batch -> global jax.Arrays split over the batch axes of the mesh."""
  return {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in batch.items()}


def _note(message: str) -> None:
  if jax.process_index() == 0:
    print(message, file=sys.stderr, flush=True)


def _warn(message: str) -> None:
  _note(f"warning: {message}")


class NonFiniteError(RuntimeError):
  """A non-finite loss or gradient with `config.nonfinite = 'stop'`."""


def _window_scalars(history: list[dict]) -> dict[str, float]:
  """Means over the logging window (host values); `skipped` (non-finite updates) is a count and
  `lr` the learning rate of the logged step (a mean would hide the warmup's peak)."""
  scalars = {k: float(np.mean([h[k] for h in history])) for k in history[0]}
  scalars["skipped"] = float(sum(h["skipped"] for h in history))
  if "lr" in scalars:
    scalars["lr"] = float(history[-1]["lr"])
  return scalars


def _check_finite(history: list[dict], first_step: int, mode: str) -> None:
  """With mode 'stop': raise at the first dropped (non-finite) update since `first_step`."""
  if mode != "stop":
    return
  for offset, skipped in enumerate(h["skipped"] for h in history):
    if skipped:
      raise NonFiniteError(f"non-finite loss or gradient at step {first_step + offset}: the update "
                           "was dropped and training stopped (config.nonfinite='skip' goes on)")


def compile_steps(setup: Setup, grad_accum_steps: int = 1):
  """The jitted train and eval steps with explicit shardings; the train state is donated."""
  replicated = sharding.replicated(setup.mesh)
  train_step = jax.jit(
      steps.make_train_step(setup.task, setup.graph, setup.optimizer, grad_accum_steps),
      in_shardings=(setup.state_sharding, setup.batch_sharding),
      out_shardings=(setup.state_sharding, replicated), donate_argnums=0)
  eval_step = jax.jit(steps.make_eval_step(setup.task, setup.graph),
                      in_shardings=(setup.state_sharding, setup.batch_sharding), out_shardings=replicated)
  return train_step, eval_step


def evaluate(eval_step, state, config, batch_sharding) -> dict[str, float]:
  """One pass over the eval split; sums from every batch, divided by the number of examples."""
  local_batch = (config.eval_batch_size or config.batch_size) // jax.process_count()
  totals = None
  for batch in data.eval_batches(config.dataset, local_batch_size=local_batch):
    sums = eval_step(state, to_global(batch, batch_sharding))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = max(float(totals.pop("count")), 1.0)
  return {f"eval/{k}": float(v) / count for k, v in totals.items()}


def check_averaging(optimizer: optim.Optimizer, abstract_model) -> None:
  """An average of the model state would also hold a second copy of frozen submodules (a stage-1
  model under a stage-2 one): refuse in one line instead of doubling their memory."""
  if optimizer.average_model_state and jax.tree.leaves(nnx.state(abstract_model, Frozen)):
    raise config_lib.ConfigError(
        "config.optim.averaging.average_model_state=True would average a second copy of the "
        "model's frozen submodules; set it to False (the trained parameters are still averaged)")


def build(config: ml_collections.ConfigDict, devices=None) -> Setup:
  """Mesh, data description, task, optimizer and the sharded abstract state of a config.

  `devices`: the devices of the mesh (default: all of them).
  """
  # ---- Mesh ------------------------------------------------------------------------------------
  mesh = sharding.make_mesh(config.mesh, devices)
  # The CLI validates the whole config; library callers get at least this one-line check.
  config_lib.check_batch_sizes(config, mesh.shape["data"] * mesh.shape["fsdp"], jax.process_count())
  replicated = sharding.replicated(mesh)

  # ---- Data ------------------------------------------------------------------------------------
  info = data.dataset_info(config.dataset)
  total_steps = config_lib.total_steps(config, info.num_train)

  # ---- Model, task, optimizer (abstract: nothing is allocated or compiled yet) ------------------
  task = tasks.from_config(config.task)
  optimizer = optim.build(config.optim, total_steps=total_steps,
                          steps_per_epoch=max(1, info.num_train // config.batch_size))
  try:
    tasks.require_abilities(task, optimizer.needs.task_abilities,
                            f"optimizer '{config.optim.name}'")
  except ValueError as e:
    raise config_lib.ConfigError(f"config.optim.name: {e}") from None
  param_key, state_key = jax.random.split(jax.random.PRNGKey(config.seed))
  build_model = functools.partial(tasks.make_model, task, config.model, info, config.compute_dtype,
                                  param_key)
  located = []
  abstract_model = nnx.eval_shape(functools.partial(build_model, located=located))
  nodes = dict(nnx.iter_graph(abstract_model))
  run_models = tuple((where, nodes[where.path]) for where in located)
  check_averaging(optimizer, abstract_model)

  def init_state() -> TrainState:
    return TrainState.create(build_model(), optimizer.tx, state_key, optimizer.average_model_state)

  # ---- Shardings ---------------------------------------------------------------------------------
  try:
    abstract_state = jax.eval_shape(init_state)
  except optim.ParamGroupError as e:  # group patterns can only be checked against the params
    raise config_lib.ConfigError(str(e)) from None
  param_shardings = sharding.params_sharding(
      abstract_state.params, sharding.logical_axes(nnx.state(abstract_model, nnx.Param)), mesh,
      config.sharding)
  state_sharding = TrainState(
      step=replicated, params=param_shardings,
      model_state=jax.tree.map(lambda _: replicated, abstract_state.model_state),
      opt_state=sharding.opt_state_sharding(optimizer.tx, abstract_state.opt_state, param_shardings,
                                            mesh),
      rng=replicated,
      averaged_model_state=jax.tree.map(lambda _: replicated, abstract_state.averaged_model_state))
  abstract_state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                abstract_state, state_sharding)
  return Setup(mesh, sharding.batch_sharding(mesh), info, total_steps, task, optimizer,
               ModelGraph.of(abstract_model), init_state, abstract_state, state_sharding, run_models)


def check_input_size(setup: Setup, model_name: str) -> None:
  """One line, before anything compiles, when the images are too small for the model (checked
  before training; a restored run had images that fit)."""
  def forward(params, model_state, images):
    batch = {"image": images, "label": jnp.zeros((1,), jnp.int32), "mask": jnp.ones((1,), jnp.float32)}
    return setup.task.evaluate(setup.graph.merge(params, model_state, train=False), batch)

  image_shape = tuple(setup.info.image_shape)
  side = input_size.smallest_square(
      forward, (setup.abstract_state.params, setup.abstract_state.model_state), image_shape)
  if side is not None:
    raise config_lib.ConfigError(
        f"config.dataset.image_size: model '{model_name}' reduces {image_shape[0]}x{image_shape[1]} "
        f"images to an empty feature map; it needs at least {side}x{side} (set "
        f"config.dataset.image_size={side} or larger)")


def initial_state(setup: Setup) -> TrainState:
  """A freshly initialised state, created directly in its shards (never whole on one device)."""
  return jax.jit(setup.init_state, out_shardings=setup.state_sharding)()


def evaluate_all(eval_step, state, config, batch_sharding) -> dict[str, float]:
  """`eval/*` for the trained params and, with weight averaging, `eval_ema/*` for the average.

  An optimizer that trains at one point and is evaluated at another (`optim.evaluation_params`,
  e.g. a schedule-free average) is evaluated there in `eval/*` (with the batch statistics
  collected at the training point).
  """
  metrics = evaluate(eval_step, state.replace(params=optim.evaluation_params(state.params, state.opt_state)),
                     config, batch_sharding)
  average = optim.averaged_params(state.opt_state)
  if average is not None:
    model_state = state.model_state if state.averaged_model_state is None else state.averaged_model_state
    ema_metrics = evaluate(eval_step, state.replace(params=average, model_state=model_state), config,
                           batch_sharding)
    metrics.update({k.replace("eval/", "eval_ema/"): v for k, v in ema_metrics.items()})
  return metrics


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                       devices=None) -> dict[str, float]:
  """Trains (resuming from the workdir's latest checkpoint if any); returns the final eval metrics.

  `devices`: the devices of the mesh (default: all of them). Raises Preempted after saving when
  SIGTERM arrives; the same call resumes.
  """
  workdir = pathlib.Path(workdir)
  setup = build(config, devices)
  check_input_size(setup, config.model.name)
  batch_sharding, total_steps = setup.batch_sharding, setup.total_steps
  init_plan = None
  if config.init_from.path:  # checked (a weights file: converted) before anything is written
    init_plan = stages.plan(setup.abstract_state, config.init_from, setup.run_models)

  with contextlib.ExitStack() as cleanup:  # closed in reverse order, also on errors and preemption
    # ---- State: resume from the latest checkpoint, or initialise (from another run's if asked) ----
    # Everything that can refuse the run (another run's checkpoints, an unreadable init_from
    # source) happens before anything is written to the workdir besides its lock.
    cleanup.callback(claim_workdir(workdir, jax.process_index()).close)  # one run per workdir
    check_space(workdir, sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(setup.abstract_state)),
                config.keep_checkpoints,  # a checkpoint every checkpoint_every_steps, and the last
                writes=-(-config.total_steps // config.checkpoint_every_steps))
    info = run_info(config)
    checkpointer = Checkpointer(workdir / "checkpoints", every_steps=config.checkpoint_every_steps,
                                keep=config.keep_checkpoints, run_info=info)
    cleanup.callback(checkpointer.close)
    checkpointer.check_same_run(setup.abstract_state, config)
    state = checkpointer.restore_latest(setup.abstract_state, report=_warn)
    latest = None if state is None else int(jax.device_get(state.step))
    if state is None:
      state = initial_state(setup)
      if init_plan is not None:
        state = stages.load(state, setup.abstract_state, init_plan)
        _note(f"initialised {len(init_plan.mapping)} arrays from {init_plan.directory}")
    if jax.process_index() == 0:
      (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
    best = None
    if config.checkpoint_best.metric:
      best = BestCheckpoint(workdir / "best_checkpoint", metric=config.checkpoint_best.metric,
                            mode=config.checkpoint_best.mode, run_info=info)
      cleanup.callback(best.close)
    start_step = int(jax.device_get(state.step))

    # ---- Steps -----------------------------------------------------------------------------------
    train_step, eval_step = compile_steps(setup, config.grad_accum_steps)

    # ---- Loop ------------------------------------------------------------------------------------
    writer = MetricWriter(workdir, resume_step=start_step)
    cleanup.callback(writer.close)
    progress = Progress(total_steps=total_steps, start_step=start_step, batch_size=config.batch_size)
    cleanup.callback(progress.close)
    if latest is not None:
      progress.write(f"resumed from step {latest} of {checkpointer.directory}")
    preemption = PreemptionWatch()
    cleanup.callback(preemption.close)
    batches = data.train_batches(config.dataset, local_batch_size=config.batch_size // jax.process_count(),
                                 seed=config.seed, start_step=start_step)
    kill_at = int(os.environ.get(_KILL_AT_STEP_ENV, "-1"))
    kill_in_save = int(os.environ.get(_KILL_DURING_SAVE_ENV, "-1"))
    history, history_start, eval_metrics, skipped_total = [], start_step, {}, 0
    window_start, window_time = start_step, time.perf_counter()
    for step in range(start_step + 1, total_steps + 1):
      if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
      state, metrics = train_step(state, to_global(next(batches), batch_sharding))
      history.append(metrics)
      scalars = None
      stop = preemption.should_stop(step)
      log_due = step % config.log_every_steps == 0 or step == total_steps
      save_due = stop or step % config.checkpoint_every_steps == 0 or step == total_steps
      if log_due or save_due:
        # One fetch serves both: no save (periodic or on preemption) past an update that should
        # have stopped the run, and the logged window means.
        history = jax.device_get(history)
        _check_finite(history, history_start + 1, config.nonfinite)
      if log_due:
        skipped_total += int(sum(h["skipped"] for h in history))
        scalars = {("lr" if k == "lr" else f"train/{k}"): v for k, v in _window_scalars(history).items()}
        history, history_start = [], step
        # Fetching the metrics waited for the device, so this is throughput, not dispatch rate.
        # The first window after (re)start includes compilation.
        now = time.perf_counter()
        scalars["perf/steps_per_sec"] = (step - window_start) / (now - window_time)
        scalars["perf/images_per_sec"] = scalars["perf/steps_per_sec"] * config.batch_size
        writer.write(step, scalars)
      if step % config.eval_every_steps == 0 or step == total_steps:
        eval_metrics = evaluate_all(eval_step, state, config, batch_sharding)
        writer.write(step, eval_metrics)
        if best is not None:
          best.maybe_save(step, state, eval_metrics)
        scalars = {**(scalars or {}), **eval_metrics}
      if scalars is not None:  # restart the throughput window after logging and eval
        window_start, window_time = step, time.perf_counter()
      if checkpointer.maybe_save(step, state, force=stop or step == total_steps) and step == kill_in_save:
        os.kill(os.getpid(), signal.SIGKILL)
      progress.update(step, scalars)
      if stop:
        raise Preempted(step, checkpointer.directory)

    if not eval_metrics:  # resumed at the end: nothing was trained, still report the result
      eval_metrics = evaluate_all(eval_step, state, config, batch_sharding)
    if skipped_total:
      _warn(f"{skipped_total} of {total_steps - start_step} updates since step {start_step} were "
            "dropped for a non-finite loss or gradient (config.nonfinite='skip')")
    return eval_metrics
