"""The study's figures (matplotlib, PNG): heat map, box plots over the grid, layer-wise curves."""

from __future__ import annotations

import pathlib

import numpy as np

from jaxlab.study import analysis


def _figure(nrows: int = 1, ncols: int = 1, **kwargs):
  """(figure, axes) drawn off screen, without pyplot: no backend switch, nothing left open in a
  notebook or GUI session that also plots."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  fig = Figure(figsize=kwargs.pop("figsize", None))
  return fig, fig.subplots(nrows, ncols, **kwargs)


def heatmap(rows: list[dict], path: pathlib.Path, metric: str = "final_top1") -> None:
  """Backbones x optimizers, each pair's best top-1 over the grid (%), annotated."""
  by_pair = analysis.pairs(rows, metric)
  backbones = analysis.ordered(r["backbone"] for r in rows)
  optimizers = analysis.ordered(r["optimizer"] for r in rows)
  values = np.full((len(backbones), len(optimizers)), np.nan)
  for (b, o), summary in by_pair.items():
    values[backbones.index(b), optimizers.index(o)] = 100 * summary.best
  fig, ax = _figure(figsize=(1.1 * len(optimizers) + 2.5, 0.6 * len(backbones) + 1.8))
  image = ax.imshow(values, cmap="viridis", aspect="auto")
  ax.set_xticks(range(len(optimizers)), optimizers, rotation=45, ha="right")
  ax.set_yticks(range(len(backbones)), backbones)
  finite = values[np.isfinite(values)]
  middle = (finite.min() + finite.max()) / 2 if finite.size else 0
  for i in range(len(backbones)):
    for j in range(len(optimizers)):
      if np.isfinite(values[i, j]):
        ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=8,
                color="black" if values[i, j] > middle else "white")
  fig.colorbar(image, ax=ax, label=f"best {metric.replace('_', ' ')} over the grid (%)")
  ax.set_title("Backbone x optimizer")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def boxplots(rows: list[dict], path: pathlib.Path, metric: str = "final_top1") -> None:
  """One panel per backbone: per optimizer, the distribution of top-1 over grid points and seeds."""
  backbones = analysis.ordered(r["backbone"] for r in rows)
  optimizers = analysis.ordered(r["optimizer"] for r in rows)
  fig, axes = _figure(1, len(backbones), figsize=(3.2 * len(backbones) + 0.8, 3.6),
                      sharey=True, squeeze=False)
  for ax, backbone in zip(axes[0], backbones):
    data = [[100 * r[metric] for r in rows if r["backbone"] == backbone and r["optimizer"] == o]
            for o in optimizers]
    ax.boxplot(data, tick_labels=optimizers, showmeans=True)
    ax.set_title(backbone)
    ax.tick_params(axis="x", rotation=45)
    ax.grid(axis="y", alpha=0.3)
  axes[0][0].set_ylabel(f"{metric.replace('_', ' ')} (%) over the grid")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def layer_curves(rows: list[dict], diagnostics: list[dict], path: pathlib.Path,
                 metric: str = "final_top1") -> None:
  """alpha, spectral entropy and L2 norm per layer (input -> output) of each pair's best cell."""
  backbones = analysis.ordered(r["backbone"] for r in rows)
  optimizers = analysis.ordered(r["optimizer"] for r in rows)
  best = analysis.best_cells(rows, metric)
  measures = (("alpha", "power-law alpha"), ("entropy", "spectral entropy"), ("norm", "L2 norm"))
  fig, axes = _figure(len(measures), len(backbones), squeeze=False,
                      figsize=(3.4 * len(backbones) + 0.6, 2.4 * len(measures) + 0.6))
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
  colors = colormaps["tab10"]
  for column, backbone in enumerate(backbones):
    for k, optimizer in enumerate(optimizers):
      cell = best.get((backbone, optimizer))
      layers = analysis.layer_table(diagnostics, cell) if cell else []
      for row_index, (key, _) in enumerate(measures):
        axes[row_index][column].plot([d["layer_index"] for d in layers], [d[key] for d in layers],
                                     marker=".", color=colors(k % 10), label=optimizer)
    axes[0][column].set_title(backbone)
    axes[-1][column].set_xlabel("layer (input -> output)")
    for row_axes in axes:
      row_axes[column].xaxis.get_major_locator().set_params(integer=True)
  for row_index, (_, label) in enumerate(measures):
    axes[row_index][0].set_ylabel(label)
    for ax in axes[row_index]:
      ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=7, loc="best")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
