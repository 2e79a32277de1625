"""Registry entries of `optax_zoo.privacy`, collected by the registry."""

from __future__ import annotations

from optax_zoo._src.method_info import MethodInfo

# --- aggregate and accounting ---
_AGG_ENTRIES: tuple[MethodInfo, ...] = ()
# --- end aggregate and accounting ---

ENTRIES = (*_AGG_ENTRIES,)
