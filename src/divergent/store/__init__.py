"""The prediction store: extract once, analyse many times (format in docs/store-format.md)."""
from ._io import lock_wait
from .store import KINDS, SCHEMA_VERSION, SplitData, Store, Writer, stage_entry, staged_entries

__all__ = ["lock_wait", "KINDS", "SCHEMA_VERSION", "SplitData", "Store", "Writer", "stage_entry", "staged_entries"]
