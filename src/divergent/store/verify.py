"""Everything `divergent verify` reports: problems (corruption), leftovers of killed processes, and
staged entries waiting for a writer."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .layout import VERDICTS
from .cleanup import leftovers
from .lock import lock_is_free
from .reader import Store
from .staging import staged_entries


@dataclass
class VerifyReport:
    problems: list[str]                     # corruption: a non-empty list is a failed verify
    leftovers: list[tuple[Path, str]]       # what killed processes left (removed by the next writer)
    pending: list[Path]                     # finished staged entries waiting for a writer to commit them
    notes: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(store_path) -> VerifyReport:
    """Everything `divergent verify` reports: problems (corruption), leftovers, pending entries."""
    root = Path(store_path)
    st = Store.open(root, check=False)
    problems = st.verify()
    free = lock_is_free(root)
    notes = []
    if "checksum" not in st.manifest:
        notes.append("manifest.json has no checksum yet (written by an older divergent); the next write adds one")
    if st.verdicts.unreadable:
        notes.append(f"{VERDICTS} could not be read; it is rewritten (files are hashed again)")
    if not free:
        notes.append("a writer holds the lock: its temporary files are not counted as leftovers")
    return VerifyReport(problems, leftovers(root, st.manifest, lock_held=free), staged_entries(root), notes)
