"""The `divergent head / features / transfer` commands."""
from __future__ import annotations

import typer
from typer.testing import CliRunner

from divergent.cli.probes import register
from divergent.store import Store


def _app():
    app = typer.Typer()
    register(app)
    return app


def test_cli_head_features_transfer(digits_store, tmp_path):
    app = _app()
    root = str(digits_store.root)
    r = CliRunner().invoke(app, ["head", root, "--model", "relu", "--grid", "1e-3,1e-2",
                                 "--out", str(tmp_path / "sweep.csv")])
    assert r.exit_code == 0, r.output
    assert "linear head for 'relu'" in r.output and (tmp_path / "sweep.csv").exists()
    assert Store.open(root).card("relu").head == "linear-probe"
    r = CliRunner().invoke(app, ["features", root, "--a", "pixels", "--b", "relu", "--rates", "0,1", "--seeds", "1",
                                 "--step", "24", "--max-dims", "48", "--lam", "1e-3", "--target", "0.999"])
    assert r.exit_code == 0, r.output
    assert "== random" in r.output and "== ranked" in r.output and "never reached" in r.output
    r = CliRunner().invoke(app, ["transfer", root, "--models", "pixels,relu", "--task", "digits", "--grid", "1e-3"])
    assert r.exit_code == 0, r.output
    assert "pixels+relu" in r.output
