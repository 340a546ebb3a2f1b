"""Tests of the kept/skipped report data jobs write."""

from __future__ import annotations

import json
import os

from musiclm_jax.data.skip_report import SkipReport


def _report(name: str = "musiccaps/train") -> SkipReport:
  report = SkipReport(name, max_examples_per_reason=2)
  report.keep(97)
  for line in range(3, 6):
    report.skip("missing_file", f"mc.csv:{line}", "no clip")
  report.skip("corrupt", "mc.csv:9 (clips/x.wav)", "not an audio format")
  return report


def test_counts_and_summary():
  report = _report()
  assert (report.kept, report.skipped) == (97, 4)
  assert report.counts == {"missing_file": 3, "corrupt": 1}
  assert report.summary_line() == "kept 97, skipped 4 (missing_file: 3, corrupt: 1)"
  assert SkipReport("empty").summary_line() == "kept 0, skipped 0"


def test_examples_are_capped_per_reason():
  examples = _report().to_dict()["examples"]
  assert examples["missing_file"] == [
    {"where": "mc.csv:3", "detail": "no clip"},
    {"where": "mc.csv:4", "detail": "no clip"},
  ]
  assert len(examples["corrupt"]) == 1


def test_merge_adds_counts_and_caps_examples():
  total = _report()
  total.merge(_report("worker 2"))
  assert (total.kept, total.skipped) == (194, 8)
  assert total.counts == {"missing_file": 6, "corrupt": 2}
  assert [len(v) for v in total.to_dict()["examples"].values()] == [2, 2]


def test_write_and_read_back(tmp_path):
  report = _report()
  report.skip("missing_file", "caf\udce9.csv:2")  # a non-UTF-8 path still serialises
  path = tmp_path / "reports" / "skips.json"
  report.write(path)
  assert os.listdir(path.parent) == ["skips.json"]
  loaded = json.loads(path.read_text())
  assert loaded["name"] == "musiccaps/train"
  assert (loaded["kept"], loaded["skipped"], loaded["by_reason"]) == (
    97,
    5,
    {"corrupt": 1, "missing_file": 4},
  )
  assert SkipReport.from_dict(loaded).to_dict() == report.to_dict()


def test_every_lists_all_skips_of_a_reason_beyond_the_examples_cap():
  report = SkipReport("musiccaps/train", max_examples_per_reason=2)
  report.skip("missing_file", "mc.csv:2")  # before list_every: not listed
  report.list_every("missing_file")
  for line in range(3, 8):
    report.skip("missing_file", f"mc.csv:{line}")
  report.skip("corrupt", "mc.csv:9")
  assert report.every("missing_file") == [f"mc.csv:{line}" for line in range(3, 8)]
  assert report.every("corrupt") == [] and len(report.examples["missing_file"]) == 2
  worker = SkipReport("worker")
  worker.list_every("missing_file")
  worker.skip("missing_file", "mc.csv:20")
  report.merge(worker)
  assert report.every("missing_file")[-1] == "mc.csv:20" and report.counts["missing_file"] == 7


def test_files_beside_the_report_survive_writing_and_reading(tmp_path):
  report = _report()
  assert "files" not in report.to_dict()  # reports without files keep their old shape
  report.add_file("missing_clips", "missing_clips.csv")
  report.write(tmp_path / "skips.json")
  loaded = SkipReport.from_dict(json.loads((tmp_path / "skips.json").read_text()))
  assert loaded.files == {"missing_clips": "missing_clips.csv"}
  assert loaded.to_dict() == report.to_dict()
