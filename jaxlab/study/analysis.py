"""What a coupling study measures, from its results table (and diagnostics table).

  * per pair (backbone, optimizer): top-1 of every grid point as mean +- std over seeds (std: the
    sample standard deviation, ddof=1, NaN with one seed), the best point (chosen on the seed
    mean), the spread over the grid (max - min of the means: hyperparameter sensitivity), and
    the grid keys whose best value is the grid's smallest or largest (a best at an edge of the
    grid is a lower bound: the optimum may lie outside it);
  * per backbone: Mean / Std / Range over optimizers of each optimizer's best grid point (the
    study's robustness measure: a backbone that needs one particular optimizer has a large Std
    and Range). Std over optimizers is the population standard deviation (numpy's default,
    ddof=0). The gap between the best and the worst optimizer (= Range) is compared with seed
    noise by Welch's t-test on their seed values (`p_value`);
  * layer-wise spectral diagnostics (`jaxlab.study.spectra`) of the best cell of each pair.

Everything takes the rows as `jaxlab.study.results` reads them (dicts), so a table edited or
merged by hand analyses the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from jaxlab.study.spectra import layer_diagnostics  # noqa: F401  (re-exported: the layer measures)


# Welch's p below this: a gap between optimizers counts as larger than seed noise.
SIGNIFICANCE = 0.05


@dataclasses.dataclass(frozen=True)
class Stat:
  """A metric over seeds: mean, sample std (ddof=1; NaN with one seed) and the seed count."""
  mean: float
  std: float
  n: int


def stat(values) -> Stat:
  values = np.asarray(values, np.float64)
  std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
  return Stat(float(values.mean()), std, len(values))


@dataclasses.dataclass(frozen=True)
class PairSummary:
  backbone: str
  optimizer: str
  points: dict[str, float]  # grid point (JSON) -> top-1, mean over seeds
  best: float
  best_point: dict
  spread: float  # max - min over the grid points
  seeds: int
  stats: dict[str, Stat] = dataclasses.field(default_factory=dict)  # grid point (JSON) -> Stat
  edges: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> "lowest" / "highest"
  grid_values: dict[str, list] = dataclasses.field(default_factory=dict)  # key -> sorted values

  @property
  def best_stat(self) -> Stat:
    return self.stats[json.dumps(self.best_point, sort_keys=True)]


@dataclasses.dataclass(frozen=True)
class BackboneSummary:
  backbone: str
  mean: float
  std: float
  range: float
  best_optimizer: str
  worst_optimizer: str
  optimizers: int
  best: Stat | None = None  # the best optimizer at its best grid point, over seeds
  worst: Stat | None = None
  p_value: float = math.nan  # Welch's t-test, best vs worst optimizer; NaN: not testable

  @property
  def beyond_noise(self) -> bool | None:
    """Whether the best-worst gap exceeds seed noise (None: fewer than 2 seeds, no test)."""
    return None if math.isnan(self.p_value) else self.p_value < SIGNIFICANCE


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
    stats = {p: stat(v) for p, v in points.items()}
    means = {p: s.mean for p, s in stats.items()}
    best_point = max(means, key=means.get)  # chosen on the seed mean
    values = grid_values([json.loads(p) for p in points])
    out[(backbone, optimizer)] = PairSummary(
        backbone, optimizer, means, means[best_point], json.loads(best_point),
        max(means.values()) - min(means.values()), max(len(v) for v in points.values()),
        stats, edges(json.loads(best_point), values), values)
  return out


def lr_of(row: dict) -> float:
  """A row's peak lr: its grid value, else the recipe's (a row without lr in its grid)."""
  return float(row.get("grid", {}).get("lr", row.get("lr", 0.0)))


def grid_values(points: list[dict]) -> dict[str, list]:
  """Per grid key, its distinct values over the points, sorted (numbers only: an edge needs an
  order; switches such as nesterov=True/False and tuples such as betas have none)."""
  keys = ordered(k for p in points for k in p)
  out = {}
  for key in keys:
    found = {p[key] for p in points
             if isinstance(p.get(key), (int, float)) and not isinstance(p[key], bool)}
    if found:
      out[key] = sorted(found)
  return out


def edges(point: dict, values: dict[str, list]) -> dict[str, str]:
  """The keys whose value in `point` is the smallest or largest of a grid with >= 2 values."""
  out = {}
  for key, grid in values.items():
    if len(grid) >= 2 and key in point:
      if point[key] == grid[0]:
        out[key] = "lowest"
      elif point[key] == grid[-1]:
        out[key] = "highest"
  return out


def welch_p(a: Stat, b: Stat) -> float:
  """Two-sided Welch's t-test p-value from summary statistics (NaN with fewer than 2 seeds)."""
  if a.n < 2 or b.n < 2:
    return math.nan
  if a.std == 0 and b.std == 0:  # no seed noise at all: any difference is real
    return 1.0 if a.mean == b.mean else 0.0
  from scipy import stats as scipy_stats  # pylint: disable=import-outside-toplevel
  return float(scipy_stats.ttest_ind_from_stats(a.mean, a.std, a.n, b.mean, b.std, b.n,
                                                equal_var=False).pvalue)


def backbones(rows: list[dict], metric: str = "final_top1") -> dict[str, BackboneSummary]:
  """Per backbone: Mean / Std / Range over optimizers of each optimizer's best over the grid."""
  by_pair = pairs(rows, metric)
  out = {}
  for backbone in ordered(r["backbone"] for r in rows):
    bests = {o: s.best for (b, o), s in by_pair.items() if b == backbone}
    values = np.asarray(list(bests.values()))
    best, worst = max(bests, key=bests.get), min(bests, key=bests.get)
    best_stat = by_pair[(backbone, best)].best_stat
    worst_stat = by_pair[(backbone, worst)].best_stat
    out[backbone] = BackboneSummary(
        backbone, float(values.mean()), float(values.std()), float(values.max() - values.min()),
        best, worst, len(bests), best_stat, worst_stat,
        welch_p(best_stat, worst_stat) if best != worst else math.nan)
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
