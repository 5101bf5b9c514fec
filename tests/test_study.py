"""The study engine on a tiny study: end to end, vmapped = cell by cell, resume, analysis."""

import csv
import json
import math

import chex
import jax
import ml_collections
import numpy as np
import pytest

from jaxlab.checkpoint import Checkpointer
from jaxlab.config import ConfigError, base_config, load_config_file
from jaxlab.data import default_dataset_config
from jaxlab.study import analysis, engine, groups, report, results, runner, spec

TOTAL_STEPS = 6


def _tiny_study() -> ml_collections.ConfigDict:
  """16 cells of one program: SGD, lr x weight decay (both traced) x 2 seeds (own data orders);
  on 8 devices, 2 cells each, one at a time ("auto" on a CPU = 1: two calls per step)."""
  study = ml_collections.ConfigDict()
  recipe = base_config()
  recipe.batch_size = 32
  recipe.eval_every_steps = 3
  recipe.checkpoint_every_steps = 3
  recipe.optim.warmup_steps = 2
  recipe.optim.weight_decay_exclude_1d = False  # one parameter group: a smaller program to compile
  study.recipe = recipe
  study.dataset = default_dataset_config()
  study.budget = ml_collections.ConfigDict({"total_steps": TOTAL_STEPS, "num_epochs": None})
  study.backbones = ml_collections.ConfigDict({"tiny_mixer": {"dim": 8, "depth": 1}})
  study.optimizers = ml_collections.ConfigDict(
      {"sgd": {"hparams": {"momentum": 0.9},
               "grid": {"lr": (0.05, 0.1, 0.2, 0.4), "weight_decay": (0.0, 0.01)}}})
  study.grid = ml_collections.ConfigDict()
  study.seeds = (0, 1)
  study.vmap = True
  study.cells_at_once = "auto"
  study.max_cells_per_program = 0
  study.diagnostics = True
  return study


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """The tiny study (16 cells sharded over the 8 simulated devices), interrupted after its first
  checkpoint (step 3 of 6) and run again: returns the study, its workdir, its rows, its group,
  and how many steps the second run trained."""
  workdir = tmp_path_factory.mktemp("study")
  study = _tiny_study()
  trained = []
  step = engine.GroupProgram.step

  def step_until_crash(self, state, batch):
    trained.append(1)
    if len(trained) == 5:  # after the checkpoint of step 3, before the one of step 6
      raise KeyboardInterrupt
    return step(self, state, batch)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(engine.GroupProgram, "step", step_until_crash)
    with pytest.raises(KeyboardInterrupt):
      runner.run_study(study, workdir, show_progress=False)
  assert not (workdir / results.RESULTS_JSONL).exists()
  trained.clear()
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(engine.GroupProgram, "step",
                  lambda self, state, batch: trained.append(1) or step(self, state, batch))
    rows = runner.run_study(study, workdir, show_progress=False)
  (group,) = groups.plan(study, spec.cells(study))
  return study, workdir, rows, group, len(trained)


def test_study_writes_one_row_per_cell_and_the_report(finished):
  study, workdir, rows, group, _ = finished
  assert group.traced == ("lr", "weight_decay") and len(group.cells) == 16
  assert [r["cell_id"] for r in rows] == [c.id for c in spec.cells(study)]
  for row in rows:
    assert row["steps"] == TOTAL_STEPS and row["vmapped"] and row["program_cells"] == 16
    assert 0.0 <= row["final_top1"] <= row["best_top1"] <= 1.0
  assert len({r["final_loss"] for r in rows}) == 16  # every cell trained differently
  with open(workdir / "results.csv", newline="") as f:
    table = list(csv.DictReader(f))
  header = list(table[0])
  assert header[:10] == ["backbone", "optimizer", "lr", "seed", "final_top1", "best_top1",
                         "best_step", "final_loss", "steps", "wall_time_s"]
  # One column per optimizer keyword, grid and fixed ones alike.
  assert header[10:12] == ["momentum", "weight_decay"] and "hparams" not in header
  assert [(float(t["lr"]), float(t["weight_decay"]), float(t["momentum"]), int(t["seed"]))
          for t in table] == [(r["lr"], r["grid"]["weight_decay"], 0.9, r["seed"]) for r in rows]
  diagnostics = results.read_rows(workdir / results.DIAGNOSTICS_JSONL, key=("cell_id", "layer"))
  # Per cell, every matrix in depth order: patch embedding, token MLP, channel MLP, head.
  layers = [d["layer"] for d in analysis.layer_table(diagnostics, rows[0]["cell_id"])]
  assert layers == ["stem/proj/kernel", "blocks/0/mlp_tokens/fc1/kernel",
                    "blocks/0/mlp_tokens/fc2/kernel", "blocks/0/mlp_channels/fc1/kernel",
                    "blocks/0/mlp_channels/fc2/kernel", "head/kernel"]
  path = report.build(workdir, workdir / "report")
  text = path.read_text()
  assert "| tiny_mixer |" in text and "heatmap.png" in text
  for name in ("heatmap.png", "boxplots.png", "layers.png", "results.csv"):
    assert (workdir / "report" / name).stat().st_size > 0


def test_interrupted_group_resumed_from_its_checkpoint(finished):
  _, workdir, _, group, trained_after_restart = finished
  assert trained_after_restart == TOTAL_STEPS - 3  # steps 4..6 only: nothing trained twice
  evals = [json.loads(l)["step"] for l in (workdir / "groups" / group.id / "evals.jsonl").open()]
  assert evals == [3, 6]


def test_vmapped_cells_equal_cells_trained_one_by_one(finished):
  """The resumed vmapped program's final weights = each cell trained alone by the plain step."""
  study, workdir, rows, group, _ = finished
  index = 15  # the last cell (device 7, second chunk): lr 0.4, weight decay 0.01, seed 1
  cell = group.cells[index]
  assert (cell.grid_dict, cell.seed) == ({"lr": 0.4, "weight_decay": 0.01}, 1)
  alone = engine.GroupProgram(study, groups.Group(cell.backbone, cell.optimizer, (cell,), (),
                                                  vmapped=False))
  state = engine.run_steps(alone, alone.initial_state(), 0)
  checkpointer = Checkpointer(workdir / "groups" / group.id / "checkpoints", every_steps=1, keep=1)
  try:  # the group program is only traced here (its abstract state), not compiled
    vmapped = checkpointer.restore(TOTAL_STEPS, engine.GroupProgram(study, group).abstract_state)
  finally:
    checkpointer.close()
  chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], state.params),
                              jax.tree.map(lambda x: x[index], vmapped.params), rtol=1e-4, atol=1e-6)
  row = next(r for r in rows if r["cell_id"] == cell.id)
  assert float(alone.evaluate(state)["accuracy"][0]) == pytest.approx(row["final_top1"], abs=1e-3)


def test_restarted_study_skips_finished_cells(finished, monkeypatch):
  study, workdir, rows, _, _ = finished

  def no_program(*args, **kwargs):
    raise AssertionError("a finished cell was trained again")

  monkeypatch.setattr(engine, "GroupProgram", no_program)
  assert runner.run_study(study, workdir, show_progress=False) == rows


def test_sam_cells_run_vmapped_over_rho_as_they_train_alone(tmp_path):
  """SAM's step need comes from its registry entry: in a study its rho is a traced grid value,
  and a vmapped SAM cell ends where the same cell trained alone by the plain step ends."""
  study = _tiny_study()
  study.budget.total_steps = 3
  study.seeds = (0,)
  study.optimizers = ml_collections.ConfigDict(
      {"sam": {"hparams": {"base_optimizer": "sgd", "momentum": 0.9},
               "grid": {"lr": (0.1,), "rho": (0.0, 0.05, 0.5)}}})
  (group,) = groups.plan(study, spec.cells(study))
  assert group.traced == ("rho",)
  rows = runner.run_study(study, tmp_path, show_progress=False)
  assert len(rows) == 3 and all(math.isfinite(r["final_loss"]) for r in rows)
  checkpointer = Checkpointer(tmp_path / "groups" / group.id / "checkpoints", every_steps=1, keep=1)
  vmapped = checkpointer.restore(3, engine.GroupProgram(study, group).abstract_state)  # traced only
  checkpointer.close()
  cell = group.cells[2]
  alone = engine.GroupProgram(study, groups.Group(cell.backbone, cell.optimizer, (cell,), (),
                                                  vmapped=False))
  state = engine.run_steps(alone, alone.initial_state(), 0)
  chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], state.params),
                              jax.tree.map(lambda x: x[2], vmapped.params), rtol=1e-4, atol=1e-6)
  # rho reaches the gradient: the cells differ only in it, and so do their weights.
  first, last = (jax.tree.leaves(jax.tree.map(lambda x, i=i: x[i], vmapped.params)) for i in (0, 2))
  assert any(not np.allclose(a, b) for a, b in zip(first, last))


def test_untraceable_keys_split_the_program():
  study = _tiny_study()
  # timm's Lamb branches on `weight_decay != 0` in Python: that key cannot be traced.
  study.optimizers = ml_collections.ConfigDict(
      {"lamb": {"grid": {"lr": (1e-3, 1e-2), "weight_decay": (0.0, 0.1)}}})
  plan = groups.plan(study, spec.cells(study))
  assert [g.traced for g in plan] == [("lr",), ("lr",)]
  assert [{c.grid_dict["weight_decay"] for c in g.cells} for g in plan] == [{0.0}, {0.1}]
  study.vmap = False
  assert len(groups.plan(study, spec.cells(study))) == 8


def test_bad_study_configs_fail_in_one_line():
  study = _tiny_study()
  study.optimizers = ml_collections.ConfigDict({"adamw": {"grid": {"lr": (1e-3,), "momentun": (0.9,)}}})
  with pytest.raises(ConfigError, match="unknown hyperparameter.*momentun.*valid"):
    spec.check(study)
  study = _tiny_study()
  study.backbones = ml_collections.ConfigDict({"no_such_net": {}})
  with pytest.raises(ConfigError, match="unknown model 'no_such_net'"):
    spec.check(study)


def test_cells_at_once_values():
  assert [spec.cells_at_once(v, "cpu") for v in ("auto", "0", 3, "2")] == [1, 0, 3, 2]
  assert spec.cells_at_once("auto", "gpu") == 0 and spec.cells_at_once("auto", "tpu") == 0
  for bad in ("fast", -1, 1.5, None):
    with pytest.raises(ConfigError, match="cells_at_once must be 'auto' or a number >= 0"):
      spec.cells_at_once(bad, "cpu")


def test_paper_protocols_expand_to_400_cells():
  for name in ("cifar100_classic", "cifar100_modern"):
    study = load_config_file(f"configs/bocb/{name}.py")
    spec.check(study)
    assert len(spec.backbones(study)) == 20 and len(spec.optimizers(study)) == 20
    assert study.recipe.batch_size == 100 and study.budget.num_epochs == 200


def _row(backbone, optimizer, lr, top1, seed=0):
  return {"cell_id": f"{backbone}/{optimizer}/{lr}/{seed}", "backbone": backbone,
          "optimizer": optimizer, "grid": {"lr": lr}, "seed": seed, "final_top1": top1}


def test_robustness_measures_on_a_hand_table():
  rows = [_row("a", "sgd", 0.1, 0.80), _row("a", "sgd", 0.3, 0.70),
          _row("a", "adamw", 1e-3, 0.60), _row("a", "adamw", 1e-3, 0.70, seed=1),
          _row("a", "adamw", 3e-3, 0.50),
          _row("a", "lion", 1e-4, 0.90), _row("a", "lion", 3e-4, 0.30),
          _row("b", "sgd", 0.1, 0.40)]
  pairs = analysis.pairs(rows)
  # adamw: lr 1e-3 is the mean of its two seeds (0.65), better than 3e-3 (0.50).
  assert pairs[("a", "adamw")].best == pytest.approx(0.65)
  assert pairs[("a", "adamw")].best_point == {"lr": 1e-3}
  assert pairs[("a", "adamw")].spread == pytest.approx(0.15)
  assert pairs[("a", "lion")].spread == pytest.approx(0.60)
  a = analysis.backbones(rows)["a"]
  # Bests over the grid: sgd 0.80, adamw 0.65, lion 0.90.
  assert a.mean == pytest.approx((0.80 + 0.65 + 0.90) / 3)
  assert a.std == pytest.approx(np.std([0.80, 0.65, 0.90]))
  assert a.range == pytest.approx(0.25)
  assert (a.best_optimizer, a.worst_optimizer, a.optimizers) == ("lion", "adamw", 3)
  b = analysis.backbones(rows)["b"]
  assert (b.mean, b.std, b.range) == (pytest.approx(0.40), 0.0, 0.0)
  assert analysis.best_cells(rows)[("a", "adamw")] == "a/adamw/0.001/0"


def test_report_mean_alpha_leaves_out_layers_without_a_fit():
  rows = [{**_row("a", "sgd", 0.1, 0.8), "group": "g", "program_wall_time_s": 60.0, "steps": 10}]
  diagnostics = [{"cell_id": rows[0]["cell_id"], "layer_index": i, "alpha": alpha}
                 for i, alpha in enumerate([2.0, math.nan, 4.5])]
  text = report.markdown(rows, diagnostics)
  assert "| a | 3.25 |" in text  # (2.0 + 4.5) / 2; the layer with too few eigenvalues is left out
