"""One group of cells as one compiled program: stacked train states, a vmapped step, shardings.

Every leaf of the group's TrainState gets a leading cell axis. The train step is the trainer's own
(`jaxlab.steps.make_train_step`), built inside `jax.vmap` from per-cell inputs: the traced grid
values (`lr` through the schedule, optimizer keywords through `optim.build(..., hparams=...)`)
and the cell's seed-derived state. One `jax.jit` compiles it once for the whole group, and the cell
axis is sharded over the devices (a 1-D mesh `cells`, `shard_map`; the group is padded with copies
of its last cell to fill every device, and the copies' results are dropped). Each call of the step
computes `cells_at_once` of every device's cells (0 = all of them), vmapped, reading and writing
their slice of the stacked state in place (the state is donated): with 1, the cells run one after
another through the same compiled step, with no vmapped (grouped) convolutions. ("auto": 0 on
accelerators, 1 on CPUs; see `spec.cells_at_once`.) The loop over chunks is Python's, one call
of the compiled step per chunk, on purpose: inside an XLA loop (`lax.map` over the cells) the
convolutions of XLA:CPU are far slower than as top-level ops (measured, small_cnn, 2 cells, one
at a time: 2.3 s per step in a `lax.map`, 0.064 s as two calls), while a call costs well under a
millisecond.

Data: each cell sees the batches its own training run would see (`data.train_batches` with the
cell's seed, so a cell trained alone by `jaxlab.train` draws the same ones). Cells that share a
seed share the batch: the step takes one batch per distinct seed and each cell picks its own;
with a single seed the batch is broadcast (not copied per cell).

A group with `vmapped=False` (a study with `vmap=False`) holds one cell and runs the plain jitted
step with the optimizer built from Python numbers, as `jaxlab.train` would: the reference the
vmapped program is tested and benchmarked against.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator

import jax
import jax.extend
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxlab import config as config_lib
from jaxlab import data, optim, steps, tasks
from jaxlab.optim.build import schedule_from_config
from jaxlab.state import ModelGraph, TrainState
from jaxlab.study import spec
from jaxlab.study.groups import Group
from jaxlab.study.spec import cell_config

CELLS_AXIS = "cells"


@dataclasses.dataclass(frozen=True)
class CellInputs:
  """Per-cell inputs of a group, padded to a multiple of the devices: numpy arrays [C]."""
  seeds: np.ndarray  # int32
  seed_index: np.ndarray  # int32: which of the distinct seeds' batches the cell takes
  traced: dict[str, np.ndarray]  # float32 grid values by key
  num_real: int  # the first num_real cells are the group's; the rest are padding


def _stack(values: list[float], padded: int) -> np.ndarray:
  return np.asarray(values + [values[-1]] * (padded - len(values)), np.float32)


class GroupProgram:
  """Init, train and eval functions of one group, jitted with the cell axis sharded."""

  def __init__(self, study: ml_collections.ConfigDict, group: Group, devices=None):
    self.group = group
    self.configs = [cell_config(study, cell) for cell in group.cells]
    config = self.config = self.configs[0]
    config_lib.validate(config, 1, 1)
    self.info = data.dataset_info(config.dataset)
    self.total_steps = config_lib.total_steps(config, self.info.num_train)
    self.steps_per_epoch = max(1, self.info.num_train // config.batch_size)
    self.task = tasks.from_config(config.task)
    self._unit_schedule = None
    if "lr" in group.traced:  # the schedule's shape; each cell scales it by its own peak
      unit = config.optim.copy_and_resolve_references()
      unit.lr = 1.0
      self._unit_schedule = schedule_from_config(unit, total_steps=self.total_steps,
                                                 steps_per_epoch=self.steps_per_epoch)
    self.static_hparams = dict(config.optim.hparams)
    needs = optim.entry(config.optim.name).needs(self.static_hparams)
    tasks.require_abilities(self.task, needs.task_abilities, f"optimizer '{config.optim.name}'")
    self.graph = ModelGraph.of(nnx.eval_shape(lambda: self._build_model(jax.random.PRNGKey(0))))
    devices = list(jax.devices() if devices is None else devices)
    # 0: a device's cells in one vmapped computation; k: k at a time, one call per chunk.
    self.cells_at_once = spec.cells_at_once(study.get("cells_at_once", 0), devices[0].platform)

    # ---- Cell axis over the devices --------------------------------------------------------------
    num_cells = len(group.cells)
    used = min(len(devices), num_cells) if group.vmapped else 1
    self.cells_per_device = math.ceil(num_cells / used)
    self.chunk_size = self.cells_per_device
    if group.vmapped and 0 < self.cells_at_once < self.cells_per_device:
      self.chunk_size = self.cells_at_once
      self.cells_per_device = math.ceil(self.cells_per_device / self.chunk_size) * self.chunk_size
    padded = used * self.cells_per_device
    self.mesh = Mesh(np.asarray(devices[:used]), (CELLS_AXIS,))
    self.cell_sharding = NamedSharding(self.mesh, PartitionSpec(CELLS_AXIS))
    self.replicated = NamedSharding(self.mesh, PartitionSpec())
    seeds = [c.seed for c in group.cells]
    self.distinct_seeds = sorted(set(seeds))
    self.inputs = CellInputs(
        seeds=_stack(seeds, padded).astype(np.int32),
        seed_index=_stack([self.distinct_seeds.index(s) for s in seeds], padded).astype(np.int32),
        traced={k: _stack([float(c.grid_dict[k]) for c in group.cells], padded)
                for k in group.traced},
        num_real=num_cells)
    self._compile()

  # ---- One cell, written for vmap: every per-cell value is an argument ---------------------------
  def _build_model(self, param_key):
    return tasks.make_model(self.task, self.config.model, self.info, self.config.compute_dtype,
                            param_key)

  def _optimizer(self, traced: dict):
    """The cell's optimizer; `traced` values are arrays inside the vmapped program."""
    schedule = None
    if "lr" in traced:
      peak, unit = traced["lr"], self._unit_schedule
      schedule = lambda count: peak * unit(count)
    hparams = {**self.static_hparams, **{k: v for k, v in traced.items() if k != "lr"}}
    return optim.build(self.config.optim, total_steps=self.total_steps,
                       steps_per_epoch=self.steps_per_epoch, schedule=schedule, hparams=hparams)

  def _init_cell(self, seed, traced) -> TrainState:
    # The trainer's key derivation: a cell starts where `jaxlab.train` with its seed starts.
    param_key, state_key = jax.random.split(jax.random.PRNGKey(seed))
    optimizer = self._optimizer(traced)
    return TrainState.create(self._build_model(param_key), optimizer.tx, state_key,
                             optimizer.average_model_state)

  def _train_cell(self, state, batch, traced):
    step = steps.make_train_step(self.task, self.graph, self._optimizer(traced),
                                 self.config.grad_accum_steps)
    return step(state, batch)

  def _eval_cell(self, state, batch):
    params = optim.evaluation_params(state.params, state.opt_state)  # e.g. a schedule-free average
    return steps.make_eval_step(self.task, self.graph)(state.replace(params=params), batch)

  # ---- The group's programs ----------------------------------------------------------------------
  def _compile(self):
    cells, replicated = self.cell_sharding, self.replicated
    shared_batch = len(self.distinct_seeds) == 1

    if self.group.vmapped:
      init = jax.vmap(self._init_cell)

      def train_cell(state, batches, seed_index, traced):
        if shared_batch:  # one batch for every cell: broadcast, not copied
          return self._train_cell(state, batches, traced)
        return self._train_cell(state, jax.tree.map(lambda x: x[seed_index], batches), traced)

      def train_chunk(state, batches, seed_index, traced, start):
        chunk = self._chunk(start, (state, seed_index, traced))
        new, metrics = jax.vmap(train_cell, in_axes=(0, None, 0, 0))(
            chunk[0], batches, chunk[1], chunk[2])
        state = jax.tree.map(lambda x, u: jax.lax.dynamic_update_slice_in_dim(x, u, start, 0),
                             state, new)
        return state, metrics

      def eval_chunk(state, batch, start):
        return jax.vmap(self._eval_cell, in_axes=(0, None))(self._chunk(start, state), batch)

      specs = PartitionSpec(CELLS_AXIS), PartitionSpec()
      train = jax.shard_map(train_chunk, mesh=self.mesh, out_specs=specs[0],
                            in_specs=(specs[0], specs[1], specs[0], specs[0], specs[1]))
      evaluate = jax.shard_map(eval_chunk, mesh=self.mesh, out_specs=specs[0],
                               in_specs=(specs[0], specs[1], specs[1]))
    else:  # one cell, no vmap: the unstacked state through the plain step
      def add_axis(tree):
        return jax.tree.map(lambda x: x[None], tree)

      def first(tree):
        return jax.tree.map(lambda x: x[0], tree)

      def init(seeds, traced):
        return add_axis(self._init_cell(seeds[0], first(traced)))

      def train(state, batches, seed_index, traced, start):
        del seed_index, start
        return add_axis(self._train_cell(first(state), batches, first(traced)))

      def evaluate(state, batch, start):
        del start
        return add_axis(self._eval_cell(first(state), batch))

    self.init = jax.jit(init, in_shardings=(cells, cells), out_shardings=cells)
    self.train_step = jax.jit(train, in_shardings=(cells, replicated, cells, cells, replicated),
                              out_shardings=(cells, cells), donate_argnums=0)
    self.eval_step = jax.jit(evaluate, in_shardings=(cells, replicated, replicated),
                             out_shardings=cells)
    # Traced once: its shapes restore checkpoints; it is compiled only when a group starts afresh.
    self._init_trace = self.init.trace(self.inputs.seeds, self.inputs.traced)
    self.abstract_state = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=cells), self._init_trace.out_info)

  def _chunk(self, start, tree):
    """Cells [start, start + cells_at_once) of this device's block of `tree` (inside shard_map)."""
    return jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, start, self.chunk_size, 0), tree)

  def _in_chunks(self, call) -> list:
    """`call(start)` for each chunk of every device's cells: per-cell outputs back in cell order."""
    outputs = [call(np.int32(start)) for start in range(0, self.cells_per_device, self.chunk_size)]
    if len(outputs) == 1:
      return outputs[0]
    used = self.mesh.devices.size

    def cell_order(*chunks):  # [chunk][device * k + j] -> [device * per_device + chunk * k + j]
      stacked = jnp.stack(chunks).reshape(len(chunks), used, self.chunk_size)
      return stacked.transpose(1, 0, 2).reshape(-1)

    return jax.tree.map(cell_order, *outputs)

  def initial_state(self) -> TrainState:
    return self._init_trace.lower().compile()(self.inputs.seeds, self.inputs.traced)

  def batches(self, start_step: int) -> Iterator:
    """Device batches from `start_step` on: one per distinct seed (stacked), or the only one."""
    streams = [data.train_batches(self.config.dataset, local_batch_size=self.config.batch_size,
                                  seed=seed, start_step=start_step, process_index=0, process_count=1)
               for seed in self.distinct_seeds]
    for per_seed in zip(*streams):
      if len(per_seed) == 1:
        batch = per_seed[0]
      else:
        batch = {k: np.stack([b[k] for b in per_seed]) for k in per_seed[0]}
      yield jax.device_put(batch, self.replicated)

  def step(self, state: TrainState, batch) -> tuple[TrainState, dict]:
    """One train step of every cell: one call, or one per chunk of `cells_at_once` cells."""

    def call(start):
      nonlocal state
      state, found = self.train_step(state, batch, self.inputs.seed_index, self.inputs.traced, start)
      return found

    metrics = self._in_chunks(call)
    return state, metrics

  def evaluate(self, state: TrainState) -> dict[str, np.ndarray]:
    """Eval metrics per real cell: {'accuracy': [C], 'loss': [C]} over the whole eval split."""
    totals = None
    batch_size = self.config.eval_batch_size or self.config.batch_size
    for batch in data.eval_batches(self.config.dataset, local_batch_size=batch_size,
                                   process_index=0, process_count=1):
      batch = jax.device_put(batch, self.replicated)
      sums = self._in_chunks(lambda start, batch=batch: self.eval_step(state, batch, start))
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    count = np.maximum(totals.pop("count"), 1.0)
    return {k: (v / count)[:self.inputs.num_real] for k, v in totals.items()}

  def cell_params(self, state: TrainState) -> list[dict]:
    """Host copies of each real cell's trained parameters."""
    params = jax.device_get(state.params)
    return [jax.tree.map(lambda x, i=i: np.asarray(x[i]), params)
            for i in range(self.inputs.num_real)]

  def forward_order(self) -> list[str]:
    """Parameter paths ('blocks/0/attn/qkv/kernel') in the order the forward pass first uses them.

    Module attributes are stored sorted by name, not in creation order; the order of use is the
    network's depth order, which the layer-wise plots need.
    """
    state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), self.abstract_state)
    image = jax.ShapeDtypeStruct((1, *self.info.image_shape), jnp.float32)
    flat, _ = jax.tree_util.tree_flatten_with_path(state.params)
    paths = ["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path) for path, _ in flat]

    def forward(params, model_state, x):
      return self.graph.merge(params, model_state, train=False)(x)

    closed = jax.make_jaxpr(forward)(state.params, state.model_state, image)
    position = {var: i for i, var in enumerate(closed.jaxpr.invars[:len(paths)])}
    first_use: dict[int, int] = {}
    for index, equation in enumerate(closed.jaxpr.eqns):
      for var in equation.invars:
        if isinstance(var, jax.extend.core.Var) and var in position:
          first_use.setdefault(position[var], index)
    order = sorted(range(len(paths)), key=lambda i: first_use.get(i, len(closed.jaxpr.eqns)))
    return [paths[i] for i in order]


def param_by_path(params: dict, path: str):
  node = params
  for part in path.split("/"):
    node = node[part] if part in node else node[int(part)]
  return node


def run_steps(program: GroupProgram, state: TrainState, start_step: int,
              on_step: Callable[[int, TrainState, dict], TrainState] | None = None) -> TrainState:
  """Trains from `start_step` to the end; `on_step(step, state, metrics)` after each step."""
  batches = program.batches(start_step)
  for step in range(start_step + 1, program.total_steps + 1):
    state, metrics = program.step(state, next(batches))
    if on_step is not None:
      on_step(step, state, metrics)
  return state
