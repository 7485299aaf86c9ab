"""`torch:` specs run only registered architectures or code from modules the user trusts; a spec
string or a study file cannot make divergent import or call anything else, and checkpoints are
never unpickled beyond tensors."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest

from divergent.errors import DivergentError
from divergent.sources import ModelSpec, Preprocess, load, resolve
from divergent.sources.registry import TRUST_ENV, is_trusted, trust_modules
from divergent.study import config as C
from divergent.study.plan import plan

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[2]
DIVERGENT = [sys.executable, "-c", "import sys; from divergent.cli import main; sys.exit(main(sys.argv[1:]))"]
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture(autouse=True)
def no_trust(monkeypatch):
    """Every test starts trusting nothing; whatever it trusts is forgotten afterwards."""
    monkeypatch.setenv(TRUST_ENV, "")


@pytest.fixture
def tmpdir_watch(tmp_path, monkeypatch):
    """tempfile's directory, empty: tempfile.mkdtemp() would create a directory in it."""
    d = tmp_path / "tempfile-dir"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


@pytest.fixture
def pkg(tmp_path, monkeypatch):
    """A package on sys.path with a model class, a factory, a re-exported foreign function and a
    sibling module whose import leaves a marker; returns (package name, marker file)."""
    name = f"tpkg_{uuid.uuid4().hex[:8]}"
    root = tmp_path / "site"
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text("")
    (root / name / "models.py").write_text(
        "from tempfile import mkdtemp\n"
        "from divergent.sources.archs.cifar_resnet import CifarResNet\n\n"
        "class Net(CifarResNet):\n"
        "    def __init__(self, num_classes=10):\n"
        "        super().__init__(3, num_classes)\n\n"
        "def make(num_classes=10):\n"
        "    return CifarResNet(3, num_classes)\n\n"
        "def not_a_model(num_classes=10):\n"
        "    return 'text'\n")
    marker = tmp_path / "imported.txt"
    (root / f"{name}x.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\nclass Net: pass\n")
    monkeypatch.syspath_prepend(str(root))
    yield name, marker
    for m in [m for m in sys.modules if m == name or m.startswith(name)]:
        del sys.modules[m]


@pytest.fixture
def weights(tmp_path):
    from divergent.sources.archs.cifar_resnet import resnet20

    p = tmp_path / "w.pt"
    torch.save(resnet20().state_dict(), p)
    return p


@pytest.fixture(scope="module")
def cifar_images(shared_dir, tmp_path_factory):
    """The first 2 real CIFAR-10 test JPEGs of each class, as an ImageFolder and as a uint8 batch."""
    from PIL import Image

    out = tmp_path_factory.mktemp("cifar")
    want = {f"{c}/{k:04d}.jpg" for c in CLASSES for k in range(2)}
    with tarfile.open(shared_dir / "data" / "cifar10-jpeg" / "test.tar.gz") as tf:
        for m in tf:
            rel = m.name.split("test/", 1)[-1]
            if m.isfile() and rel in want:
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                (out / rel).write_bytes(tf.extractfile(m).read())
    batch = np.stack([np.asarray(Image.open(out / r).convert("RGB")) for r in sorted(want)])
    return out, torch.from_numpy(batch)


def _cli(args, tmp_path, **env):
    e = {**os.environ, TRUST_ENV: "", "TMPDIR": str(tmp_path / "tempfile-dir"), **env}
    (tmp_path / "tempfile-dir").mkdir(exist_ok=True)
    return subprocess.run(DIVERGENT + [str(a) for a in args], capture_output=True, text=True, env=e, cwd=ROOT, timeout=300)


# ----------------------------------------------------------------------------- a spec string runs no code
def test_mkdtemp_spec_from_the_cli_creates_nothing(tmp_path, weights):
    for spec in ("torch:tempfile:mkdtemp@x", f"torch:tempfile:mkdtemp@{weights}"):
        r = _cli(["extract", tmp_path / "store", "--model", spec, "--data", "fashion-mnist", "--device", "cpu",
                  "--runtime", "torch", "--no-progress"], tmp_path)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "--trust-module tempfile" in r.stderr and "Traceback" not in r.stderr
        assert list((tmp_path / "tempfile-dir").iterdir()) == []   # mkdtemp() never ran
        assert not (tmp_path / "store").exists()                   # refused before anything was written


def test_mkdtemp_spec_from_a_study_toml_creates_nothing(tmp_path, weights):
    toml = tmp_path / "colleague.toml"
    toml.write_text(f'[zoo]\nrecipes = []\npretrained = [{{model = "torch:tempfile:mkdtemp@{weights}", name = "m"}}]\n'
                    '[base]\nmodel = "m"\n[analysis]\nfeatures = false\ntransfer = []\n[run]\nexecutor = "inline"\n')
    r = _cli(["study", "run", toml, "--out", tmp_path / "out", "--no-progress"], tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--trust-module tempfile" in r.stderr and "Traceback" not in r.stderr
    assert list((tmp_path / "tempfile-dir").iterdir()) == []
    assert not (tmp_path / "out" / ".study" / "units").exists()    # refused at plan time: no unit ran


def test_a_spec_built_in_code_is_checked_again_when_loaded(tmpdir_watch, weights):
    spec = ModelSpec(name="m", source="torch", target="tempfile:mkdtemp", weights=str(weights))
    with pytest.raises(DivergentError, match="--trust-module tempfile"):
        load(spec, device="cpu", runtime="torch")
    assert list(tmpdir_watch.iterdir()) == []


def test_an_untrusted_module_is_never_imported(pkg, weights):
    name, marker = pkg
    trust_modules(name)                       # trusting tpkg_… does not trust tpkg_…x
    for call in (lambda: resolve(f"torch:{name}x:Net@{weights}"),
                 lambda: load(ModelSpec(name="m", source="torch", target=f"{name}x:Net", weights=str(weights)),
                              device="cpu", runtime="torch")):
        with pytest.raises(DivergentError) as e:
            call()
        assert f"--trust-module {name}x" in e.value.fix
        assert f"{name}x" not in sys.modules and not marker.exists()


def test_pkg_paths_do_not_import_packages(pkg):
    from divergent.sources import resolve_path

    name, marker = pkg
    with pytest.raises(DivergentError, match="top-level package"):
        resolve_path(f"$PKG:{name}x.sub/w.pt")     # find_spec of a dotted name imports its parent
    assert f"{name}x" not in sys.modules and not marker.exists()


def test_a_study_file_cannot_trust_a_module_itself(tmp_path, pkg, weights):
    name, _ = pkg
    toml = tmp_path / "study.toml"
    toml.write_text(f'[zoo]\nrecipes = []\npretrained = [{{model = "torch:{name}.models:Net@{weights}", name = "net"}}]\n'
                    f'[base]\nmodel = "net"\n[run]\ntrusted_modules = ["{name}"]\n')
    with pytest.raises(DivergentError) as e:
        C.load(toml)
    assert "cannot grant" in e.value.problem and f"--trust-module {name}" in e.value.fix
    trust_modules(name)                       # the user confirms: the plan is built (nothing imported yet)
    g = plan(C.load(toml))
    assert "extract:net" in g.units and f"{name}.models" not in sys.modules


def test_trust_is_by_module_and_submodule_not_by_prefix():
    assert is_trusted("pkg", ["pkg"]) and is_trusted("pkg.models.deep", ["pkg"])
    assert not is_trusted("pkgx", ["pkg"]) and not is_trusted("pkg", ["pkg.models"])
    with pytest.raises(DivergentError, match="not a Python module name"):
        trust_modules("pkg; rm -rf")


# ----------------------------------------------------------------------------- what is allowed works
def test_registered_architecture_by_short_and_full_name(shared_dir, cifar_images):
    _, x = cifar_images
    ckpt = shared_dir / "models" / "cifar10-resnet-akamaster" / "resnet20.th"
    pre = Preprocess(size=32, resize_rule="none")
    builtin = load("cifar10/resnet20", device="cpu", runtime="torch")(x)
    for target in ("cifar_resnet:resnet20", "divergent.sources.archs.cifar_resnet:resnet20"):
        spec = resolve(f"torch:{target}@{ckpt}").replace(preprocess=pre, num_classes=10)
        head, emb = load(spec, device="cpu", runtime="torch")(x)
        np.testing.assert_array_equal(head, builtin[0])
        np.testing.assert_array_equal(emb, builtin[1])
    assert (head.argmax(1) == np.repeat(np.arange(10), 2)).mean() >= 0.7   # real images, real weights
    for bad in ("cifar_resnet:CifarResNet", "cifar_resnet:F", "divergent.sources.archs:register"):
        with pytest.raises(DivergentError):
            load(resolve(f"torch:{bad}@{ckpt}"), device="cpu", runtime="torch")


def test_trusted_module_class_and_factory(shared_dir, cifar_images, pkg):
    name, _ = pkg
    _, x = cifar_images
    ckpt = shared_dir / "models" / "cifar10-resnet-akamaster" / "resnet20.th"
    builtin = load("cifar10/resnet20", device="cpu", runtime="torch")(x)
    with pytest.raises(DivergentError, match=f"--trust-module {name}.models"):
        resolve(f"torch:{name}.models:Net@{ckpt}")
    trust_modules(name)
    for attr in ("Net", "make"):
        spec = resolve(f"torch:{name}.models:{attr}@{ckpt}").replace(preprocess=Preprocess(size=32, resize_rule="none"))
        head, emb = load(spec, device="cpu", runtime="torch")(x)
        np.testing.assert_array_equal(head, builtin[0])
        np.testing.assert_array_equal(emb, builtin[1])


def test_trusted_module_may_not_hand_over_foreign_callables(pkg, weights, tmpdir_watch):
    name, _ = pkg
    trust_modules(name)
    with pytest.raises(DivergentError, match="defined in a trusted module"):
        load(resolve(f"torch:{name}.models:mkdtemp@{weights}"), device="cpu", runtime="torch")
    assert list(tmpdir_watch.iterdir()) == []                  # imported from tempfile: never called
    with pytest.raises(DivergentError, match="not a torch.nn.Module"):
        load(resolve(f"torch:{name}.models:not_a_model@{weights}"), device="cpu", runtime="torch")


def test_trusted_module_from_the_cli(tmp_path, pkg, cifar_images, shared_dir):
    import typer
    from typer.testing import CliRunner

    from divergent.cli.extract import register

    app = typer.Typer()
    register(app)
    app.callback()(lambda: None)
    name, _ = pkg
    folder, _ = cifar_images
    ckpt = shared_dir / "models" / "cifar10-resnet-akamaster" / "resnet20.th"
    args = ["extract", str(tmp_path / "store"), "--model", f"torch:{name}.models:Net@{ckpt}", "--data", str(folder),
            "--split", "all", "--device", "cpu", "--workers", "0", "--runtime", "torch", "--input-size", "32",
            "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and f"--trust-module {name}.models" in r.output, r.output
    assert f"{name}.models" not in sys.modules
    r = CliRunner().invoke(app, args + ["--trust-module", name])
    assert r.exit_code == 0, r.output
    assert ": done (features" in r.output


# ----------------------------------------------------------------------------- checkpoints are not pickles
class _Reduce:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    ckpt = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Reduce(str(marker))}, ckpt)
    with pytest.raises(DivergentError, match="cannot load checkpoint"):
        load(resolve(f"torch:cifar_resnet:resnet20@{ckpt}"), device="cpu", runtime="torch")
    assert not marker.exists()
