"""Sharpness-aware and flat-minima training: SAM, ASAM, GSAM, Entropy-SGD,
Replicated-SGD and training on the sphere at a fixed effective learning rate.
"""

# --- sam family ---
_SAM_ALL: list[str] = []
# --- end sam family ---

# --- entropy and replicated ---
_ENTROPY_ALL: list[str] = []
# --- end entropy and replicated ---

# --- sphere ---
_SPHERE_ALL: list[str] = []
# --- end sphere ---

__all__ = sorted([*_SAM_ALL, *_ENTROPY_ALL, *_SPHERE_ALL])
