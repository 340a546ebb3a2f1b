"""Reconstruction quality of a trained codec (SoundStream or spectral) next to Opus, on held-out clips.

`compare_with_opus(codec, clips)` decodes every clip with the codec at a few numbers of RVQ levels
(1, the 4 coarse levels, all) and round-trips it through Opus (`opusenc`/`opusdec` of opus-tools)
at 6 and 12 kbps, then scores each reconstruction against the original with the training metric
`mel_distance` (mean |Δ log-mel|, lower is better), SI-SNR (dB, higher is better) and frame-wise
chroma cosine (do the notes survive; DESIGN §10), and, given each clip's MIDI, the note F1 of
basic-pitch's transcription. An 'original' row scores the clips themselves: chroma 1 and the
transcriber's own note F1, the ceiling of that column. `musiclm-jax bench codec-quality` prints the
table for BENCHMARKS.md.

Opus codes 48 kHz internally, so 24 kHz clips are resampled up with soxr, encoded, decoded at 48
kHz (opusdec removes the encoder's pre-skip and trims to the original length using the final
granule position), resampled back down and cut or zero-padded to exactly the input length.
`opus_round_trip` at a high bitrate gives an SI-SNR of > 20 dB, which checks that alignment.

`reconstruction_distances` and `latent_errors` are the two per-level curves that tell a codec's
quantizer from its decoder when deeper levels stop helping (for reports and tests).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from musiclm_jax.data import audio_io
from musiclm_jax.data.audio_batches import AudioSource, audio_crop_dataset
from musiclm_jax.tokenizers.codec_api import AudioCodec
from musiclm_jax.tokenizers.soundstream.codec import SoundStreamCodec
from musiclm_jax.tokenizers.soundstream.losses import mel_distance
from musiclm_jax.tokenizers.soundstream.model import SoundStream

OPUS_RATE = 48_000
DEFAULT_OPUS_KBPS = (6.0, 12.0)
OPUS_PACKAGE = "opus-tools"
# Clips per codec call: bounds the activation memory of long clips.
_CODEC_BATCH = 8


def si_snr(estimate: np.ndarray, reference: np.ndarray, eps: float = 1e-8) -> np.ndarray:
  """Scale-invariant signal-to-noise ratio in dB, per clip (Le Roux et al., 2019).

  Both signals are made zero-mean; the reference is scaled to its projection on the estimate's
  direction, s_t = (<ŝ, s> / ||s||²) s, and SI-SNR = 10 log10(||s_t||² / ||ŝ - s_t||²). Gains
  of the estimate do not change it; added noise or distortion lowers it. 0 dB: the error is as
  loud as the part of the estimate explained by the reference.

  Args:
    estimate: [n, samples] (or [samples]) reconstructed audio.
    reference: the original audio, same shape.
    eps: floor of the energies (a silent reference or a perfect estimate stays finite).
  Returns:
    float64 [n] (or a scalar for 1-D input) SI-SNR in dB.
  """
  estimate, reference = np.asarray(estimate, np.float64), np.asarray(reference, np.float64)
  if estimate.shape != reference.shape:
    raise ValueError(f"si_snr needs one shape, got {estimate.shape} and {reference.shape}.")
  estimate = estimate - estimate.mean(axis=-1, keepdims=True)
  reference = reference - reference.mean(axis=-1, keepdims=True)
  scale = np.sum(estimate * reference, axis=-1, keepdims=True) / (
    np.sum(reference**2, axis=-1, keepdims=True) + eps
  )
  target = scale * reference
  noise = estimate - target
  return 10.0 * np.log10((np.sum(target**2, axis=-1) + eps) / (np.sum(noise**2, axis=-1) + eps))


def _opus_tools() -> tuple[str, str]:
  tools = shutil.which("opusenc"), shutil.which("opusdec")
  if None in tools:
    raise FileNotFoundError(
      "opusenc/opusdec not found on PATH; install the Debian package "
      f"'{OPUS_PACKAGE}' (apt-get install {OPUS_PACKAGE}, or `make system-deps` as root)."
    )
  return tools


def _fit_length(audio: np.ndarray, length: int) -> np.ndarray:
  """Cuts or zero-pads the end of [samples] audio to exactly `length` samples."""
  if len(audio) >= length:
    return audio[:length]
  return np.pad(audio, (0, length - len(audio)))


def opus_round_trip(audio: np.ndarray, sample_rate: int, kbps: float) -> np.ndarray:
  """Encodes and decodes one mono clip with Opus (hard CBR at `kbps`) via opus-tools.

  Args:
    audio: [samples] float audio in [-1, 1] at `sample_rate`.
    sample_rate: Hz of the input (and of the output).
    kbps: Opus bitrate in kbit/s (6 to 256 for mono).
  Returns:
    float32 [samples]: the decoded audio at `sample_rate`, sample-aligned with the input.
  Raises:
    FileNotFoundError: opus-tools is not installed (names the package).
    subprocess.CalledProcessError: opusenc or opusdec failed.
  """
  opusenc, opusdec = _opus_tools()
  audio = np.asarray(audio, np.float32)
  upsampled = audio_io.resample(audio, sample_rate, OPUS_RATE)
  with tempfile.TemporaryDirectory(prefix="opus_") as tmp:
    wav, opus, raw = (os.path.join(tmp, name) for name in ("in.wav", "out.opus", "out.f32"))
    audio_io.write_wav(wav, upsampled, OPUS_RATE, subtype="PCM_24")
    encode = [opusenc, "--quiet", "--hard-cbr", "--bitrate", f"{kbps:g}", wav, opus]
    subprocess.run(encode, check=True, capture_output=True)
    decode = [opusdec, "--quiet", "--rate", str(OPUS_RATE), "--float", opus, raw]
    subprocess.run(decode, check=True, capture_output=True)
    decoded = np.fromfile(raw, dtype="<f4")
  decoded = _fit_length(decoded, len(upsampled))
  return _fit_length(audio_io.resample(decoded, OPUS_RATE, sample_rate), len(audio))


def codec_kbps(codec: AudioCodec, levels: int) -> float:
  """Bitrate of `levels` RVQ levels: levels × log2(codebook_size) × frame_rate, in kbit/s."""
  return levels * math.log2(codec.codebook_size) * codec.frame_rate / 1000.0


def codec_reconstructions(
  codec: AudioCodec, clips: np.ndarray, levels: Sequence[int]
) -> dict[int, np.ndarray]:
  """Encode once, decode with each number of levels.

  Args:
    codec: a trained (or random) codec.
    clips: [n, samples] float audio at `codec.sample_rate`.
    levels: numbers of leading RVQ levels to decode with.
  Returns:
    {levels: float32 [n, samples]} reconstructions, cut to the clips' length.
  """
  out = {n: [] for n in levels}
  for start in range(0, len(clips), _CODEC_BATCH):
    batch = clips[start : start + _CODEC_BATCH]
    codes = codec.encode(batch)
    for n in levels:
      decoded = np.asarray(codec.decode(codes[..., :n]))[:, : batch.shape[-1]]
      out[n].append(decoded)
  return {n: np.concatenate(parts) for n, parts in out.items()}


def score(
  reconstructions: np.ndarray,
  clips: np.ndarray,
  sample_rate: int,
  reference_notes: Sequence[np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
  """Per-clip metrics of [n, samples] reconstructions against the [n, samples] clips.

  Args:
    reference_notes: each clip's notes ((onset_s, offset_s, pitch) rows, `notes.midi_notes`);
      None: no note F1.
  Returns:
    {'mel_distance': float [n] (training metric, lower is better),
     'si_snr_db': float [n] (higher is better),
     'chroma_cosine': float [n] (higher is better),
     'note_f1': float [n] (with reference_notes; higher is better)}.
  """
  from musiclm_jax.evaluation import music_stats, notes

  distance = mel_distance(jnp.asarray(reconstructions), jnp.asarray(clips), sample_rate)
  metrics = {
    "mel_distance": np.asarray(distance),
    "si_snr_db": si_snr(reconstructions, clips),
    "chroma_cosine": np.array(
      [music_stats.chroma_cosine(r, c, sample_rate) for r, c in zip(reconstructions, clips)]
    ),
  }
  if reference_notes is not None:
    transcriber = notes.load_note_transcriber()
    metrics["note_f1"] = np.array(
      [
        notes.note_scores(transcriber.transcribe(r, sample_rate), ref)["f1"]
        for r, ref in zip(reconstructions, reference_notes)
      ]
    )
  return metrics


def reconstruction_distances(
  codec: AudioCodec, audio: np.ndarray, levels: tuple[int, ...]
) -> dict[int, float]:
  """Mean mel distance of encode → decode with each number of levels.

  Args:
    codec: a trained (or random) codec.
    audio: [n, samples] float audio at `codec.sample_rate`.
    levels: numbers of leading RVQ levels to decode with.
  Returns:
    {levels: mean mel distance} (lower is better).
  """
  codes = codec.encode(audio)
  out = {}
  for n in levels:
    decoded = codec.decode(codes[..., :n])[:, : audio.shape[-1]]
    out[n] = float(jnp.mean(mel_distance(decoded, jnp.asarray(audio), codec.sample_rate)))
  return out


def latent_errors(
  codec: SoundStreamCodec, audio: np.ndarray, levels: tuple[int, ...]
) -> dict[int, float]:
  """RMS of encoder output minus its quantization with each number of levels.

  Tells a quantizer that stopped refining (this grows flat in the levels) from a decoder that
  does not use what deeper levels add (this falls, `reconstruction_distances` does not).

  Args:
    codec: a trained (or random) codec.
    audio: [n, samples] float audio at `codec.sample_rate`.
    levels: numbers of leading RVQ levels to quantize with.
  Returns:
    {levels: RMS latent error}.
  """
  model = SoundStream(codec.config)
  latent = model.apply(codec.variables, jnp.asarray(audio), method=SoundStream.embed)
  codes = codec.encode(audio)
  out = {}
  for n in levels:
    quantized = model.apply(
      codec.variables, codes[..., :n], method=lambda m, c: m.quantizer.decode(c)
    )
    out[n] = float(jnp.sqrt(jnp.mean(jnp.square(latent - quantized))))
  return out


def _row(system: str, kbps: float | None, metrics: dict[str, np.ndarray], **extra) -> dict:
  means = {name: float(np.mean(values)) for name, values in metrics.items()}
  return {
    "system": system,
    **extra,
    "kbps": None if kbps is None else round(kbps, 3),
    **means,
    "num_clips": len(metrics["mel_distance"]),
  }


def default_levels(codec: AudioCodec) -> tuple[int, ...]:
  """1 level, the 4 coarse levels and all levels (those that exist, without repeats)."""
  return tuple(sorted({n for n in (1, 4, codec.num_levels) if n <= codec.num_levels}))


def compare_with_opus(
  codec: AudioCodec,
  clips: np.ndarray,
  levels: Sequence[int] | None = None,
  opus_kbps: Sequence[float] = DEFAULT_OPUS_KBPS,
  round_trip: Callable[[np.ndarray, int, float], np.ndarray] = opus_round_trip,
  reference_notes: Sequence[np.ndarray] | None = None,
) -> list[dict]:
  """The quality table: the codec at each number of levels, Opus at each bitrate, the original.

  Args:
    codec: the codec to judge (e.g. `tokenizers.codec_api.load_codec(model_dir)`).
    clips: [n, samples] held-out float audio at `codec.sample_rate`.
    levels: RVQ levels to decode with (default `default_levels(codec)`).
    opus_kbps: Opus bitrates in kbit/s.
    round_trip: (audio [samples], sample_rate, kbps) -> decoded [samples]; Opus by default.
    reference_notes: each clip's MIDI notes; adds note F1 (see `score`).
  Returns:
    One dict per system, codec rows first: system (the codec's `name`, 'opus' or 'original'), levels
    (codec rows), kbps, mel_distance, si_snr_db, chroma_cosine (and note_f1): means over clips,
    num_clips.
  """
  clips = np.asarray(clips, np.float32)
  if clips.ndim != 2 or not clips.size:
    raise ValueError(f"Expected clips [n, samples], got shape {clips.shape}.")
  sr = codec.sample_rate
  rows = []
  decoded = codec_reconstructions(codec, clips, levels or default_levels(codec))
  judge = lambda audio: score(audio, clips, sr, reference_notes)  # noqa: E731
  for n, audio in decoded.items():
    rows.append(_row(codec.name, codec_kbps(codec, n), judge(audio), levels=n))
  for kbps in opus_kbps:
    audio = np.stack([round_trip(clip, sr, kbps) for clip in clips])
    rows.append(_row("opus", kbps, judge(audio), levels=None))
  rows.append(_row("original", None, judge(clips), levels=None))
  return rows


def held_out_clips(
  source: AudioSource, split: str = "eval", num_clips: int = 16, seconds: float = 4.0
) -> np.ndarray:
  """The first `num_clips` windows of `seconds` from the start of each clip of `split` (in file
  order; near-silent windows skipped), as float32 [num_clips, samples] at the source's rate.

  Raises:
    ValueError: the split holds fewer clips.
  """
  samples = int(round(seconds * source.sample_rate))
  dataset = audio_crop_dataset(
    source, split=split, crop_samples=samples, batch_size=1, seed=0, shuffle=False, num_epochs=1
  )
  clips = [batch["audio"][0] for _, batch in zip(range(num_clips), dataset.as_numpy_iterator())]
  if len(clips) < num_clips:
    raise ValueError(f"Split {split!r} of {source.name} has only {len(clips)} usable clips.")
  return np.stack(clips)


def corpus_clips_with_notes(
  corpus_dir: str, split: str, num_clips: int, seconds: float, sample_rate: int
) -> tuple[np.ndarray, list[np.ndarray]]:
  """The first `seconds` of `num_clips` clips of a rendered corpus's split, with their MIDI notes.

  Notes starting after the cut are dropped and offsets past it are clipped, so the reference
  holds exactly what the clip does.

  Returns:
    (float32 [num_clips, samples] at `sample_rate`, [notes] one (onset, offset, pitch) array each).
  Raises:
    ValueError: the split has fewer usable clips of at least `seconds` with a MIDI beside them.
  """
  from musiclm_jax.evaluation import notes
  from musiclm_jax.evaluation.clip_folders import read_clip_folder

  folder = read_clip_folder(corpus_dir, sample_rate, split=split, max_seconds=seconds)
  samples = round(seconds * sample_rate)
  clips, references = [], []
  for name, audio in zip(folder.names, folder.audio):
    midi = os.path.join(folder.directory, f"{name}.mid")
    if len(audio) < samples or not os.path.exists(midi):
      continue
    reference = notes.midi_notes(midi)
    reference = reference[reference[:, 0] < seconds]
    reference[:, 1] = np.minimum(reference[:, 1], seconds)
    clips.append(audio[:samples])
    references.append(reference)
    if len(clips) == num_clips:
      return np.stack(clips), references
  raise ValueError(
    f"Split {split!r} of {corpus_dir} has only {len(clips)} clips of {seconds:g} s with a MIDI."
  )
