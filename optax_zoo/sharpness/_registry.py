"""Registry entries of `optax_zoo.sharpness`, collected by the registry."""

from __future__ import annotations

from optax_zoo._src.method_info import MethodInfo, paper  # noqa: F401

# --- sam family ---
_SAM_ENTRIES: tuple[MethodInfo, ...] = ()
# --- end sam family ---

# --- entropy and replicated ---
_ENTROPY_ENTRIES: tuple[MethodInfo, ...] = ()
# --- end entropy and replicated ---

# --- sphere ---
_SPHERE_ENTRIES: tuple[MethodInfo, ...] = ()
# --- end sphere ---

ENTRIES = (*_SAM_ENTRIES, *_ENTROPY_ENTRIES, *_SPHERE_ENTRIES)
