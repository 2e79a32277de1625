"""Differentially private training: per-example clipping (and ghost clipping
for dense and convolutional layers), Gaussian aggregation, Poisson batches
and privacy accounting.
"""

# --- clipping ---
_CLIP_ALL: list[str] = []
# --- end clipping ---

# --- aggregate and accounting ---
_AGG_ALL: list[str] = []
# --- end aggregate and accounting ---

__all__ = sorted([*_CLIP_ALL, *_AGG_ALL])
