"""The study's tables in its workdir: one row per cell (results) and per cell and layer (diagnostics).

Both are JSONL files that only grow (a row is appended when its cell's program finishes); readers
keep the last row of each key, so a row written again after a crash replaces the earlier one.
`results.csv` is the same table as `results.jsonl`, rewritten from it after every group, with the
nested `grid` and `hparams` spread into one column per hyperparameter.
"""

from __future__ import annotations

import csv
import json
import pathlib

RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"
DIAGNOSTICS_JSONL = "diagnostics.jsonl"

# Leading CSV columns; then the optimizer's keywords, then the rest, sorted.
_FIRST_COLUMNS = ("backbone", "optimizer", "lr", "seed", "final_top1", "best_top1", "best_step",
                  "final_loss", "steps", "wall_time_s")


def read_rows(path: str | pathlib.Path, key: tuple[str, ...] = ("cell_id",)) -> list[dict]:
  """The rows of a JSONL table, the last one of each key, in first-appearance order."""
  path = pathlib.Path(path)
  if not path.exists():
    return []
  rows: dict[tuple, dict] = {}
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        rows[tuple(row[k] for k in key)] = row
  return list(rows.values())


def append_rows(path: str | pathlib.Path, rows: list[dict]) -> None:
  with open(path, "a", encoding="utf-8") as f:
    f.writelines(json.dumps(row, sort_keys=False) + "\n" for row in rows)
    f.flush()


def write_csv(rows: list[dict], path: str | pathlib.Path) -> None:
  """The rows as CSV: known columns first, then one column per optimizer keyword (grid values and
  fixed ones; empty where an optimizer has no such keyword), then the rest; nested values as JSON."""
  columns = [c for c in _FIRST_COLUMNS if any(c in r for r in rows)]
  hyper = sorted({k for r in rows for k in (*r.get("grid", {}), *r.get("hparams", {}))}
                 - set(columns) - set(_FIRST_COLUMNS))
  rest = sorted({k for r in rows for k in r} - set(columns) - set(hyper) - {"grid", "hparams"})
  columns += hyper + rest
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    for row in rows:
      flat = {**row, **row.get("hparams", {}), **row.get("grid", {})}
      writer.writerow({c: _cell(flat.get(c, "")) for c in columns})


def _cell(value):
  return json.dumps(value) if isinstance(value, (dict, list, tuple)) else value
