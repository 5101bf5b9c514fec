"""What a coupling study measures, from its results table (and diagnostics table).

  * per pair (backbone, optimizer): top-1 of every grid point (mean over seeds), the best of them
    and the spread over the grid (max - min: hyperparameter sensitivity);
  * per backbone: Mean / Std / Range over optimizers of each optimizer's best grid point (the
    study's robustness measure: a backbone that needs one particular optimizer has a large Std
    and Range). Std is the population standard deviation (numpy's default, ddof=0);
  * layer-wise spectral diagnostics (`jaxlab.study.spectra`) of the best cell of each pair.

Everything takes the rows as `jaxlab.study.results` reads them (dicts), so a table edited or
merged by hand analyses the same way.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from jaxlab.study.spectra import layer_diagnostics  # noqa: F401  (re-exported: the layer measures)


@dataclasses.dataclass(frozen=True)
class PairSummary:
  backbone: str
  optimizer: str
  points: dict[str, float]  # grid point (JSON) -> top-1, mean over seeds
  best: float
  best_point: dict
  spread: float  # max - min over the grid points
  seeds: int


@dataclasses.dataclass(frozen=True)
class BackboneSummary:
  backbone: str
  mean: float
  std: float
  range: float
  best_optimizer: str
  worst_optimizer: str
  optimizers: int


def ordered(values) -> list:
  """Distinct values in order of first appearance."""
  return list(dict.fromkeys(values))


def pairs(rows: list[dict], metric: str = "final_top1") -> dict[tuple[str, str], PairSummary]:
  """Per (backbone, optimizer): grid points (seed means), best point and spread over the grid."""
  grouped: dict[tuple[str, str], dict[str, list[float]]] = {}
  for row in rows:
    point = json.dumps(row["grid"], sort_keys=True)
    grouped.setdefault((row["backbone"], row["optimizer"]), {}).setdefault(point, []).append(
        float(row[metric]))
  out = {}
  for (backbone, optimizer), points in grouped.items():
    means = {p: float(np.mean(v)) for p, v in points.items()}
    best_point = max(means, key=means.get)
    out[(backbone, optimizer)] = PairSummary(
        backbone, optimizer, means, means[best_point], json.loads(best_point),
        max(means.values()) - min(means.values()), max(len(v) for v in points.values()))
  return out


def backbones(rows: list[dict], metric: str = "final_top1") -> dict[str, BackboneSummary]:
  """Per backbone: Mean / Std / Range over optimizers of each optimizer's best over the grid."""
  by_pair = pairs(rows, metric)
  out = {}
  for backbone in ordered(r["backbone"] for r in rows):
    bests = {o: s.best for (b, o), s in by_pair.items() if b == backbone}
    values = np.asarray(list(bests.values()))
    out[backbone] = BackboneSummary(
        backbone, float(values.mean()), float(values.std()), float(values.max() - values.min()),
        max(bests, key=bests.get), min(bests, key=bests.get), len(bests))
  return out


def best_cells(rows: list[dict], metric: str = "final_top1") -> dict[tuple[str, str], str]:
  """Per pair, the cell id of its best grid point's first seed (whose layers get plotted)."""
  by_pair = pairs(rows, metric)
  out = {}
  for row in rows:
    key = (row["backbone"], row["optimizer"])
    if key not in out and row["grid"] == by_pair[key].best_point:
      out[key] = row["cell_id"]
  return out


def layer_table(diagnostics: list[dict], cell_id: str) -> list[dict]:
  """The diagnostics rows of one cell, input to output."""
  return sorted((d for d in diagnostics if d["cell_id"] == cell_id), key=lambda d: d["layer_index"])
