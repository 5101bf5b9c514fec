"""The study's Markdown report with its figures, rebuilt from the tables in the workdir.

  python -m jaxlab.study.report --workdir=DIR [--out=DIR] [--metric=final_top1]

Reads DIR/results.jsonl, DIR/diagnostics.jsonl and DIR/study.json (written by `python -m
jaxlab.study`) and writes report.md, heatmap.png, boxplots.png, layers.png and results.csv
(rewritten from the JSONL table) to --out (default: the workdir); with another --out it also
copies the JSONL tables and study.json there, so the report directory stands alone.

The report states its result: definitions of every measure, a conclusion paragraph computed from
the numbers (`conclusion`), mean +- std over seeds, warnings for best grid points at an edge of
their grid, and each optimizer's weight decay.
"""

from __future__ import annotations

import json
import math
import pathlib
import shutil

from jaxlab.study import analysis, plots, results, spectra

FIGURES = {"heatmap": "heatmap.png", "boxplots": "boxplots.png", "layers": "layers.png"}
STUDY_JSON = "study.json"

# How each optimizer of the mini and paper protocols applies `weight_decay` (jaxlab.optim): the
# same number means different things, so the report says which.
DECAY_FORMS = {
    "sgd": "L2: wd·p added to the gradient",
    "adamw": "decoupled: p ← p − lr·wd·p",
    "lion": "decoupled: p ← p − lr·wd·p",
    "lamb": "wd·p added to the Adam direction, before the trust ratio",
}


def _pct(value: float) -> str:
  return f"{100 * value:.2f}"


def _pm(s: analysis.Stat, unit: str = "") -> str:
  """'mean ± std (n=k)' in %; a single seed has no std."""
  if s.n < 2 or math.isnan(s.std):
    return f"{_pct(s.mean)}{unit} (n={s.n})"
  return f"{_pct(s.mean)} ± {_pct(s.std)}{unit} (n={s.n})"


def _number(value) -> str:
  return f"{value:g}" if isinstance(value, float) else str(value)


def _grid_text(point: dict) -> str:
  return ", ".join(f"{k}={_number(v)}" for k, v in point.items())


def _header(optimizers: list[str]) -> list[str]:
  """A Markdown table's header: backbone, then one right-aligned column per optimizer."""
  return ["| backbone | " + " | ".join(optimizers) + " |", "| --- |" + " ---: |" * len(optimizers)]


def _join(items: list[str]) -> str:
  return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _p_text(p: float) -> str:
  return "not testable" if math.isnan(p) else ("p < 0.001" if p < 0.001 else f"p = {p:.3f}")


def _points(gap: float, eval_examples: int | None) -> str:
  """A gap in points, with the number of test images it is worth when the test size is known."""
  text = f"{100 * gap:.2f} points"
  return text if not eval_examples else text + f" ≈ {gap * eval_examples:.0f} test images"


# ---- the conclusion ---------------------------------------------------------------------------


def conclusion(rows: list[dict], metric: str = "final_top1",
               eval_examples: int | None = None) -> str:
  """One paragraph, computed from the numbers: the most and least optimizer-sensitive backbones
  (by the gap between their best and worst optimizer), whether each gap exceeds seed noise, and
  the caveats that change how far the numbers can be trusted."""
  summaries = sorted(analysis.backbones(rows, metric).values(), key=lambda s: -s.range)
  by_pair = analysis.pairs(rows, metric)
  seeds = len({r.get("seed", 0) for r in rows})
  if len(analysis.ordered(r["optimizer"] for r in rows)) < 2:
    return ("With a single optimizer this study cannot measure coupling: the optimizer-"
            "sensitivity of a backbone is the spread of its accuracy across optimizers.")
  if len(summaries) == 1:
    sentences = [_sensitivity_sentence(summaries[0], eval_examples, "only")]
  else:
    sentences = [_sensitivity_sentence(summaries[0], eval_examples, "most"),
                 _sensitivity_sentence(summaries[-1], eval_examples, "least")]
  if len(summaries) > 2:
    middle = [f"{s.backbone} {100 * s.range:.2f} points ({_noise_word(s)})"
              for s in summaries[1:-1]]
    sentences.append("In between: " + "; ".join(middle) + ".")
  sentences.append(_verdict(summaries, seeds))
  sentences += _caveats(summaries, by_pair, eval_examples, seeds)
  return " ".join(sentences)


def _noise_word(s: analysis.BackboneSummary) -> str:
  beyond = s.beyond_noise
  if beyond is None:
    return "not testable with one seed"
  return f"{'beyond' if beyond else 'within'} seed noise, Welch {_p_text(s.p_value)}"


def _sensitivity_sentence(s: analysis.BackboneSummary, eval_examples: int | None,
                          which: str) -> str:
  """which: "most" / "least" optimizer-sensitive of several backbones, or "only" backbone."""
  subject = (f"The only backbone, {s.backbone}," if which == "only" else
             f"The {which} optimizer-sensitive backbone is {s.backbone}:")
  return (f"{subject} each optimizer at its best "
          f"lr, its top-1 goes from {_pm(s.worst, ' %')} with {s.worst_optimizer} to "
          f"{_pm(s.best, ' %')} with {s.best_optimizer}, a gap of "
          f"{_points(s.range, eval_examples)} ({_noise_word(s)}).")


def _verdict(summaries: list[analysis.BackboneSummary], seeds: int) -> str:
  coupled = [s.backbone for s in summaries if s.beyond_noise]
  robust = [s.backbone for s in summaries if s.beyond_noise is False]
  if seeds < 2 or not (coupled or robust):
    return ("With one seed per cell no gap can be told apart from seed noise, so this run "
            "shows no evidence either way; run at least 3 seeds.")
  if not coupled:
    return (f"No backbone's gap exceeds seed noise over {seeds} seeds: this study finds no "
            "backbone-optimizer coupling bias at this scale; the differences between "
            "optimizers are within noise.")
  text = (f"So {_join(coupled)} {'depends' if len(coupled) == 1 else 'depend'} on the optimizer "
          "beyond seed noise (coupling bias)")
  if robust:
    text += (f", while for {_join(robust)} the optimizers cannot be told apart with {seeds} "
             "seeds (robust to the optimizer choice, or a gap too small for this many seeds)")
  return text + "."


def _caveats(summaries, by_pair, eval_examples, seeds: int) -> list[str]:
  out = []
  at_edge = [s for s in by_pair.values() if s.edges]
  if at_edge:
    worst_at_edge = [b.backbone for b in summaries
                     if by_pair[(b.backbone, b.worst_optimizer)].edges]
    text = (f"{len(at_edge)} of {len(by_pair)} best grid points lie at an edge of their grid "
            "(listed under 'Edge-of-grid warnings'), so those bests are lower bounds")
    if worst_at_edge:
      text += (f"; for {_join(worst_at_edge)} the worst optimizer's best is among them, so "
               "its gap may be overstated")
    out.append(text + ".")
  if eval_examples:
    out.append(f"One test image is {100 / eval_examples:.2f} points.")
  if seeds > 1:
    out.append("The best lr and the best and worst optimizers are picked on the same seeds that "
               "are tested, so the p-values are optimistic.")
  return out


# ---- the sections -----------------------------------------------------------------------------


def _definitions(metric: str, eval_examples: int | None, seeds: int) -> list[str]:
  size = (f"The test split has {eval_examples} images, so one image is "
          f"{100 / eval_examples:.2f} points of top-1." if eval_examples else
          "The test split's size is unknown here (no study.json next to the results).")
  return [
      "## Definitions", "",
      ("- **BOCB** (backbone-optimizer coupling bias; Li et al., 2024, arXiv 2410.06373): a "
       "backbone's accuracy depends on which optimizer trains it, beyond what tuning the lr "
       "fixes (in the paper, canonical CNNs such as VGG and ResNet pair with SGD-family "
       "optimizers, ViTs and ConvNeXt with adaptive ones such as AdamW). Measured here per "
       "backbone as the spread (Std, Range) of the best accuracy each optimizer reaches over its "
       "lr grid: a large spread is strong coupling, a small one a backbone robust to the "
       "optimizer choice."),
      (f"- **Metric**: {metric.replace('_', ' ')} = top-1 accuracy (%) on the eval split "
       f"({'at the last step' if metric == 'final_top1' else 'at the best eval step'}). {size}"),
      (f"- **mean ± std (n)**: over the n seeds of a cell ({seeds} here; a seed sets the "
       "initialization, data order and dropout); std is the sample standard deviation (ddof=1)."),
      ("- **Best lr / best grid point** of a (backbone, optimizer) pair: the grid point with the "
       "highest seed mean. **Spread over the grid**: max − min of the grid points' seed means "
       "(sensitivity to the lr)."),
      ("- **Mean / Std / Range** of a backbone: over the optimizers, of each optimizer's best "
       "grid point (Std: population, ddof=0; Range = best − worst optimizer = the **gap**). "
       "A large Range is coupling bias."),
      (f"- **Beyond seed noise**: Welch's t-test of the best against the worst optimizer's seed "
       f"values (each at its best lr) gives p < {analysis.SIGNIFICANCE}; otherwise the gap is "
       "**within noise**."),
      ("- **Edge of the grid**: a pair whose best value of a grid key (lr) is the smallest or "
       "largest value tried; its optimum may lie outside the grid, so its best is a lower bound."),
      ("- **alpha**: the power-law exponent of a weight matrix's eigenvalue spectrum (heavy-"
       "tailed self-regularization, Martin & Mahoney); 2-4 is the band of well-trained layers, "
       "larger = less heavy-tailed (less trained or more regularized), below 2 = very heavy "
       "tails. **Entropy**: normalized spectral entropy (1 = flat spectrum). **Norm**: "
       "Frobenius norm of the weight."), ""]


def _weight_decay(rows: list[dict], study: dict) -> list[str]:
  """Each optimizer's weight decay (fixed or grid values) and how it is applied."""
  decays = {}
  for row in rows:
    value = {**row.get("hparams", {}), **row.get("grid", {})}.get("weight_decay")
    decays.setdefault(row["optimizer"], set()).add(value)
  lines = ["## Optimizers and weight decay", "",
           "| optimizer | lr grid | weight decay | how it is applied |",
           "| --- | --- | --- | --- |"]
  lrs = {}
  for row in rows:
    lrs.setdefault(row["optimizer"], set()).add(analysis.lr_of(row))
  for optimizer, values in decays.items():
    shown = ", ".join("not set (optimizer default)" if v is None else _number(v)
                      for v in sorted(values, key=lambda v: -1 if v is None else v))
    lines.append(f"| {optimizer} | {', '.join(_number(v) for v in sorted(lrs[optimizer]))} | "
                 f"{shown} | {DECAY_FORMS.get(optimizer, 'see jaxlab.optim')} |")
  distinct = {frozenset(v) for v in decays.values()}
  lines.append("")
  if len(distinct) > 1:
    lines.append("**Weight decay differs by optimizer** (values above; each optimizer also "
                 "applies it in its own way), so part of a difference between optimizers may be "
                 "their regularization rather than their update rule.")
  else:
    lines.append("Weight decay is the same value for every optimizer (though each applies it in "
                 "its own way).")
  optim = study.get("recipe", {}).get("optim", {})
  excluded = (["1-D parameters (biases, normalization scales)"]
              if optim.get("weight_decay_exclude_1d") else [])
  if optim.get("weight_decay_exclude"):
    excluded.append("parameters matching `recipe.optim.weight_decay_exclude` (position "
                    "embeddings and class tokens, by default)")
  if excluded:
    lines.append(f"For every optimizer, {' and '.join(excluded)} get no weight decay.")
  return lines + [""]


def _robustness(backbones, eval_examples) -> list[str]:
  lines = ["## Robustness per backbone", "",
           "Over the optimizers, each at its best grid point; values in % (top-1).", "",
           "| backbone | Mean | Std | Range (gap) | best optimizer | worst optimizer | "
           "gap vs seed noise |", "| --- | ---: | ---: | ---: | --- | --- | --- |"]
  for s in backbones.values():
    lines.append(f"| {s.backbone} | {_pct(s.mean)} | {_pct(s.std)} | {_pct(s.range)} | "
                 f"{s.best_optimizer}: {_pm(s.best)} | {s.worst_optimizer}: {_pm(s.worst)} | "
                 f"{_noise_word(s)} |")
  if eval_examples:
    lines += ["", f"(One test image = {100 / eval_examples:.2f} points.)"]
  return lines + ["", f"![Best top-1 per backbone and optimizer (mean ± std over seeds), "
                      f"colour = seed mean]({FIGURES['heatmap']})", ""]


def _pair_tables(by_pair, backbones, optimizers) -> list[str]:
  lines = ["## Per pair: the best grid point and the whole grid", "",
           "Best grid point's top-1, mean ± std over seeds (n), in %:", ""] + _header(optimizers)
  for backbone in backbones:
    cells = [_pm(by_pair[(backbone, o)].best_stat) if (backbone, o) in by_pair else "—"
             for o in optimizers]
    lines.append(f"| {backbone} | " + " | ".join(cells) + " |")
  lines += ["", ("Every grid point (mean ± std over seeds, %), the best in bold; spread = "
                 "max − min of the means:"), "",
            "| backbone | optimizer | grid points | spread | best at grid edge |",
            "| --- | --- | --- | ---: | --- |"]
  for (backbone, optimizer), s in by_pair.items():
    best = json.dumps(s.best_point, sort_keys=True)
    points = []
    for point, st in sorted(s.stats.items(), key=lambda kv: list(json.loads(kv[0]).values())):
      text = f"{_grid_text(json.loads(point))}: {_pm(st)}"
      points.append(f"**{text}**" if point == best else text)
    edge = ", ".join(f"{k} {side}" for k, side in s.edges.items()) or "no"
    lines.append(f"| {backbone} | {optimizer} | {'<br>'.join(points)} | {_pct(s.spread)} | "
                 f"{edge} |")
  return lines + [""]


def _edge_warnings(by_pair) -> list[str]:
  at_edge = [s for s in by_pair.values() if s.edges]
  lines = ["## Edge-of-grid warnings", ""]
  if not at_edge:
    return lines + ["Every pair's best grid point is inside its grid.", ""]
  lines.append(f"{len(at_edge)} of {len(by_pair)} pairs have their best at an edge of the grid; "
               "their optimum may lie outside it, so their best is a lower bound (extend the grid "
               "to settle it):")
  lines.append("")
  for s in at_edge:
    for key, side in s.edges.items():
      values = ", ".join(_number(v) for v in s.grid_values[key])
      lines.append(f"- WARNING: {s.backbone} / {s.optimizer}: best {key}="
                   f"{_number(s.best_point[key])} is the {side} value of the grid ({values}).")
  return lines + [""]


def _layers(rows, diagnostics, metric, backbones, optimizers) -> list[str]:
  lines = ["## Layer-wise spectral diagnostics", "",
           ("For each pair's best cell (first seed): the power-law exponent alpha of each weight "
            "matrix's eigenvalue spectrum (W^T W; conv kernels one matrix per tap, as "
            "WeightWatcher; fit: Clauset MLE with x_min by KS distance), the normalized spectral "
            "entropy and the L2 (Frobenius) norm, layers from input to output by name. The shaded "
            "band in the alpha panels is the 2-4 range of well-trained layers in heavy-tailed "
            "self-regularization analyses; larger alpha = less heavy-tailed."), ""]
  if not diagnostics:
    return lines + ["(No diagnostics table: the study ran with `diagnostics=False`.)"]
  lines.append(f"![Layer-wise alpha (with the 2-4 band), entropy and norm by layer name]"
               f"({FIGURES['layers']})")
  means = {}
  for key, cell in analysis.best_cells(rows, metric).items():
    layers = analysis.layer_table(diagnostics, cell)
    fitted = [d["alpha"] for d in layers if math.isfinite(d["alpha"])]
    if fitted:
      means[key] = (sum(fitted) / len(fitted), sum(2 <= a <= 4 for a in fitted), len(fitted))
  lines += ["", (f"Mean alpha over the layers with at least {spectra.MIN_EIGENVALUES} eigenvalues "
                 "(fewer give no alpha: a tail fitted to a handful of values is noise) of each "
                 "pair's best cell, and how many of those layers lie in the 2-4 band:"), ""]
  lines += _header(optimizers)
  for backbone in backbones:
    cells = []
    for o in optimizers:
      m = means.get((backbone, o))
      cells.append("—" if m is None else f"{m[0]:.2f} ({m[1]}/{m[2]} in 2-4)")
    lines.append(f"| {backbone} | " + " | ".join(cells) + " |")
  return lines


def markdown(rows: list[dict], diagnostics: list[dict], metric: str = "final_top1",
             title: str = "Backbone-optimizer coupling study",
             eval_examples: int | None = None, study: dict | None = None) -> str:
  """The report's text; `eval_examples` (test-set size) and `study` (study.json: the recipe's
  weight-decay exclusions) are optional."""
  backbones = analysis.backbones(rows, metric)
  by_pair = analysis.pairs(rows, metric)
  optimizers = analysis.ordered(r["optimizer"] for r in rows)
  programs = {r.get("group"): r.get("program_wall_time_s", 0.0) for r in rows}
  seeds = sorted({r.get("seed", 0) for r in rows})
  lines = [
      f"# {title}", "",
      (f"{len(rows)} cells: {len(backbones)} backbones x {len(optimizers)} optimizers x their lr "
       f"grids x {len(seeds)} seed(s) ({', '.join(str(s) for s in seeds)}), "
       f"{rows[0].get('steps', '?')} steps each, trained as {len(programs)} compiled programs in "
       f"{sum(programs.values()) / 60:.1f} min of wall time (the programs' sum: compilation, "
       "training, evaluation, checkpoints and diagnostics). Full table: "
       "[results.csv](results.csv)."), "",
      "## Conclusion", "", conclusion(rows, metric, eval_examples), ""]
  lines += _definitions(metric, eval_examples, len(seeds))
  lines += _weight_decay(rows, study or {})
  lines += _robustness(backbones, eval_examples)
  lines += _pair_tables(by_pair, list(backbones), optimizers)
  lines += _edge_warnings(by_pair)
  lines += [f"![Top-1 over every lr and seed per backbone and optimizer: boxes with every run as "
            f"a point]({FIGURES['boxplots']})", ""]
  lines += _layers(rows, diagnostics, metric, list(backbones), optimizers)
  return "\n".join(lines) + "\n"


def eval_examples_of(study: dict) -> int | None:
  """The eval split's size from a study.json's dataset config (None if it cannot be read)."""
  if not study.get("dataset"):
    return None
  import ml_collections  # pylint: disable=import-outside-toplevel

  from jaxlab import data  # pylint: disable=import-outside-toplevel
  try:
    return int(data.dataset_info(ml_collections.ConfigDict(study["dataset"])).num_eval)
  except Exception:  # pylint: disable=broad-except  (no data here: the report says it is unknown)
    return None


def build(workdir: str | pathlib.Path, out: str | pathlib.Path | None = None,
          metric: str = "final_top1", title: str | None = None) -> pathlib.Path:
  """Writes report.md and its figures; returns the report's path."""
  workdir = pathlib.Path(workdir)
  out = workdir if out is None else pathlib.Path(out)
  rows = results.read_rows(workdir / results.RESULTS_JSONL)
  if not rows:
    raise ValueError(f"no results in {workdir / results.RESULTS_JSONL}; run `python -m "
                     "jaxlab.study` with this --workdir first")
  if metric not in rows[0]:
    raise ValueError(f"unknown metric '{metric}'; valid: final_top1, best_top1")
  diagnostics = results.read_rows(workdir / results.DIAGNOSTICS_JSONL, key=("cell_id", "layer"))
  out.mkdir(parents=True, exist_ok=True)
  plots.heatmap(rows, out / FIGURES["heatmap"], metric)
  plots.boxplots(rows, out / FIGURES["boxplots"], metric)
  if diagnostics:
    plots.layer_curves(rows, diagnostics, out / FIGURES["layers"], metric)
  if out.resolve() != workdir.resolve():
    for name in (results.RESULTS_JSONL, results.DIAGNOSTICS_JSONL, STUDY_JSON):
      if (workdir / name).exists():
        shutil.copyfile(workdir / name, out / name)
  results.write_csv(rows, out / results.RESULTS_CSV)  # the table as this version lays it out
  study_file = workdir / STUDY_JSON
  study = json.loads(study_file.read_text()) if study_file.exists() else {}
  path = out / "report.md"
  text = markdown(rows, diagnostics, metric,
                  title or study.get("title") or "Backbone-optimizer coupling study",
                  eval_examples_of(study), study)
  path.write_text(text, encoding="utf-8")
  return path


def main(argv: list[str]) -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel

  from absl import logging  # pylint: disable=import-outside-toplevel

  from jaxlab.cli import fail  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS["verbosity"].present:  # tfds logs every dataset it opens at INFO
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  values = flags.FLAGS
  if not values.workdir:
    fail("--workdir=DIR is required")
  try:
    path = build(values.workdir, values.out, values.metric)
  except ValueError as e:
    fail(str(e))
  print(f"report: {path}")


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=ungrouped-imports
  flags.DEFINE_string("workdir", None, "The study's workdir (holds results.jsonl).")
  flags.DEFINE_string("out", None, "Where report.md and the figures go (default: the workdir).")
  flags.DEFINE_string("metric", "final_top1", "final_top1 or best_top1.")
  app.run(main)
