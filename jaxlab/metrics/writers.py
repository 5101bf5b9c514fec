"""Where logged metrics go: `metrics.jsonl` in the workdir and TensorBoard scalars.

Only process 0 writes. On resume, records after the restored step are dropped from the JSONL so
that it reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import pathlib

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
    lines = self.jsonl_path.read_text(encoding="utf-8").splitlines()
    keep = [l for l in lines if l.strip() and json.loads(l)["step"] <= step]
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


def read_jsonl(path: str | pathlib.Path) -> list[dict]:
  """The records of a metrics.jsonl file, in order."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
