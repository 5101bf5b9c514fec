"""Claiming a workdir: one run at a time, and a clear error when it cannot be written or is full.

The lock is an advisory `flock` on `DIR/.lock.<process>`: the kernel releases it when the process
ends, however it ends (SIGKILL included), so there are no stale locks to clean up. Advisory locks
need a local or POSIX-compliant shared file system; on object stores the lock is not enforced.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import shutil


class WorkdirError(RuntimeError):
  """The workdir cannot be used; the message says why in one line."""


def claim(workdir: pathlib.Path, process_index: int = 0):
  """Creates the workdir if needed and locks it for this process; returns the open lock file."""
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    lock = open(workdir / f".lock.{process_index}", "a+", encoding="utf-8")  # pylint: disable=consider-using-with
  except OSError as e:
    raise WorkdirError(f"workdir '{workdir}' is not writable: {e.strerror}") from None
  try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    lock.seek(0)
    owner = lock.read().strip() or "unknown"
    lock.close()
    raise WorkdirError(f"workdir '{workdir}' is in use by another run (pid {owner}); wait for it "
                       "to finish or choose another --workdir") from None
  lock.seek(0)
  lock.truncate()
  lock.write(str(os.getpid()))
  lock.flush()
  return lock


def check_space(workdir: pathlib.Path, checkpoint_bytes: int, keep: int, writes: int) -> None:
  """Fails now, not at the first save hours later, when the disk cannot hold the checkpoints.

  Orbax writes a new step beside the ones it keeps before deleting the oldest: keep + 1 of them,
  and never more than the `writes` checkpoints the run makes ("keep all" is a large keep).
  """
  count = min(keep + 1, writes)
  needed = checkpoint_bytes * count
  free = shutil.disk_usage(workdir).free
  if free < needed:
    raise WorkdirError(f"workdir '{workdir}' has {free / 2**20:.1f} MiB free but {count} checkpoints "
                       f"of this run need {needed / 2**20:.1f} MiB; free space or lower "
                       "config.keep_checkpoints")
