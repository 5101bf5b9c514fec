"""The study's Markdown report with its figures, rebuilt from the tables in the workdir.

  python -m jaxlab.study.report --workdir=DIR [--out=DIR] [--metric=final_top1]

Reads DIR/results.jsonl and DIR/diagnostics.jsonl (written by `python -m jaxlab.study`) and
writes report.md, heatmap.png, boxplots.png, layers.png and results.csv (rewritten from the
JSONL table) to --out (default: the workdir); with another --out it also copies the JSONL tables
there, so the report directory stands alone.
"""

from __future__ import annotations

import json
import math
import pathlib
import shutil

from jaxlab.study import analysis, plots, results, spectra

FIGURES = {"heatmap": "heatmap.png", "boxplots": "boxplots.png", "layers": "layers.png"}


def _pct(value: float) -> str:
  return f"{100 * value:.2f}"


def _grid_text(point: dict) -> str:
  return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())


def markdown(rows: list[dict], diagnostics: list[dict], metric: str = "final_top1",
             title: str = "Backbone-optimizer coupling study") -> str:
  backbones = analysis.backbones(rows, metric)
  by_pair = analysis.pairs(rows, metric)
  optimizers = analysis.ordered(r["optimizer"] for r in rows)
  programs = {r["group"]: r["program_wall_time_s"] for r in rows}
  seeds = sorted({r["seed"] for r in rows})
  lines = [
      f"# {title}", "",
      (f"{len(rows)} cells: {len(backbones)} backbones x {len(optimizers)} optimizers x their grids "
       f"x {len(seeds)} seed(s), {rows[0]['steps']} steps each, trained as {len(programs)} compiled "
       f"programs in {sum(programs.values()) / 60:.1f} min of wall time (the programs' sum: "
       "compilation, training, evaluation, checkpoints and diagnostics). Metric: "
       f"{metric.replace('_', ' ')} (%) on the eval split; grid points are averaged over seeds. "
       "Full table: [results.csv](results.csv)."), "",
      "## Robustness per backbone", "",
      "Mean / Std / Range over optimizers of each optimizer's best grid point (Std: population).",
      "", "| backbone | Mean | Std | Range | best optimizer | worst optimizer |",
      "| --- | ---: | ---: | ---: | --- | --- |"]
  for s in backbones.values():
    lines.append(f"| {s.backbone} | {_pct(s.mean)} | {_pct(s.std)} | {_pct(s.range)} | "
                 f"{s.best_optimizer} | {s.worst_optimizer} |")
  lines += ["", f"![backbone x optimizer heat map]({FIGURES['heatmap']})", "",
            "## Best and spread over the grid per pair", "",
            "Each cell: best top-1 over the grid / its spread (max - min over grid points), in %.",
            "", "| backbone | " + " | ".join(optimizers) + " |",
            "| --- |" + " ---: |" * len(optimizers)]
  for backbone in backbones:
    cells = []
    for optimizer in optimizers:
      s = by_pair.get((backbone, optimizer))
      cells.append("—" if s is None else f"{_pct(s.best)} / {_pct(s.spread)}")
    lines.append(f"| {backbone} | " + " | ".join(cells) + " |")
  lines += ["", "Best grid point per pair:", ""]
  for (backbone, optimizer), s in by_pair.items():
    lines.append(f"- {backbone} / {optimizer}: {_grid_text(s.best_point)}")
  lines += ["", f"![top-1 over the grid per backbone]({FIGURES['boxplots']})", "",
            "## Layer-wise spectral diagnostics", "",
            ("For each pair's best cell: the power-law exponent alpha of each weight matrix's "
             "eigenvalue spectrum (W^T W; conv kernels one matrix per tap, as WeightWatcher; fit: "
             "Clauset MLE with x_min by KS distance), the normalized spectral entropy and the L2 "
             "(Frobenius) norm, layers from input to output. Smaller alpha = heavier tail; "
             "well-trained layers sit around 2-4 in heavy-tailed self-regularization analyses."), ""]
  if diagnostics:
    lines.append(f"![layer-wise alpha, entropy and norm]({FIGURES['layers']})")
    means = {}
    best = analysis.best_cells(rows, metric)
    for (backbone, optimizer), cell in best.items():
      layers = analysis.layer_table(diagnostics, cell)
      fitted = [d["alpha"] for d in layers if math.isfinite(d["alpha"])]
      if fitted:
        means[(backbone, optimizer)] = sum(fitted) / len(fitted)
    lines += ["", (f"Mean alpha over the layers with at least {spectra.MIN_EIGENVALUES} eigenvalues "
                   "(fewer give no alpha: a tail fitted to a handful of values is noise) of each "
                   "pair's best cell:"), "",
              "| backbone | " + " | ".join(optimizers) + " |",
              "| --- |" + " ---: |" * len(optimizers)]
    for backbone in backbones:
      lines.append(f"| {backbone} | " + " | ".join(
          f"{means[(backbone, o)]:.2f}" if (backbone, o) in means else "—" for o in optimizers) + " |")
  else:
    lines.append("(No diagnostics table: the study ran with `diagnostics=False`.)")
  return "\n".join(lines) + "\n"


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
    for name in (results.RESULTS_JSONL, results.DIAGNOSTICS_JSONL):
      if (workdir / name).exists():
        shutil.copyfile(workdir / name, out / name)
  results.write_csv(rows, out / results.RESULTS_CSV)  # the table as this version lays it out
  study_file = workdir / "study.json"
  if title is None and study_file.exists():
    title = json.loads(study_file.read_text()).get("title")
  path = out / "report.md"
  path.write_text(markdown(rows, diagnostics, metric, title or "Backbone-optimizer coupling study"),
                  encoding="utf-8")
  return path


def main(argv: list[str]) -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel

  from jaxlab.cli import fail  # pylint: disable=import-outside-toplevel
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
