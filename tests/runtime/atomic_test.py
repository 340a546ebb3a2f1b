"""Tests of the atomic-write helpers: all of the new content or all of the old, never a part."""

import json
import os
import stat

import pytest

from musiclm_jax.runtime import atomic


def test_writes_bytes_text_and_json(tmp_path):
  atomic.atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
  atomic.atomic_write_text(tmp_path / "sub" / "b.txt", "héllo")  # parents are created
  atomic.atomic_write_json(str(tmp_path / "c.json"), {"step": 3})
  assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
  assert (tmp_path / "sub" / "b.txt").read_text("utf-8") == "héllo"
  assert json.loads((tmp_path / "c.json").read_text()) == {"step": 3}
  assert stat.S_IMODE(os.stat(tmp_path / "a.bin").st_mode) == 0o644
  assert sorted(os.listdir(tmp_path)) == ["a.bin", "c.json", "sub"]


def test_a_writer_that_raises_midway_leaves_the_old_content_and_no_temporary(tmp_path):
  path = tmp_path / "metrics.json"
  path.write_text("old")
  with pytest.raises(RuntimeError, match="killed"):
    with atomic.atomic_path(path) as tmp:
      with open(tmp, "w") as f:
        f.write("half of the new")
        f.flush()
        assert os.path.dirname(tmp) == str(tmp_path)
        raise RuntimeError("killed")
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["metrics.json"]


def test_an_unserialisable_json_value_leaves_the_old_content(tmp_path):
  path = tmp_path / "state.json"
  atomic.atomic_write_json(path, {"a": 1})
  with pytest.raises(TypeError):
    atomic.atomic_write_json(path, {"a": object()})
  assert json.loads(path.read_text()) == {"a": 1}
  assert os.listdir(tmp_path) == ["state.json"]


def test_replaces_an_existing_file(tmp_path):
  path = tmp_path / "x.txt"
  atomic.atomic_write_text(path, "one")
  atomic.atomic_write_text(path, "two")
  assert path.read_text() == "two"


def test_a_kill_between_writing_and_renaming_leaves_the_old_file(tmp_path, monkeypatch):
  path = tmp_path / "clip.wav"
  atomic.atomic_write_bytes(path, b"old")

  def boom(src, dst):
    raise KeyboardInterrupt  # as if killed between writing and renaming

  monkeypatch.setattr(os, "replace", boom)
  with pytest.raises(KeyboardInterrupt):
    atomic.atomic_write_bytes(path, b"new")
  assert path.read_bytes() == b"old"
  assert os.listdir(tmp_path) == ["clip.wav"]
