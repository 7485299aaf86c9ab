"""CLI: `divergent models list/show` and `divergent extract` (registered through cli.extract.register)."""
from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from divergent.cli.extract import register


@pytest.fixture(scope="module")
def app():
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root():
        pass

    return app


def test_models_list_and_show(app):
    r = CliRunner().invoke(app, ["models", "list", "cifar10/resnet[23]*", "--no-check"])
    assert r.exit_code == 0, r.output
    assert "cifar10/resnet20" in r.output and "cifar10/resnet32" in r.output and "resnet44" not in r.output
    r = CliRunner().invoke(app, ["models", "list", "effnet"])
    assert r.exit_code == 2 and "no built-in model matches" in r.output
    r = CliRunner().invoke(app, ["models", "show", "imagenet/efficientnet-lite0"])
    assert r.exit_code == 0 and '"size": 224' in r.output
    r = CliRunner().invoke(app, ["models", "show", "imagenet/efficientnet-lite9"])
    assert r.exit_code == 2 and "did you mean" in r.output


def test_extract_command(app, cifar_small, tmp_path, one_torch_thread):
    args = ["extract", str(tmp_path / "st"), "--data", str(cifar_small), "--split", "test", "--device", "cpu",
            "--workers", "0", "--no-progress"]
    r = CliRunner().invoke(app, args + ["--model", "cifar10/resnet20"])
    assert r.exit_code == 0, r.output
    assert "cifar10/resnet20 on test: done (features, logits)" in r.output
    r = CliRunner().invoke(app, args + ["--models", "cifar10/resnet20,cifar10/bogus"])
    assert r.exit_code == 2 and "skipped" in r.output and "failed" in r.output
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "exactly one of --model and --models" in r.output
