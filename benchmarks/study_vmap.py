"""Coupling-study cells one by one vs vmapped as one program (jaxlab.study.engine).

  python benchmarks/study_vmap.py [--cells=8] [--steps=25] [--backbones=small_cnn,tiny_vit,tiny_mixer]

For each backbone, C cells of the mini study (configs/bocb/mini_digits.py: its backbone sizes and
batch, AdamW, C learning rates log-spaced over 1e-4..1e-2, seed 0) are trained
  * one by one: C programs of one cell each, the plain jitted step with the optimizer built from
    Python numbers (what C runs of `jaxlab.train` compile and execute);
  * vmapped: one program, the C cells computed together by one vmapped step (`cells_at_once=0`);
  * looped: one program whose compiled step is called once per cell, on that cell's slice of
    the stacked state (`cells_at_once=1`);
`cells_at_once="auto"` picks one of the last two by platform (jaxlab.study.spec.cells_at_once);
the row it picks here is marked. Batches are fetched beforehand and kept on the device, so the
figures are compile and step times, not input pipeline. Prints per backbone: compile seconds,
ms per cell-step (steady state, after the first step) and the total wall time of the C cells,
the speedups, and the machine's load average before and after (the machine may be shared).
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

import jax
import numpy as np
from absl import app, flags, logging

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxlab.config import load_config_file
from jaxlab.study import engine, groups, spec

_CELLS = flags.DEFINE_integer("cells", 8, "Cells (learning rates) per backbone.")
_STEPS = flags.DEFINE_integer("steps", 25, "Train steps per cell.")
_BACKBONES = flags.DEFINE_list("backbones", ["small_cnn", "tiny_vit", "tiny_mixer"], "Backbones.")


def _study(backbone: str):
  study = load_config_file(str(ROOT / "configs" / "bocb" / "mini_digits.py"))
  study.backbones = {backbone: dict(study.backbones[backbone])}
  lrs = tuple(float(x) for x in np.logspace(-4, -2, _CELLS.value))
  study.optimizers = {"adamw": {"hparams": {"weight_decay": 0.05}, "grid": {"lr": lrs}}}
  study.budget.total_steps = _STEPS.value
  return study


def _timed_run(program: engine.GroupProgram, batches) -> tuple[float, float]:
  """(seconds of init + first step, i.e. compilation; seconds of the remaining steps)."""
  start = time.perf_counter()
  state = program.initial_state()
  state, metrics = program.step(state, batches[0])
  jax.block_until_ready(metrics)
  compiled = time.perf_counter()
  for batch in batches[1:]:
    state, metrics = program.step(state, batch)
  jax.block_until_ready(metrics)
  return compiled - start, time.perf_counter() - compiled


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  platform = jax.devices()[0].platform
  auto = spec.cells_at_once("auto", platform)
  print(f"{jax.device_count()} device(s): {jax.devices()[0].device_kind}; {_CELLS.value} cells x "
        f"{_STEPS.value} steps per backbone; load average {_load()}")
  print("| backbone | mode | compile s | ms / cell-step | total s | speedup (steady) | speedup (total) |")
  print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
  for backbone in _BACKBONES.value:
    study = _study(backbone)
    cells = spec.cells(study)
    vmapped = groups.plan(study, cells)
    assert len(vmapped) == 1 and vmapped[0].traced == ("lr",), vmapped
    alone = [groups.Group(c.backbone, c.optimizer, (c,), (), vmapped=False) for c in cells]
    program = engine.GroupProgram(study, vmapped[0])
    stream = program.batches(0)
    batches = [next(stream) for _ in range(_STEPS.value)]
    cell_steps = len(cells) * (_STEPS.value - 1)

    compile_one = steady_one = 0.0
    for group in alone:
      c, s = _timed_run(engine.GroupProgram(study, group), batches)
      compile_one, steady_one = compile_one + c, steady_one + s
    one_ms, total_one = 1e3 * steady_one / cell_steps, compile_one + steady_one
    print(f"| {backbone} | one by one | {compile_one:.1f} | {one_ms:.2f} | {total_one:.1f} | | |")
    for mode, at_once in (("vmapped", 0), ("looped", 1)):
      study.cells_at_once = str(at_once)  # the config declares "auto": a str field
      mode += " (auto)" if at_once == auto else ""
      compiled, steady = _timed_run(engine.GroupProgram(study, vmapped[0]), batches)
      ms, total = 1e3 * steady / cell_steps, compiled + steady
      print(f"| {backbone} | {mode} | {compiled:.1f} | {ms:.2f} | {total:.1f} | "
            f"{one_ms / ms:.2f} | {total_one / total:.2f} |", flush=True)
  print(f"load average at the end: {_load()}")


def _load() -> str:
  return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
  app.run(main)
