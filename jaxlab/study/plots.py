"""The study's figures (matplotlib, PNG): heat map, box plots over the grid, layer-wise curves.

Each function saves its PNG and returns the matplotlib Figure, so tests (and notebooks) can
check titles, axis labels and legends on the objects rather than on pixels.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np

from jaxlab.study import analysis, spectra

# Box plots overlay every run as a point while a box holds at most this many (a box of a
# handful of points hides how few there are).
MAX_POINTS_SHOWN = 30
# The heavy-tailed self-regularization "well-trained" range of the power-law alpha.
ALPHA_BAND = (2.0, 4.0)
ALPHA_BAND_LABEL = "alpha 2-4: well-trained band (HT-SR)"


def _figure(nrows: int = 1, ncols: int = 1, **kwargs):
  """(figure, axes) drawn off screen, without pyplot: no backend switch, nothing left open in a
  notebook or GUI session that also plots."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  fig = Figure(figsize=kwargs.pop("figsize", None))
  return fig, fig.subplots(nrows, ncols, **kwargs)


def _metric_label(metric: str) -> str:
  return f"{metric.replace('_', ' ')} (%)"


def _seed_count(rows: list[dict]) -> int:
  return len({r.get("seed", 0) for r in rows})


def heatmap(rows: list[dict], path: pathlib.Path, metric: str = "final_top1"):
  """Backbones x optimizers, each pair's best grid point: seed mean (colour) and mean +- std."""
  by_pair = analysis.pairs(rows, metric)
  backbones = analysis.ordered(r["backbone"] for r in rows)
  optimizers = analysis.ordered(r["optimizer"] for r in rows)
  values = np.full((len(backbones), len(optimizers)), np.nan)
  for (b, o), summary in by_pair.items():
    values[backbones.index(b), optimizers.index(o)] = 100 * summary.best
  fig, ax = _figure(figsize=(1.3 * len(optimizers) + 3.2, 0.7 * len(backbones) + 2.0))
  image = ax.imshow(values, cmap="viridis", aspect="auto")
  ax.set_xticks(range(len(optimizers)), optimizers, rotation=45, ha="right")
  ax.set_yticks(range(len(backbones)), backbones)
  ax.set_xlabel("optimizer (each at its best lr)")
  ax.set_ylabel("backbone")
  finite = values[np.isfinite(values)]
  middle = (finite.min() + finite.max()) / 2 if finite.size else 0
  for (b, o), summary in by_pair.items():
    i, j = backbones.index(b), optimizers.index(o)
    s = summary.best_stat
    text = f"{100 * s.mean:.1f}" + ("" if math.isnan(s.std) else f"\n±{100 * s.std:.1f}")
    ax.text(j, i, text, ha="center", va="center", fontsize=7,
            color="black" if values[i, j] > middle else "white")
  fig.colorbar(image, ax=ax, label=f"best {_metric_label(metric)}, mean over seeds")
  ax.set_title(f"Best top-1 per pair (mean ± std over {_seed_count(rows)} seed(s))", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return fig


def _lr_positions(rows: list[dict]) -> tuple[dict[str, float], set[int]]:
  """Cell id -> where its lr lies in its pair's lr grid (0 = lowest, 1 = highest), and the set
  of grid sizes (the legend can name every position only when all grids have one size)."""
  grids: dict[tuple[str, str], set] = {}
  for r in rows:
    grids.setdefault((r["backbone"], r["optimizer"]), set()).add(analysis.lr_of(r))
  sorted_grids = {k: sorted(v) for k, v in grids.items()}
  positions = {}
  for r in rows:
    grid = sorted_grids[(r["backbone"], r["optimizer"])]
    positions[r["cell_id"]] = grid.index(analysis.lr_of(r)) / max(len(grid) - 1, 1)
  return positions, {len(g) for g in sorted_grids.values()}


def _position_names(sizes: set[int]) -> dict[float, str]:
  """Legend entries for the lr positions: every position of a common grid size, else the ends."""
  count = next(iter(sizes)) if len(sizes) == 1 else 2
  if count == 1:
    return {0.0: "the only lr"}
  names = {k / (count - 1): f"lr {k + 1} of {count} (low to high)" for k in range(count)}
  names[0.0], names[1.0] = "lowest lr of the grid", "highest lr of the grid"
  return names


def boxplots(rows: list[dict], path: pathlib.Path, metric: str = "final_top1"):
  """One panel per backbone: per optimizer, top-1 over its grid points and seeds as a box, with
  every run drawn as a point coloured by its lr's position in the grid."""
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
  from matplotlib.lines import Line2D  # pylint: disable=import-outside-toplevel
  backbones = analysis.ordered(r["backbone"] for r in rows)
  optimizers = analysis.ordered(r["optimizer"] for r in rows)
  positions, sizes = _lr_positions(rows)
  colors = colormaps["coolwarm"]
  rng = np.random.default_rng(0)  # fixed jitter: the same figure every time
  fig, axes = _figure(1, len(backbones), figsize=(3.2 * len(backbones) + 0.8, 4.4),
                      sharey=True, squeeze=False)
  per_box = 0
  for ax, backbone in zip(axes[0], backbones):
    runs = [[r for r in rows if r["backbone"] == backbone and r["optimizer"] == o]
            for o in optimizers]
    per_box = max(per_box, *(len(r) for r in runs))
    ax.boxplot([[100 * r[metric] for r in run] for run in runs], tick_labels=optimizers,
               showmeans=True, whis=(0, 100),  # whiskers span every run: no outlier marks
               meanprops={"marker": "^", "markerfacecolor": "black", "markeredgecolor": "black"})
    for x, run in enumerate(runs, 1):
      if len(run) <= MAX_POINTS_SHOWN:
        ax.scatter(x + rng.uniform(-0.18, 0.18, len(run)), [100 * r[metric] for r in run], s=12,
                   c=[colors(positions[r["cell_id"]]) for r in run],
                   edgecolors="black", linewidths=0.3, zorder=3)
    ax.set_title(backbone)
    ax.set_xlabel("optimizer")
    ax.tick_params(axis="x", rotation=45)
    ax.grid(axis="y", alpha=0.3)
  axes[0][0].set_ylabel(_metric_label(metric))
  handles = [Line2D([], [], color="orange", label="median (box: quartiles, whiskers: range)"),
             Line2D([], [], marker="^", color="black", linestyle="", label="mean")]
  if per_box <= MAX_POINTS_SHOWN:
    handles += [Line2D([], [], marker="o", linestyle="", markeredgecolor="black",
                       markerfacecolor=colors(position), label=name)
                for position, name in _position_names(sizes).items()]
  fig.suptitle(f"Top-1 over every grid point and seed ({_seed_count(rows)} seed(s); "
               f"up to {per_box} runs per box)", fontsize=9)
  fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=7,
             frameon=False)
  fig.tight_layout(rect=(0, 0.08, 1, 1))
  fig.savefig(path, dpi=110)
  return fig


def layer_name(path: str) -> str:
  """A weight's parameter path as an axis label: without the trailing '/kernel'."""
  return path[:-len("/kernel")] if path.endswith("/kernel") else path


def layer_curves(rows: list[dict], diagnostics: list[dict], path: pathlib.Path,
                 metric: str = "final_top1"):
  """alpha, spectral entropy and L2 norm per layer (input -> output, by name) of each pair's best
  cell; the alpha panels shade the 2-4 band."""
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
  backbones = analysis.ordered(r["backbone"] for r in rows)
  optimizers = analysis.ordered(r["optimizer"] for r in rows)
  best = analysis.best_cells(rows, metric)
  measures = (("alpha", "power-law alpha"), ("entropy", "spectral entropy"), ("norm", "L2 norm"))
  fig, axes = _figure(len(measures), len(backbones), squeeze=False, sharex="col",
                      figsize=(3.6 * len(backbones) + 0.6, 2.4 * len(measures) + 2.2))
  colors = colormaps["tab10"]
  for column, backbone in enumerate(backbones):
    names: dict[int, str] = {}
    for k, optimizer in enumerate(optimizers):
      cell = best.get((backbone, optimizer))
      layers = analysis.layer_table(diagnostics, cell) if cell else []
      names.update({d["layer_index"]: layer_name(d["layer"]) for d in layers if "layer" in d})
      for row_index, (key, _) in enumerate(measures):
        axes[row_index][column].plot([d["layer_index"] for d in layers], [d[key] for d in layers],
                                     marker=".", color=colors(k % 10), label=optimizer)
    axes[0][column].axhspan(*ALPHA_BAND, color="green", alpha=0.12, label=ALPHA_BAND_LABEL)
    axes[0][column].set_title(backbone)
    bottom = axes[-1][column]
    bottom.set_xticks(sorted(names), [names[i] for i in sorted(names)], rotation=90, fontsize=6)
    bottom.set_xlabel("layer (input -> output)")
  for row_index, (_, label) in enumerate(measures):
    axes[row_index][0].set_ylabel(label)
    for ax in axes[row_index]:
      ax.grid(alpha=0.3)
  handles, labels = axes[0][0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=7, frameon=False)
  fig.text(0.5, 0.005, f"Gaps in alpha: layers with fewer than {spectra.MIN_EIGENVALUES} "
           "eigenvalues get no fit.",
           ha="center", va="bottom", fontsize=7)
  fig.tight_layout(rect=(0, 0.02, 1, 0.96))
  fig.savefig(path, dpi=110)
  return fig
