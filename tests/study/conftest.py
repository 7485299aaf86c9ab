"""Fixtures of the study tests: the toy units of this folder, registered for the runner and its workers."""
from __future__ import annotations

from pathlib import Path

import pytest

from divergent.study import units

HERE = Path(__file__).parent


@pytest.fixture
def toy_units(monkeypatch):
    """Register tests/study/toy_units.py (its @unit functions) in the unit registry's module list,
    as spawned workers see it; the list is restored after the test."""
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setattr(units, "MODULES", units.MODULES)
    units.add_modules("toy_units")
    import toy_units

    return toy_units
