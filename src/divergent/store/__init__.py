"""The prediction store: extract once, analyse many times (format in docs/store-format.md).

Modules by job: layout (where things live), manifest (format, checksum, reading), migrate (schema
versions), reader (Store: the read side), writer (Writer: validated mutations), validate and align
(what producers give), staging (entries staged by parallel producers), lock (the one writer),
verdicts (which files were hashed and matched), cache (derived results), checks and verify (what is
wrong), leftovers (what killed processes left). Files are written by divergent._files."""
from .align import align_ids
from .cache import DerivedCache
from .layout import extract_job_dir
from .cleanup import leftovers, remove_leftovers
from .lock import WriterLock, lock_wait, wait_for_writer, writer_wait
from .manifest import KINDS, SplitData
from .migrate import SCHEMA_VERSION
from .reader import Store
from .staging import discard_staged, stage_entry, staged_entries
from .validate import NO_ANSWER
from .verify import VerifyReport, verify_store
from .writer import Writer

__all__ = ["align_ids", "DerivedCache", "discard_staged", "extract_job_dir", "leftovers", "remove_leftovers", "WriterLock",
           "lock_wait", "wait_for_writer", "writer_wait", "KINDS", "SplitData", "SCHEMA_VERSION", "Store",
           "stage_entry", "staged_entries", "NO_ANSWER", "VerifyReport", "verify_store", "Writer"]
