"""Tests of reading MusicCaps CSVs and captions files, bad rows included."""

from __future__ import annotations

import json
import os

import pytest

from musiclm_jax.data.manifest import ManifestRow, read_captions_file, read_musiccaps_csv
from musiclm_jax.data.skip_report import SkipReport

HEADER = (
  b"ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,author_id,"
  b"is_balanced_subset,is_audioset_eval\n"
)
# One line per case; the comment is the expected outcome.
ROWS = [
  b"plainId,30,40,/m/0,\"['low quality', 'strings']\",A quiet string melody.,4,False,True\n",  # 2
  b'dlName,0.0,10.0,/m/0,[],"Folk song,\nsung softly.",1,False,False\n',  # 3-4 (two lines)
  b"missingClip,30,40,/m/0,[],A song with no clip.,1,False,False\n",  # 5: missing_file
  b"latin1,30,40,/m/0,[],Caf\xe9 jazz,1,False,False\n",  # 6: non_utf8_caption
  b"emptyCap,30,40,/m/0,[],   ,1,False,False\n",  # 7: empty_caption
  b"tooFew,30,40,/m/0\n",  # 8: bad_row
  b"badTime,thirty,40,/m/0,[],Fine caption.,1,False,False\n",  # 9: bad_row
  b",30,40,/m/0,[],No id.,1,False,False\n",  # 10: bad_row
  b"\n",  # 11: blank, ignored
  b"plainId,30,40,/m/0,[],The same clip again.,1,False,False\n",  # 12: duplicate_id
  b"flacId,5,15,/m/0,jazz,Smooth jazz.,1,False,1\n",  # 13
]


def _touch(directory, *names) -> None:
  for name in names:
    (directory / name).write_bytes(b"RIFF")


@pytest.fixture
def musiccaps(tmp_path):
  clips = tmp_path / "clips"
  clips.mkdir()
  _touch(clips, "plainId.wav", "[dlName]-[0-10].wav", "flacId.flac", "flacId.txt", "latin1.wav")
  _touch(clips, "emptyCap.wav", "badTime.wav")
  csv_path = tmp_path / "musiccaps.csv"
  csv_path.write_bytes(HEADER + b"".join(ROWS))
  return os.fspath(csv_path), os.fspath(clips)


def test_musiccaps_rows_and_skips(musiccaps):
  csv_path, clips = musiccaps
  report = SkipReport("musiccaps")
  rows = list(read_musiccaps_csv(csv_path, clips, report=report))
  assert [row.id for row in rows] == ["plainId", "dlName", "flacId"]
  assert rows[0] == ManifestRow(
    id="plainId",
    audio_path=os.path.join(clips, "plainId.wav"),
    caption="A quiet string melody.",
    aspects=("low quality", "strings"),
    start_s=30.0,
    end_s=40.0,
    melody_group="plainId",
    score_id="plainId",
    split="eval",
    where=f"{csv_path}:2",
  )
  assert rows[1].audio_path == os.path.join(clips, "[dlName]-[0-10].wav")
  assert (rows[1].caption, rows[1].split, rows[1].where) == (
    "Folk song, sung softly.",
    "train",
    f"{csv_path}:3",
  )
  assert (rows[2].audio_path, rows[2].aspects, rows[2].split) == (
    os.path.join(clips, "flacId.flac"),
    ("jazz",),
    "eval",
  )
  assert report.counts == {
    "missing_file": 1,
    "non_utf8_caption": 1,
    "empty_caption": 1,
    "bad_row": 3,
    "duplicate_id": 1,
  }
  wheres = {r: [e["where"] for e in ex] for r, ex in report.to_dict()["examples"].items()}
  assert wheres["missing_file"] == [f"{csv_path}:5"]
  assert wheres["non_utf8_caption"] == [f"{csv_path}:6"]
  assert wheres["bad_row"] == [f"{csv_path}:{n}" for n in (8, 9, 10)]
  assert wheres["duplicate_id"] == [f"{csv_path}:12"]
  assert "byte 0xe9" in report.examples["non_utf8_caption"][0]["detail"]
  assert "missingClip{.wav,.flac,.ogg,.mp3}" in report.examples["missing_file"][0]["detail"]


def test_path_and_split_columns(tmp_path):
  (tmp_path / "audio").mkdir()
  _touch(tmp_path / "audio", "a.ogg")
  csv_path = tmp_path / "ours.csv"
  csv_path.write_text(
    "ytid,start_s,end_s,aspect_list,caption,file,split,melody_group,score_id\n"
    "x1,0,10,[],Bach chorale on organ.,a.ogg,validation,bwv66,bach/bwv66.6\n"
    "x2,0,10,[],Bach chorale on flute.,b.ogg,,bwv66,bach/bwv66.6\n"
  )
  report = SkipReport("ours")
  rows = list(
    read_musiccaps_csv(
      csv_path, tmp_path / "audio", report=report, path_column="file", split_column="split"
    )
  )
  assert [(r.id, r.split, r.melody_group, r.score_id) for r in rows] == [
    ("x1", "validation", "bwv66", "bach/bwv66.6")
  ]
  assert report.examples["missing_file"][0]["detail"].endswith("b.ogg does not exist")


@pytest.mark.parametrize(
  "header, kwargs, missing",
  [
    ("ytid,start_s,aspect_list,caption", {}, "end_s"),
    ("id,begin,end,text", {}, "ytid, start_s, end_s, caption"),
    ("ytid,start_s,end_s,caption", {"path_column": "file"}, "file"),
  ],
)
def test_missing_columns_are_a_user_error(tmp_path, header, kwargs, missing):
  csv_path = tmp_path / "bad_header.csv"
  csv_path.write_text(header + "\nabc,0,10,A caption.\n")
  with pytest.raises(ValueError, match=f"{csv_path}: the header lacks required column.*{missing}"):
    read_musiccaps_csv(csv_path, tmp_path, report=SkipReport("x"), **kwargs)


def test_missing_clips_folder(tmp_path):
  csv_path = tmp_path / "mc.csv"
  csv_path.write_bytes(HEADER)
  with pytest.raises(ValueError, match="the clips folder does not exist"):
    read_musiccaps_csv(csv_path, tmp_path / "nope", report=SkipReport("x"))


CAPTION_LINES = [
  {"file": "a.wav", "caption": "Solo piano.", "aspects": ["piano", "calm"]},  # 1
  {
    "path": "sub/b.flac",
    "caption": "  Two\nviolins. ",
    "split": "eval",
    "start_s": 1,
    "end_s": 5,
  },  # 2
  {"audio": "gone.wav", "caption": "Missing."},  # 3: missing_file
  {"file": "c.wav", "caption": ""},  # 4: empty_caption
  {"file": "c.wav", "caption": "Bad times.", "start_s": 5, "end_s": 1},  # 5: bad_line
  {"file": "c.wav"},  # 6: bad_line (no caption)
  {"file": "a.wav", "caption": "Same file again.", "id": "a"},  # 7: duplicate_id
  {"file": "c.wav", "caption": "Custom id.", "id": "clip-c", "aspect_list": "['x']"},  # 8
  {"file": "c.wav", "caption": 42},  # 9: bad_line
]


@pytest.fixture
def audio_dir(tmp_path):
  (tmp_path / "audio" / "sub").mkdir(parents=True)
  _touch(tmp_path / "audio", "a.wav", "sub/b.flac", "c.wav")
  return tmp_path / "audio"


def test_jsonl_captions(tmp_path, audio_dir):
  lines = [json.dumps(d).encode() for d in CAPTION_LINES]
  lines += [b"{not json", b"", b"[1, 2]", b'{"file": "c.wav", "caption": "Caf\xe9"}']  # 10-13
  path = tmp_path / "captions.jsonl"
  path.write_bytes(b"\n".join(lines) + b"\n")
  report = SkipReport("jsonl")
  rows = list(read_captions_file(path, audio_dir, report=report))
  assert [(r.id, r.caption, r.aspects, r.split) for r in rows] == [
    ("a", "Solo piano.", ("piano", "calm"), "train"),
    (os.path.join("sub", "b"), "Two violins.", (), "eval"),
    ("clip-c", "Custom id.", ("x",), "train"),
  ]
  assert (rows[1].start_s, rows[1].end_s, rows[1].where) == (1.0, 5.0, f"{path}:2")
  assert report.counts == {
    "missing_file": 1,
    "empty_caption": 1,
    "bad_line": 5,
    "duplicate_id": 1,
    "non_utf8_caption": 1,
  }
  bad = [(e["where"], e["detail"]) for e in report.examples["bad_line"]]
  assert [w for w, _ in bad] == [f"{path}:{n}" for n in (5, 6, 9, 10, 12)]
  assert "must be text, got int" in bad[2][1]
  assert "not JSON" in bad[3][1] and "expected a JSON object, got list" in bad[4][1]


def test_csv_captions(tmp_path, audio_dir):
  path = tmp_path / "captions.csv"
  path.write_bytes(
    b"file,caption,aspects\n"
    b'a.wav,Solo piano.,"piano, calm"\n'
    b"gone.wav,Missing.,\n"
    b"c.wav,\xff\xfe,\n"
    b"c.wav\n"
  )
  report = SkipReport("csv")
  rows = list(read_captions_file(path, audio_dir, report=report))
  assert [(r.id, r.aspects) for r in rows] == [("a", ("piano", "calm"))]
  assert report.counts == {"missing_file": 1, "non_utf8_caption": 1, "bad_row": 1}
  assert report.examples["bad_row"][0]["where"] == f"{path}:5"


@pytest.mark.parametrize(
  "name, content, match",
  [
    ("captions.txt", "", "must be .csv or .jsonl, not '.txt'"),
    ("captions.csv", "name,caption\n", "needs an audio path column"),
    ("captions.csv", "file,text\n", "lacks required column.*caption"),
    ("captions.csv", "", "no CSV header"),
  ],
)
def test_captions_file_user_errors(tmp_path, name, content, match):
  path = tmp_path / name
  path.write_text(content)
  with pytest.raises(ValueError, match=match):
    read_captions_file(path, tmp_path, report=SkipReport("x"))
