"""The prediction store: extract once, analyse many times (format in docs/store-format.md)."""
from .store import KINDS, SCHEMA_VERSION, SplitData, Store, Writer, stage_entry, staged_entries

__all__ = ["KINDS", "SCHEMA_VERSION", "SplitData", "Store", "Writer", "stage_entry", "staged_entries"]
