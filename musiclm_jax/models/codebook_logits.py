"""Target logits over each target's own codebook only: the codebook softmax without the vocabulary.

A stage's targets are one token family: position p of the targets always holds a code of the
same codebook (level p mod levels), whatever the example, so which output rows each position
can score is known from the layout alone. `StageLM.codebook_softmax` normalises over those rows;
projecting onto the whole vocabulary and masking the rest to -1e9 computes the same numbers from a
[batch, length, vocab] tensor that is mostly masked, and whose backward pass (masks, transposes,
the output kernel's gradient) dominated the tiny stages' train step (the fine LM's step took
0.50 s on 2 CPU cores, 0.26 s without it, each of its two layers about 0.05 s; BENCHMARKS.md,
"Stage LM train step").

Here the hidden states of the target positions are grouped by codebook and each group is
projected onto its codebook's columns of the output kernel:
  [batch, targets, d] → [batch, codebooks, positions per codebook, codebook size].
The prefix (conditioning) positions carry no loss weight, so they are not projected at all.
Parameters are unchanged (the full kernel stays for sampling); the loss, its gradient and the
accuracy equal the masked full-vocabulary ones (tested).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax.stages import StageLayout


@dataclasses.dataclass(frozen=True)
class TargetCodebooks:
  """Where each codebook's target positions are, and which output columns it owns.

  Attributes:
    positions: int32 [codebooks, positions per codebook], target positions (0 = first target)
      of each codebook, in sequence order.
    first_ids: int32 [codebooks], the first vocabulary id of each codebook.
    size: ids per codebook (every target codebook of a stage has the same size).
  """

  positions: np.ndarray
  first_ids: np.ndarray
  size: int

  @classmethod
  def from_layout(cls, layout: StageLayout) -> TargetCodebooks:
    ranges = layout.target_id_ranges()  # [targets_length, 2]
    first_ids, codebook_of_position = np.unique(ranges[:, 0], return_inverse=True)
    sizes = set((ranges[:, 1] - ranges[:, 0]).tolist())
    counts = set(np.bincount(codebook_of_position).tolist())
    if len(sizes) != 1 or len(counts) != 1:
      raise ValueError(
        f"{layout.stage} stage: target codebooks of sizes {sorted(sizes)} holding "
        f"{sorted(counts)} positions each; grouping needs one size and one count"
      )
    positions = np.stack([np.flatnonzero(codebook_of_position == c) for c in range(len(first_ids))])
    return cls(positions.astype(np.int32), first_ids.astype(np.int32), sizes.pop())

  def columns(self) -> np.ndarray:
    """int32 [codebooks, size]: the vocabulary ids (output kernel columns) of each codebook."""
    return self.first_ids[:, None] + np.arange(self.size, dtype=np.int32)[None, :]

  def group(self, per_target: jax.Array) -> jax.Array:
    """[batch, targets, ...] → [batch, codebooks, positions per codebook, ...]."""
    return jnp.take(per_target, jnp.asarray(self.positions), axis=1)

  def logits(self, hidden: jax.Array, kernel: jax.Array) -> jax.Array:
    """Float32 logits [batch, codebooks, positions, size] from the targets' hidden states.

    Args:
      hidden: [batch, targets, d] final hidden states at the target positions.
      kernel: [d, vocab] the output projection.
    """
    codebook_kernels = jnp.take(kernel, jnp.asarray(self.columns()), axis=1)  # [d, C, S]
    return jnp.einsum(
      "bcpd,dcs->bcps",
      self.group(hidden).astype(jnp.float32),
      codebook_kernels.astype(jnp.float32),
    )

  def local_targets(self, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[batch, targets] vocabulary ids → (indices in their codebook, whether the id is in it),
    both [batch, codebooks, positions].

    A padding target (PAD at the end of a short clip) is outside its codebook: index 0, False.
    """
    local = self.group(targets) - jnp.asarray(self.first_ids)[None, :, None]
    inside = (local >= 0) & (local < self.size)
    return jnp.clip(local, 0, self.size - 1), inside
