"""Inputs the builder tests write themselves: sine-wave clips, a real-format MusicCaps CSV,
captions CSVs."""

from __future__ import annotations

import csv
import pathlib

import numpy as np
import soundfile as sf

MUSICCAPS_HEADER = (
  "ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,author_id,"
  "is_balanced_subset,is_audioset_eval"
)
# ytid -> (clip seconds, file rate, channels, file name under audio/, is_audioset_eval);
# clips that are not written or not good say why instead.
MUSICCAPS_CLIPS = {
  "-0Gj8-vB1q4": (2.0, 48_000, 2, "-0Gj8-vB1q4.wav", False),
  "-0SdAVK79lg": (1.5, 24_000, 1, "[-0SdAVK79lg]-[30-40].flac", False),
  "-0xzrMun0Rs": "missing_file",  # never downloaded
  "-1LrH01Ei1w": "corrupt",
  "-1OlgJWehn8": "non_utf8_caption",
  "-2aZ0dmAcLk": "too_short",  # eval; before the good eval clip, so the driver meets it
  "-0vPFx-wRRI": (2.5, 16_000, 1, "-0vPFx-wRRI.wav", True),
}
MUSICCAPS_KEPT = {"train": {"-0Gj8-vB1q4": 2.0, "-0SdAVK79lg": 1.5}, "eval": {"-0vPFx-wRRI": 2.5}}
MUSICCAPS_SKIPPED = {"missing_file": 1, "corrupt": 1, "non_utf8_caption": 1, "too_short": 1}
ASPECTS = ("low quality", "sustained strings melody", "soft female vocal")


def write_sine(path: pathlib.Path, seconds: float, rate: int, channels: int = 1) -> None:
  """A 440 Hz sine at amplitude 0.3 (soundfile picks the format from the suffix)."""
  t = np.arange(int(seconds * rate)) / rate
  audio = 0.3 * np.sin(2 * np.pi * 440.0 * t)
  audio = np.stack([audio] * channels, axis=-1) if channels > 1 else audio
  path.parent.mkdir(parents=True, exist_ok=True)
  sf.write(path, audio.astype(np.float32), rate)


def _musiccaps_line(ytid: str, caption: str, is_eval: bool) -> str:
  aspects = '"[' + ", ".join(f"'{a}'" for a in ASPECTS) + ']"'
  return f'{ytid},30,40,"/m/0140xf,/m/02cjck,/m/04rlf",{aspects},"{caption}",4,False,{is_eval}\n'


def musiccaps_caption(ytid: str) -> str:
  return f"The low quality recording features a sine tone, clip {ytid}."


def write_musiccaps(manual_dir: pathlib.Path) -> pathlib.Path:
  """manual_dir/musiccaps-public.csv and manual_dir/audio/ as MUSICCAPS_CLIPS says."""
  audio = manual_dir / "audio"
  lines = [MUSICCAPS_HEADER + "\n"]
  for ytid, clip in MUSICCAPS_CLIPS.items():
    is_eval = clip == "too_short" or (isinstance(clip, tuple) and clip[4])
    lines.append(_musiccaps_line(ytid, musiccaps_caption(ytid), is_eval))
    if isinstance(clip, tuple):
      write_sine(audio / clip[3], clip[0], clip[1], clip[2])
  write_sine(audio / "-1OlgJWehn8.wav", 1.0, 24_000)
  write_sine(audio / "-2aZ0dmAcLk.wav", 0.2, 24_000)
  (audio / "-1LrH01Ei1w.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" * 8)
  data = "".join(lines).encode("utf-8")
  data = data.replace(b"sine tone, clip -1OlgJWehn8", b"sine tone \xe9\xff clip -1OlgJWehn8")
  csv_path = manual_dir / "musiccaps-public.csv"
  csv_path.write_bytes(data)
  return csv_path


def write_captions_csv(path: pathlib.Path, rows: list[dict[str, str]]) -> None:
  """A captions CSV with the rows' keys as its header."""
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
