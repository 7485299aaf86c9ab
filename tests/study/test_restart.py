"""A restarted study: staged entries of the interrupted run go, resumable extraction chunks stay."""
from __future__ import annotations

import pytest

from divergent.study import Graph, InlineExecutor, Unit, run_graph


pytestmark = pytest.mark.usefixtures("toy_units")


def _graph() -> Graph:
    g = Graph()
    g.add(Unit("src:a", "train", "toy.source", {"value": 1}))
    return g


def test_restart_keeps_resumable_extraction_chunks(tmp_path):
    """An interrupted study's staged entries go, its extraction chunks stay (the unit resumes)."""
    staging = tmp_path / "store" / ".staging"
    chunk = staging / "extract" / "m-1234.test" / "chunk-000000.npy"
    chunk.parent.mkdir(parents=True)
    chunk.write_bytes(b"chunk")
    entry = staging / "abcd1234" / "logits.npy"
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"entry")
    run_graph(_graph(), tmp_path, executor=InlineExecutor(), progress=False)
    assert chunk.read_bytes() == b"chunk"
    assert not entry.parent.exists()
