"""Every corruption of what `pairs` reads is caught by `verify` (non-zero exit) and refused by
`pairs` (exit 2 with a message), never answered with a different number: array files, the
manifest's values, and the cached pair codes (the cache is warm, so it could hide the others)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from divergent.cli import main

PAIRS = ["--split", "test", "--base", "m0", "--n-boot", "0"]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A calibrated store of three correlated models whose pair cache is warm (synthetic scores)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("core_conftest", Path(__file__).with_name("conftest.py"))
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    root = tmp_path_factory.mktemp("corruptions") / "S"
    helpers.build_toy_store(root)
    assert main(["calibrate", str(root), "--fit-on", "holdout"]) == 0
    assert main(["pairs", str(root), *PAIRS, "--out", str(root.parent / "pairs.csv")]) == 0
    assert len(list((root / "cache" / "pairs" / "test").glob("*.bin"))) == 2
    return root


def manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def array(root: Path, model: str, kind: str = "logits", split: str = "test") -> Path:
    return root / manifest(root)["models"][model]["splits"][split]["arrays"][kind]["path"]


def split_file(root: Path, what: str, split: str = "test") -> Path:
    return root / manifest(root)["splits"][split]["files"][what]["path"]


def cache_files(root: Path) -> list[Path]:
    return sorted((root / "cache" / "pairs" / "test").glob("*.bin"))


def flip(path: Path, offset: int = -3) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def edit_text(root: Path, pattern: str, repl) -> None:
    """One textual edit of manifest.json (the first match of `pattern`)."""
    mf = root / "manifest.json"
    text = mf.read_text()
    new, k = re.subn(pattern, repl, text, count=1)
    assert k == 1 and new != text, pattern
    mf.write_text(new)


def edit_json(root: Path, fn) -> None:
    m = manifest(root)
    fn(m)
    (root / "manifest.json").write_text(json.dumps(m, indent=1, sort_keys=True))


def one_digit(m: re.Match) -> str:
    d = m.group(2)
    return m.group(1) + str((int(d) + 1) % 10)


def change_one_logit(root: Path, model: str) -> None:
    z = np.load(array(root, model), mmap_mode="r+")
    z[7, 2] += np.float32(0.5)
    z.flush()


def rewrite_cache(p: Path, *, codes=None, temperature: str | None = None) -> None:
    """Rewrite a cached pair file in its format (a JSON line, then the raw codes), changed."""
    head, _, body = p.read_bytes().partition(b"\n")
    meta = json.loads(head)
    if temperature is not None:
        meta["deps"]["b"]["temperature"] = temperature
    p.write_bytes(json.dumps(meta).encode() + b"\n" + (body if codes is None else codes.tobytes()))


def swap(a: Path, b: Path) -> None:
    tmp = a.with_name("swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


CASES = {
    # array files
    "labels-one-byte": lambda r: flip(split_file(r, "labels")),
    "labels-permuted-valid-npy": lambda r: np.save(split_file(r, "labels"), np.load(split_file(r, "labels"))[::-1].copy()),
    "ids-one-byte": lambda r: flip(split_file(r, "ids")),
    "logit-one-value-base": lambda r: change_one_logit(r, "m0"),
    "logit-one-value-other": lambda r: change_one_logit(r, "m2"),
    "logits-last-byte": lambda r: flip(array(r, "m1")),
    "logits-header-shape": lambda r: array(r, "m1").write_bytes(array(r, "m1").read_bytes().replace(b"(600, 5)", b"(500, 5)", 1)),
    "logits-truncated": lambda r: array(r, "m0").write_bytes(array(r, "m0").read_bytes()[:-100]),
    "logits-extended": lambda r: array(r, "m0").write_bytes(array(r, "m0").read_bytes() + b"\0" * 40),
    "logits-missing": lambda r: array(r, "m2").unlink(),
    "logits-of-another-model": lambda r: shutil.copy(array(r, "m1"), array(r, "m2")),
    # the manifest's values
    "temperature-one-digit": lambda r: edit_text(r, r'("temperature": \d\.\d\d)(\d)', one_digit),
    "temperature-one-digit-no-cache": lambda r: (shutil.rmtree(r / "cache"),
                                                 edit_text(r, r'("temperature": \d\.\d\d)(\d)', one_digit)),
    "class-name": lambda r: edit_text(r, r'("c)(3)"', one_digit),
    "split-n": lambda r: edit_text(r, r'("n": 60)(0)', one_digit),
    "array-sha256-one-digit": lambda r: edit_text(r, r'("sha256": "[0-9a-f]{10})(\d)', one_digit),
    "array-dtype": lambda r: edit_text(r, r'"dtype": "float32"', '"dtype": "float16"'),
    "array-shape": lambda r: edit_json(r, lambda m: m["models"]["m1"]["splits"]["test"]["arrays"]["logits"].update(shape=[600, 4])),
    "array-path-to-another-model": lambda r: edit_json(r, lambda m: m["models"]["m2"]["splits"]["test"]["arrays"].update(
        logits=m["models"]["m1"]["splits"]["test"]["arrays"]["logits"])),
    "fit-on": lambda r: edit_json(r, lambda m: m["models"]["m1"]["calibration"].update(fit_on="train")),
    "card-family": lambda r: edit_json(r, lambda m: m["models"]["m1"]["card"].update(family="resnet")),
    "checksum-removed": lambda r: edit_json(r, lambda m: m.pop("checksum")),
    "checksum-one-digit": lambda r: edit_text(r, r'("checksum": "[a-f]*)([0-9])', one_digit),
    "schema-downgraded": lambda r: edit_text(r, r'("schema": )(2)', lambda m: m.group(1) + "1"),
    "manifest-truncated": lambda r: (r / "manifest.json").write_bytes((r / "manifest.json").read_bytes()[:-30]),
    # the pair cache
    "pair-codes-one-byte": lambda r: flip(cache_files(r)[0], -200),
    "pair-header-one-byte": lambda r: flip(cache_files(r)[1], 40),
    "pair-codes-truncated": lambda r: cache_files(r)[1].write_bytes(cache_files(r)[1].read_bytes()[:-50]),
    "pair-codes-swapped": lambda r: swap(*cache_files(r)),
    "pair-codes-rewritten": lambda r: rewrite_cache(cache_files(r)[0], codes=np.zeros(600, np.uint8)),
    "pair-codes-other-temperature": lambda r: rewrite_cache(cache_files(r)[1], temperature="1.0"),
}


def test_enough_corruptions():
    assert len(CASES) >= 20


@pytest.mark.parametrize("name", list(CASES))
def test_corruption_is_caught_by_verify_and_refused_by_pairs(template, tmp_path, capsys, name):
    root = tmp_path / "S"
    shutil.copytree(template, root)
    CASES[name](root)
    capsys.readouterr()
    assert main(["verify", str(root)]) != 0
    out, err = capsys.readouterr()
    assert err.startswith("error: ") or "problem(s)" in err, err
    assert "Traceback" not in err
    rc = main(["pairs", str(root), *PAIRS, "--out", str(tmp_path / "pairs.csv")])
    out, err = capsys.readouterr()
    assert rc == 2, out
    lines = err.splitlines()
    assert lines[0].startswith("error: ") and any(x.startswith("  fix: ") for x in lines[1:]), err
    assert "Traceback" not in err and not (tmp_path / "pairs.csv").exists()
