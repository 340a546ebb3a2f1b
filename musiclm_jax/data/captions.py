"""Caption text from user files: strict UTF-8, normalised whitespace, MusicCaps aspect lists.

A caption that cannot be decoded or is empty raises `CaptionError`, naming where it came from
(`file:line`), so that manifest readers can skip the row and count it (DESIGN §8).
"""

from __future__ import annotations

import ast
import json
import re
from typing import Literal

CaptionReason = Literal["non_utf8", "empty"]

_ADVICE = {
  "non_utf8": "save the captions file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
  "empty": "write a caption for this clip or remove the row",
}
# Control characters other than whitespace (NUL, BEL, ESC, DEL, ...) count as spaces.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_WHITESPACE = re.compile(r"\s+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class CaptionError(ValueError):
  """A caption that cannot be used.

  Attributes:
    where: its source, e.g. 'captions.csv:17'.
    reason: 'non_utf8' or 'empty'.
    detail: what exactly is wrong.
  """

  def __init__(self, where: str, reason: str, detail: str = ""):
    self.where = where
    self.reason = reason
    self.detail = detail
    message = f"{where}: {reason} caption" + (f": {detail}" if detail else "")
    super().__init__(f"{message}. What to do: {_ADVICE.get(reason, 'fix the caption')}.")

  def __reduce__(self):
    return (type(self), (self.where, self.reason, self.detail))


def _decode(raw: bytes | str, where: str) -> str:
  """Strict UTF-8 text; a str holding lone surrogates (from errors='surrogateescape') is invalid."""
  if isinstance(raw, bytes):
    try:
      return raw.decode("utf-8")
    except UnicodeDecodeError as e:
      detail = f"byte {raw[e.start]:#04x} at offset {e.start} is not valid UTF-8"
      raise CaptionError(where, "non_utf8", detail) from e
  match = _SURROGATE.search(raw)
  if match:
    byte = ord(match.group()) - 0xDC00
    detail = f"character {match.start()} is not valid UTF-8" + (
      f" (byte {byte:#04x})" if 0 <= byte < 256 else ""
    )
    raise CaptionError(where, "non_utf8", detail)
  return raw


def clean_caption(raw: bytes | str, *, where: str) -> str:
  """Decodes and normalises one caption.

  Args:
    raw: the caption as bytes (decoded as strict UTF-8) or str.
    where: its source for errors, e.g. 'captions.csv:17'.

  Returns:
    The caption with a leading BOM and control characters removed, whitespace runs collapsed
    to one space and the ends stripped.

  Raises:
    CaptionError: 'non_utf8' or 'empty'.
  """
  text = _decode(raw, where).lstrip("\ufeff")
  text = _WHITESPACE.sub(" ", _CONTROL.sub(" ", text)).strip()
  if not text:
    raise CaptionError(where, "empty", "the caption is empty or only whitespace")
  return text


def _parse_list_literal(text: str) -> list | None:
  """A JSON or Python list literal, or None if `text` is neither (never evaluates code)."""
  for parse in (json.loads, ast.literal_eval):
    try:
      value = parse(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
      continue
    if isinstance(value, list | tuple):
      return list(value)
  return None


def parse_aspect_list(raw: str, *, where: str = "<aspect_list>") -> tuple[str, ...]:
  """Parses a list of aspect tags.

  Accepts MusicCaps' Python-literal lists ("['low quality', 'sustained strings melody']"),
  JSON lists and plain comma-separated text ("low quality, strings"). A malformed list literal
  is read leniently as comma-separated text with brackets and quotes removed.

  Args:
    raw: the field's text.
    where: its source for errors.

  Returns:
    The non-empty tags, whitespace-normalised, in order; () for an empty field.

  Raises:
    CaptionError: 'non_utf8' if `raw` holds undecodable bytes.
  """
  text = _decode(raw, where).strip()
  if not text:
    return ()
  items = _parse_list_literal(text) if text.startswith("[") else None
  if items is None:
    items = [part.strip().strip("'\"") for part in text.strip("[]").split(",")]
  tags = (_WHITESPACE.sub(" ", _CONTROL.sub(" ", str(item))).strip() for item in items)
  return tuple(tag for tag in tags if tag)
