"""Real music without the internet: music21 corpus scores rendered to audio with captions.

`corpus.render_corpus` is the entry point (the `musiclm-jax render` verb); `scores` picks and
reads scores, `instruments` knows General-MIDI programs, `plan` cuts passages and draws the
renditions, `describe` writes captions, `synth` turns a passage into MIDI and audio.
"""
