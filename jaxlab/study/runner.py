"""Runs a study: plan groups of unfinished cells, train each group's program, write the tables.

Workdir layout:

  study.json                the study config as run
  results.jsonl / .csv      one row per finished cell (see results.py)
  diagnostics.jsonl         one row per finished cell and weight matrix (see spectra.py)
  groups/GROUP/group.json   the group's cells and traced keys
  groups/GROUP/checkpoints  Orbax checkpoints of the stacked train state (the last one is kept:
                            it holds the trained weights of every cell of the group)
  groups/GROUP/evals.jsonl  eval top-1 and loss of every cell at every eval step
  groups/GROUP/time.json    wall seconds spent on the group up to each checkpointed step

Restarting the same command skips cells that have a results row and resumes every other group
from its latest checkpoint (the eval history and wall time are cut back to that step), so no
finished step is trained twice. Cells are keyed by id, so a study whose grid was extended runs
only the new cells.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import sys
import time

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from jaxlab import config as config_lib
from jaxlab import data
from jaxlab.checkpoint import Checkpointer
from jaxlab.study import engine, groups, results, spec, spectra
from jaxlab.workdir import claim as claim_workdir


def _read_json(path: pathlib.Path, default):
  return json.loads(path.read_text(encoding="utf-8")) if path.exists() else default


def _write_json(path: pathlib.Path, value) -> None:
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
  tmp.replace(path)


def _evals_until(path: pathlib.Path, step: int) -> list[dict]:
  """The group's eval records up to `step`; the file is cut back to them."""
  kept = [r for r in (results.read_rows(path, key=("step",)) if step else []) if r["step"] <= step]
  path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
  return kept


def diagnostics_rows(program: engine.GroupProgram, state) -> list[dict]:
  """Layer-wise alpha / entropy / norm of every real cell's trained weight matrices, depth order."""
  order = program.forward_order()
  rows = []
  for cell, params in zip(program.group.cells, program.cell_params(state)):
    layer_index = 0
    for path in order:
      weight = engine.param_by_path(params, path)
      found = spectra.layer_diagnostics(weight)
      if found is None:
        continue
      rows.append({"cell_id": cell.id, "backbone": cell.backbone, "optimizer": cell.optimizer,
                   "layer_index": layer_index, "layer": path, "shape": list(weight.shape), **found})
      layer_index += 1
  return rows


def _cell_rows(program: engine.GroupProgram, evals: list[dict], seconds: float) -> list[dict]:
  group = program.group
  accuracy = np.asarray([r["accuracy"] for r in evals])  # [evals, cells]
  best = accuracy.argmax(0)
  rows = []
  for i, (cell, config) in enumerate(zip(group.cells, program.configs)):
    rows.append({
        "cell_id": cell.id, "backbone": cell.backbone, "optimizer": cell.optimizer,
        "lr": float(config.optim.lr), "seed": cell.seed, "grid": cell.grid_dict,
        "hparams": dict(config.optim.hparams),
        "final_top1": float(accuracy[-1, i]), "best_top1": float(accuracy[best[i], i]),
        "best_step": int(evals[best[i]]["step"]), "final_loss": float(evals[-1]["loss"][i]),
        "steps": program.total_steps, "skipped_updates": int(evals[-1]["skipped"][i]),
        "wall_time_s": seconds / len(group.cells), "program_wall_time_s": seconds,
        "program_cells": len(group.cells), "vmapped": group.vmapped,
        "traced": list(group.traced), "group": group.id})
  return rows


def run_group(study: ml_collections.ConfigDict, group: groups.Group, workdir: pathlib.Path,
              bar: tqdm, devices=None) -> list[dict]:
  """Trains (or resumes) one group and returns its cells' result rows (also written to disk)."""
  gdir = workdir / "groups" / group.id
  gdir.mkdir(parents=True, exist_ok=True)
  _write_json(gdir / "group.json", {"backbone": group.backbone, "optimizer": group.optimizer,
                                    "cells": [c.id for c in group.cells],
                                    "traced": list(group.traced), "vmapped": group.vmapped})
  start_time = time.perf_counter()
  program = engine.GroupProgram(study, group, devices)
  config, total, num_real = program.config, program.total_steps, program.inputs.num_real
  with contextlib.ExitStack() as cleanup:
    checkpointer = Checkpointer(gdir / "checkpoints", every_steps=config.checkpoint_every_steps,
                                keep=1)
    cleanup.callback(checkpointer.close)
    state = checkpointer.restore_latest(program.abstract_state, report=bar.write)
    start = 0 if state is None else int(jax.device_get(state.step)[0])
    if state is None:
      state = program.initial_state()
    else:
      bar.write(f"{group.name}: resumed from step {start}")
    evals = _evals_until(gdir / "evals.jsonl", start)
    times = {int(k): v for k, v in _read_json(gdir / "time.json", {}).items() if int(k) <= start}
    spent_before = times.get(start, 0.0)
    bar.update(num_real * start)
    bar.set_postfix_str(group.name)

    window = []
    skipped = np.asarray(evals[-1]["skipped"]) if evals else np.zeros(num_real)
    batches = program.batches(start)
    for step in range(start + 1, total + 1):
      state, metrics = program.step(state, next(batches))
      window.append(metrics)
      if step % config.eval_every_steps == 0 or step == total:
        window = jax.device_get(window)
        skipped = skipped + np.sum([m["skipped"][:num_real] for m in window], axis=0)
        train_loss = np.mean([m["loss"][:num_real] for m in window], axis=0)
        found = program.evaluate(state)
        record = {"step": step, "accuracy": found["accuracy"].tolist(),
                  "loss": found["loss"].tolist(), "train_loss": train_loss.tolist(),
                  "skipped": skipped.tolist()}
        results.append_rows(gdir / "evals.jsonl", [record])
        evals.append(record)
        window = []
        bar.set_postfix_str(f"{group.name} step {step}: best top-1 {max(record['accuracy']):.4f}")
      if checkpointer.maybe_save(step, state, force=step == total):
        times[step] = spent_before + time.perf_counter() - start_time
        _write_json(gdir / "time.json", times)
      bar.update(num_real)
    checkpointer.wait()
    if not evals or evals[-1]["step"] != total:  # restored at the end without its eval record
      found = program.evaluate(state)
      evals.append({"step": total, "accuracy": found["accuracy"].tolist(),
                    "loss": found["loss"].tolist(), "skipped": skipped.tolist()})
    seconds = spent_before + time.perf_counter() - start_time
    if study.get("diagnostics", True):
      results.append_rows(workdir / results.DIAGNOSTICS_JSONL, diagnostics_rows(program, state))
    rows = _cell_rows(program, evals, seconds)
  results.append_rows(workdir / results.RESULTS_JSONL, rows)  # marks the cells finished
  return rows


def run_study(study: ml_collections.ConfigDict, workdir: str | pathlib.Path, *, devices=None,
              show_progress: bool = True) -> list[dict]:
  """Runs (or resumes) every unfinished cell; returns the whole results table."""
  spec.check(study)
  workdir = pathlib.Path(workdir)
  with contextlib.ExitStack() as cleanup:
    cleanup.callback(claim_workdir(workdir).close)  # one study per workdir at a time
    (workdir / "study.json").write_text(study.to_json_best_effort(indent=2) + "\n", encoding="utf-8")
    all_cells = spec.cells(study)
    done = {r["cell_id"] for r in results.read_rows(workdir / results.RESULTS_JSONL)}
    todo = [c for c in all_cells if c.id not in done]
    plan = groups.plan(study, todo)
    first = spec.cell_config(study, all_cells[0])
    steps_per_cell = config_lib.total_steps(first, data.dataset_info(first.dataset).num_train)
    bar = tqdm(total=len(all_cells) * steps_per_cell, initial=len(done) * steps_per_cell,
               unit="cell-step", dynamic_ncols=True, mininterval=1.0, file=sys.stderr,
               disable=not show_progress)
    cleanup.callback(bar.close)
    bar.write(f"study: {spec.describe(study)}; {len(done)} finished, {len(todo)} to run in "
              f"{len(plan)} programs")
    for index, group in enumerate(plan, 1):
      bar.set_description(f"program {index}/{len(plan)}")
      rows = run_group(study, group, workdir, bar, devices)
      best = max(rows, key=lambda r: r["final_top1"])
      per_cell = ", ".join(group.traced) or "seed"
      bar.write(f"done {group.name}: best final top-1 {best['final_top1']:.4f} "
                f"(lr {best['lr']:g}), {rows[0]['program_wall_time_s']:.1f} s"
                f"{', one program over ' + per_cell if len(group.cells) > 1 else ''}")
    table = results.read_rows(workdir / results.RESULTS_JSONL)
    order = {c.id: i for i, c in enumerate(all_cells)}
    table.sort(key=lambda r: order.get(r["cell_id"], len(order)))
    results.write_csv(table, workdir / results.RESULTS_CSV)
  return table
