"""The report renders result tables: it imports no analysis, statistics, store or study code."""
from __future__ import annotations

import ast
from pathlib import Path

import divergent.report

#: what the report may import from divergent (relative to the divergent package)
ALLOWED = {"_files", "errors", "cards", "report"}
FORBIDDEN_THIRD_PARTY = {"scipy", "sklearn", "torch"}


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module name within divergent or third-party name, line) of every import."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                out.append((node.module or "", node.lineno))
            else:  # relative: 1 = divergent.report, 2 = divergent
                base = ["report"] if node.level == 1 else []
                out.append(("divergent." + ".".join(base + ([node.module] if node.module else [])), node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
    return out


def test_report_imports_only_tables_level_code():
    bad = []
    for path in sorted(Path(divergent.report.__file__).parent.glob("*.py")):
        for mod, line in _imports(path):
            parts = mod.split(".")
            if parts[0] == "divergent" and len(parts) > 1 and parts[1] not in ALLOWED:
                bad.append(f"{path.name}:{line} imports {mod}")
            if parts[0] in FORBIDDEN_THIRD_PARTY:
                bad.append(f"{path.name}:{line} imports {mod}")
    assert not bad, "the report must render tables only: " + "; ".join(bad)
