"""What the 8-bit experiments share: the verdict and the finiteness check."""

from __future__ import annotations

import numpy as np

# 8-bit "matches" 32-bit when the paired difference's interval stays above
# minus this (one accuracy point).
MARGIN = 0.01


def word(diff: dict) -> str:
  """The verdict of a paired 8-bit minus 32-bit accuracy difference."""
  mean, half = diff['mean'], diff['ci95']
  if mean + half < 0:
    return 'not reproduced (8-bit significantly worse)'
  if mean - half >= -MARGIN:
    return f'reproduced (within {100 * MARGIN:g} pt)'
  return 'tie (inconclusive: interval reaches below the margin)'


def finite(histories) -> bool:
  """Every training loss finite (``train_loss[0]`` is NaN by design: there
  is no training loss before the first step)."""
  return all(bool(np.all(np.isfinite(h.train_loss[1:]))) for h in histories)


def paired_errorbars(ax, summaries) -> None:
  """32-bit and 8-bit accuracy (mean and 95% interval) side by side, one
  pair per summary, at x = 0, 1, ..."""
  for i, s in enumerate(summaries):
    for j, bits in enumerate(('32bit', '8bit')):
      ax.errorbar(
        [i + 0.15 * (2 * j - 1)],
        [100 * s[bits]['mean']],
        [100 * s[bits]['ci95']],
        marker='os'[j],
        capsize=3,
        color=f'C{j}',
        label=bits if i == 0 else None,
      )
