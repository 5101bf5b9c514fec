"""Where logged metrics go: `metrics.jsonl` in the workdir and TensorBoard scalars.

Only process 0 writes. On resume, records after the restored step are dropped from the JSONL so
that it reads as one uninterrupted run; a last line cut short by a kill is dropped with a warning
(every line before it is kept).
"""

from __future__ import annotations

import json
import pathlib
import sys

import jax
import numpy as np


class MetricWriter:

  def __init__(self, workdir: str | pathlib.Path, *, resume_step: int = 0):
    self.enabled = jax.process_index() == 0
    self.jsonl_path = pathlib.Path(workdir) / "metrics.jsonl"
    self.tensorboard_dir = pathlib.Path(workdir) / "tensorboard"
    if not self.enabled:
      return
    self._truncate_after(resume_step)
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    self._tensorboard = SummaryWriter(str(self.tensorboard_dir), purge_step=resume_step + 1)
    self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")

  def _truncate_after(self, step: int) -> None:
    if not self.jsonl_path.exists():
      return
    records, cut = _parse(self.jsonl_path.read_text(encoding="utf-8", errors="replace"))
    if cut:
      print(f"warning: {self.jsonl_path}: dropped {cut} unreadable line(s) (a write cut short)",
            file=sys.stderr, flush=True)
    keep = [json.dumps(r) for r in records if r["step"] <= step]
    self.jsonl_path.write_text("".join(l + "\n" for l in keep), encoding="utf-8")

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
    self._jsonl.flush()
    for name, value in scalars.items():
      self._tensorboard.add_scalar(name, value, step)

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tensorboard.close()


def _parse(text: str) -> tuple[list[dict], int]:
  """(the records that parse, the number of lines that do not) of a JSONL text."""
  records, bad = [], 0
  for line in text.splitlines():
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      bad += 1
      continue
    if isinstance(record, dict) and "step" in record:
      records.append(record)
    else:
      bad += 1
  return records, bad


def read_jsonl(path: str | pathlib.Path) -> list[dict]:
  """The records of a metrics.jsonl file, in order (lines cut short by a kill are skipped)."""
  return _parse(pathlib.Path(path).read_text(encoding="utf-8", errors="replace"))[0]
