"""`musiclm-jax codec encode|decode` with the token_world codec: files round-trip, bad files are
reported per file while the rest go on."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from musiclm_jax.data import audio_io
from musiclm_jax.main import cli
from musiclm_jax.tokenizers.codec_api import load_codec

pytestmark = pytest.mark.xdist_group("token_world")

RATE = 24_000


@pytest.fixture(scope="module")
def codec_dir(token_world) -> str:
  return os.path.join(token_world.tokenizers_dir, "codec")


@pytest.fixture()
def wavs(tmp_path):
  t = np.arange(RATE) / RATE
  audio_io.write_wav(tmp_path / "a.wav", 0.3 * np.sin(2 * np.pi * 440 * t), RATE)
  stereo = 0.3 * np.sin(2 * np.pi * 330 * np.arange(44_100 * 1.5) / 44_100)
  audio_io.write_wav(tmp_path / "b.wav", np.stack([stereo, stereo], 1), 44_100)
  (tmp_path / "broken.wav").write_bytes(b"RIFF" + b"\0" * 64)
  return tmp_path


def test_encode_then_decode_round_trips_files(codec_dir, wavs, tmp_path, capsys):
  codes_dir, audio_dir = tmp_path / "codes", tmp_path / "decoded"
  argv = ["codec", "encode", f"--codec_dir={codec_dir}", f"--out_dir={codes_dir}"]
  assert cli.main([*argv, str(wavs / "a.wav"), str(wavs / "b.wav")]) == 0
  codec = load_codec(codec_dir)
  with np.load(codes_dir / "a.npz") as a:
    assert a["codes"].dtype == np.int32 and a["codes"].shape == (
      codec.num_frames(RATE),
      codec.num_levels,
    )
    expected = np.asarray(codec.encode(audio_io.load_audio(wavs / "a.wav", RATE)[None]))[0]
    np.testing.assert_array_equal(a["codes"], expected)
  argv = ["codec", "decode", f"--codec_dir={codec_dir}", f"--out_dir={audio_dir}", "--levels=2"]
  assert cli.main([*argv, str(codes_dir / "a.npz"), str(codes_dir / "b.npz")]) == 0
  decoded, rate = sf.read(audio_dir / "b.wav")
  assert rate == RATE and len(decoded) == round(1.5 * RATE)  # resampled, cut to the clip
  two_levels = np.asarray(codec.decode(expected[None, :, :2]))[0, :RATE]
  a_decoded, _ = sf.read(audio_dir / "a.wav", dtype="float32")
  np.testing.assert_allclose(a_decoded, np.clip(two_levels, -1, 1), atol=1 / 2**14)


def test_bad_files_are_reported_and_the_rest_go_on(codec_dir, wavs, tmp_path, capsys):
  codes_dir = tmp_path / "codes"
  argv = ["codec", "encode", f"--codec_dir={codec_dir}", f"--out_dir={codes_dir}"]
  assert cli.main([*argv, str(wavs / "broken.wav"), str(wavs / "a.wav")]) == 1
  err = capsys.readouterr().err
  assert "broken.wav" in err and "1 of 2 files failed" in err
  assert (codes_dir / "a.npz").exists() and not (codes_dir / "broken.npz").exists()
  np.savez(codes_dir / "wrong.npz", codes=np.zeros((3, 4, 5), np.int32))
  argv = ["codec", "decode", f"--codec_dir={codec_dir}", f"--out_dir={tmp_path / 'out'}"]
  assert cli.main([*argv, str(codes_dir / "wrong.npz"), str(wavs / "a.wav")]) == 1
  err = capsys.readouterr().err
  assert "wrong.npz" in err and "[frames, levels]" in err and "not a codes file" in err


def test_bad_flags_exit_2_before_any_work(codec_dir, wavs, tmp_path, capsys):
  base = ["codec", "decode", f"--out_dir={tmp_path}", str(wavs / "a.wav")]
  assert cli.main([*base, f"--codec_dir={tmp_path / 'missing'}"]) == 2
  assert "no such folder" in capsys.readouterr().err
  assert cli.main([*base, f"--codec_dir={codec_dir}", "--levels=99"]) == 2
  assert "--levels=99" in capsys.readouterr().err
