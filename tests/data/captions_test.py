"""Tests of caption cleaning and aspect-list parsing."""

from __future__ import annotations

import pytest

from musiclm_jax.data.captions import CaptionError, clean_caption, parse_aspect_list


@pytest.mark.parametrize(
  "raw, expected",
  [
    ("A calm piano piece.", "A calm piano piece."),
    (b"  A calm\tpiano\n\npiece.  ", "A calm piano piece."),
    ("\ufeffBOM first", "BOM first"),
    ("Caf\u00e9 jazz\x00with a NUL", "Caf\u00e9 jazz with a NUL"),
    ("Caf\u00e9 jazz".encode(), "Caf\u00e9 jazz"),
  ],
)
def test_clean_caption(raw, expected):
  assert clean_caption(raw, where="c.csv:2") == expected


@pytest.mark.parametrize(
  "raw, reason, text",
  [
    (b"Caf\xe9 jazz", "non_utf8", "byte 0xe9 at offset 3"),
    (b"Caf\xe9 jazz".decode("utf-8", "surrogateescape"), "non_utf8", "(byte 0xe9)"),
    ("", "empty", "empty or only whitespace"),
    (b" \t\n ", "empty", "empty or only whitespace"),
  ],
)
def test_bad_captions_name_where_they_are(raw, reason, text):
  with pytest.raises(CaptionError) as info:
    clean_caption(raw, where="captions.csv:17")
  assert (info.value.where, info.value.reason) == ("captions.csv:17", reason)
  message = str(info.value)
  assert message.startswith("captions.csv:17: ") and text in message and "What to do:" in message


@pytest.mark.parametrize(
  "raw, expected",
  [
    ("['low quality', 'sustained strings melody']", ("low quality", "sustained strings melody")),
    ("[\"children's music\", 'folk']", ("children's music", "folk")),
    ('["jazz", "  smooth   sax "]', ("jazz", "smooth sax")),
    ("jazz, smooth sax ,, piano", ("jazz", "smooth sax", "piano")),
    ("['unterminated', 'list'", ("unterminated", "list")),
    ("[]", ()),
    ("  ", ()),
    ("", ()),
  ],
)
def test_parse_aspect_list(raw, expected):
  assert parse_aspect_list(raw) == expected


def test_aspect_lists_are_never_evaluated():
  raw = "[__import__('os').system('echo pwned')]"
  assert parse_aspect_list(raw) == ("__import__('os').system('echo pwned')",)


def test_non_utf8_aspects():
  with pytest.raises(CaptionError, match="^m.csv:3: non_utf8"):
    parse_aspect_list(b"['caf\xe9']".decode("utf-8", "surrogateescape"), where="m.csv:3")
