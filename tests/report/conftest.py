"""Fixtures of the report tests: hand-made tables and one report built from them."""
from __future__ import annotations

import pytest

from report_fixture import make_tables


@pytest.fixture
def tables():
    return make_tables()


@pytest.fixture(scope="session")
def built_report(tmp_path_factory):
    """One report built from the hand-made tables, shared by the rendering and browser tests."""
    from divergent.report import build_report

    out = tmp_path_factory.mktemp("report")
    t = make_tables()
    path = build_report(t, out)
    return out, path, t
