"""What an exception says, in one line: for the `error: ...` lines and notes jaxlab prints."""

from __future__ import annotations


def first_line(error: BaseException, limit: int = 200) -> str:
  """The first line of the error's message (at most `limit` characters), or its type's name when
  the message is empty."""
  text = str(error).strip()
  return text.splitlines()[0][:limit] if text else type(error).__name__
