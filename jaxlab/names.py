"""Name filters shared by the registries' `available(pattern)`, like timm's `list_models(filter)`."""

from __future__ import annotations

import fnmatch
from typing import Iterable, Sequence

Pattern = str | Sequence[str] | None


def matching(names: Iterable[str], pattern: Pattern = None) -> list[str]:
  """`names`, in their order, that match `pattern`: an fnmatch pattern ('convnext*', '*_cifar',
  'resnet[0-9]*') or a list of them (a name matching any one is kept); case-insensitive. None
  keeps every name; a pattern without wildcards matches that name only."""
  if pattern is None:
    return list(names)
  patterns = [pattern] if isinstance(pattern, str) else pattern
  if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) for p in patterns):
    raise TypeError(f"pattern must be a string or a list of strings, got {pattern!r}")
  patterns = [p.lower() for p in patterns]
  return [n for n in names if any(fnmatch.fnmatchcase(n.lower(), p) for p in patterns)]
