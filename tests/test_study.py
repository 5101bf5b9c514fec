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
  # (2.0 + 4.5) / 2; the layer with too few eigenvalues is left out; 2.0 is in the 2-4 band.
  assert "| a | 3.25 (1/2 in 2-4) |" in text


# ---- the report's content and figures, from synthetic tables (no training) --------------------

_WEIGHT_DECAY = {"sgd": 5e-4, "adamw": 0.05}
_LRS = {"sgd": (0.01, 0.1, 1.0), "adamw": (1e-4, 1e-3, 1e-2)}
_NOISE = (-0.004, 0.0, 0.004)  # per seed: sample std 0.004 (0.4 points)


def _study_rows(means: dict[tuple[str, str], tuple[float, float, float]], seeds=(0, 1, 2)):
  """Rows of 3 lrs x seeds per (backbone, optimizer), top-1 = the lr's mean + a seed offset."""
  rows = []
  for (backbone, optimizer), by_lr in means.items():
    for lr, mean in zip(_LRS[optimizer], by_lr):
      for seed in seeds:
        rows.append({
            "cell_id": f"{backbone}/{optimizer}/lr={lr:g}/seed={seed}", "backbone": backbone,
            "optimizer": optimizer, "lr": lr, "seed": seed, "grid": {"lr": lr},
            "hparams": {"weight_decay": _WEIGHT_DECAY[optimizer]},
            "final_top1": mean + _NOISE[seed % 3], "steps": 100, "group": f"{backbone}/{optimizer}",
            "program_wall_time_s": 30.0})
  return rows


# cnn: 95% with both optimizers (a 0.5-point gap, within noise); vit: 90% with adamw, 70% with
# sgd, whose best lr (0.01) is the lowest of its grid.
_COUPLED_VIT = {("cnn", "sgd"): (0.90, 0.950, 0.93), ("cnn", "adamw"): (0.90, 0.945, 0.93),
                ("vit", "sgd"): (0.70, 0.60, 0.50), ("vit", "adamw"): (0.80, 0.90, 0.85)}


def test_report_defines_its_terms_and_states_test_size_and_weight_decay():
  text = report.markdown(_study_rows(_COUPLED_VIT), [], eval_examples=360)
  definitions = text.split("## Definitions")[1].split("\n## ")[0]
  for term in ("**BOCB**", "backbone-optimizer coupling bias", "**Metric**", "**mean ± std (n)**",
               "**Best lr", "**Mean / Std / Range**", "**Beyond seed noise**",
               "**Edge of the grid**", "**alpha**"):
    assert term in definitions, term
  assert "The test split has 360 images, so one image is 0.28 points" in definitions
  assert "| sgd | 0.01, 0.1, 1 | 0.0005 | L2: wd·p added to the gradient |" in text
  assert "| adamw | 0.0001, 0.001, 0.01 | 0.05 | decoupled" in text
  assert "**Weight decay differs by optimizer**" in text
  same = _study_rows(_COUPLED_VIT)
  for row in same:
    row["hparams"] = {"weight_decay": 0.01}
  assert "Weight decay differs" not in report.markdown(same, [])
  assert "Weight decay is the same value for every optimizer" in report.markdown(same, [])


def test_report_tables_show_mean_std_and_n_with_the_best_lr_on_the_seed_mean():
  rows = _study_rows(_COUPLED_VIT)
  # One lucky seed at vit/adamw lr=1e-2 (0.85 + 0.12) beats every seed of lr=1e-3 (0.90 +- 0.004)
  # but not its mean: the best lr is chosen on the seed mean.
  lucky = next(r for r in rows if r["cell_id"] == "vit/adamw/lr=0.01/seed=0")
  lucky["final_top1"] = 0.97
  pair = analysis.pairs(rows)[("vit", "adamw")]
  assert pair.best_point == {"lr": 1e-3}
  assert pair.best_stat == analysis.Stat(pytest.approx(0.90), pytest.approx(0.004), 3)
  text = report.markdown(rows, [])
  assert "| vit | 70.00 ± 0.40 (n=3) | 90.00 ± 0.40 (n=3) |" in text  # sgd, adamw
  assert "**lr=0.001: 90.00 ± 0.40 (n=3)**" in text
  # The Robustness table: the best and worst optimizer with their seed statistics.
  assert "adamw: 90.00 ± 0.40 (n=3) | sgd: 70.00 ± 0.40 (n=3) | beyond seed noise" in text


def test_report_warns_of_every_best_lr_at_an_edge_of_its_grid():
  text = report.markdown(_study_rows(_COUPLED_VIT), [])
  warnings = [l for l in text.splitlines() if l.startswith("- WARNING:")]
  assert warnings == ["- WARNING: vit / sgd: best lr=0.01 is the lowest value of the grid "
                      "(0.01, 0.1, 1)."]
  means = {**_COUPLED_VIT, ("cnn", "adamw"): (0.90, 0.91, 0.95)}  # best at the highest lr
  warnings = [l for l in report.markdown(_study_rows(means), []).splitlines()
              if l.startswith("- WARNING:")]
  assert "- WARNING: cnn / adamw: best lr=0.01 is the highest value of the grid " \
         "(0.0001, 0.001, 0.01)." in warnings and len(warnings) == 2
  # Only ordered (numeric) grid keys have edges: a switch or a tuple has none.
  assert analysis.grid_values([{"lr": 0.3, "nesterov": True, "betas": [0.9, 0.99]},
                               {"lr": 0.1, "nesterov": False, "betas": [0.9, 0.95]}]) == {
                                   "lr": [0.1, 0.3]}
  inside = {k: (0.5, 0.9, 0.6) for k in _COUPLED_VIT}
  assert "Every pair's best grid point is inside its grid." in report.markdown(
      _study_rows(inside), [])


def _conclusion(text: str) -> str:
  return text.split("## Conclusion\n\n")[1].split("\n")[0]


def test_conclusion_is_computed_from_the_numbers():
  found = _conclusion(report.markdown(_study_rows(_COUPLED_VIT), [], eval_examples=360))
  assert found.startswith("The most optimizer-sensitive backbone is vit: each optimizer at its "
                          "best lr, its top-1 goes from 70.00 ± 0.40 % (n=3) with sgd to "
                          "90.00 ± 0.40 % (n=3) with adamw, a gap of 20.00 points ≈ 72 test "
                          "images (beyond seed noise, Welch p < 0.001).")
  assert "The least optimizer-sensitive backbone is cnn" in found
  assert "a gap of 0.50 points ≈ 2 test images (within seed noise, Welch p = 0.2" in found
  assert "So vit depends on the optimizer beyond seed noise (coupling bias), while for cnn" in found
  assert "1 of 4 best grid points lie at an edge" in found and "for vit the worst" in found
  # Other numbers, another conclusion: now the CNN needs SGD and the ViT is robust.
  swapped = {("cnn", "sgd"): (0.90, 0.95, 0.93), ("cnn", "adamw"): (0.60, 0.75, 0.70),
             ("vit", "sgd"): (0.80, 0.90, 0.85), ("vit", "adamw"): (0.80, 0.899, 0.85)}
  found = _conclusion(report.markdown(_study_rows(swapped), []))
  assert found.startswith("The most optimizer-sensitive backbone is cnn")
  assert "So cnn depends on the optimizer beyond seed noise" in found and "for vit the" in found
  # Every gap within noise: the report says so instead of ranking noise.
  close = {k: (0.5, 0.9 + 0.002 * i, 0.6) for i, k in enumerate(_COUPLED_VIT)}
  found = _conclusion(report.markdown(_study_rows(close), []))
  assert "No backbone's gap exceeds seed noise over 3 seeds" in found
  # One seed: nothing can be tested.
  found = _conclusion(report.markdown(_study_rows(_COUPLED_VIT, seeds=(0,)), []))
  assert "With one seed per cell no gap can be told apart from seed noise" in found
  assert "(not testable with one seed)" in found


def test_welch_p_value_and_seed_statistics():
  a, b = analysis.stat([0.90, 0.91, 0.92]), analysis.stat([0.80, 0.81, 0.82])
  assert (a.mean, a.std, a.n) == (pytest.approx(0.91), pytest.approx(0.01), 3)  # ddof=1
  assert analysis.welch_p(a, b) == pytest.approx(2.552e-4, rel=1e-3)  # t = 12.25, df = 4
  assert analysis.welch_p(a, analysis.stat([0.905, 0.915, 0.92])) > 0.5
  assert math.isnan(analysis.welch_p(a, analysis.stat([0.8])))
  assert math.isnan(analysis.stat([0.8]).std)


def _diagnostics(rows):
  names = {"cnn": ["conv1/kernel", "conv2/kernel", "head/kernel"],
           "vit": ["patch_embed/proj/kernel", "blocks/0/attn/qkv/kernel", "head/kernel"]}
  return [{"cell_id": r["cell_id"], "layer_index": i, "layer": name, "alpha": 2.0 + i,
           "entropy": 0.9, "norm": 3.0}
          for r in rows for i, name in enumerate(names[r["backbone"]])]


def test_figures_have_axis_titles_legends_layer_names_and_the_alpha_band(tmp_path):
  from jaxlab.study import plots  # pylint: disable=import-outside-toplevel
  rows = _study_rows(_COUPLED_VIT)
  fig = plots.heatmap(rows, tmp_path / "h.png")
  ax, bar = fig.axes
  assert ax.get_xlabel().startswith("optimizer") and ax.get_ylabel() == "backbone"
  assert "(%)" in bar.get_ylabel() and "mean over seeds" in bar.get_ylabel()
  assert "90.0\n±0.4" in [t.get_text() for t in ax.texts]  # vit / adamw, mean and std

  fig = plots.boxplots(rows, tmp_path / "b.png")
  panels = [a for a in fig.axes if a.get_title()]
  assert [a.get_title() for a in panels] == ["cnn", "vit"]
  assert all(a.get_xlabel() == "optimizer" for a in panels)
  assert panels[0].get_ylabel() == "final top1 (%)"
  legend = [t.get_text() for t in fig.legends[0].get_texts()]
  assert {"mean", "lowest lr of the grid", "highest lr of the grid"} <= set(legend)
  # 9 runs per box (3 lrs x 3 seeds): every run is drawn as a point over its box.
  assert [len(c.get_offsets()) for c in panels[0].collections] == [9, 9]

  fig = plots.layer_curves(rows, _diagnostics(rows), tmp_path / "l.png")
  alpha_cnn, alpha_vit = fig.axes[0], fig.axes[1]
  assert alpha_cnn.get_ylabel() == "power-law alpha"
  bottom_vit = fig.axes[-1]
  assert [t.get_text() for t in bottom_vit.get_xticklabels()] == [
      "patch_embed/proj", "blocks/0/attn/qkv", "head"]
  (band,) = [p for p in alpha_vit.patches if p.get_label() == plots.ALPHA_BAND_LABEL]
  assert band.get_window_extent() is not None
  ys = band.get_path().transformed(band.get_patch_transform()).vertices[:, 1]
  assert (min(ys), max(ys)) == (2.0, 4.0)
  legend = [t.get_text() for t in fig.legends[0].get_texts()]
  assert legend == ["sgd", "adamw", plots.ALPHA_BAND_LABEL]
  for name in ("h.png", "b.png", "l.png"):
    assert (tmp_path / name).stat().st_size > 0
