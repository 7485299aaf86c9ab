"""Bad inputs, one row each: exit code 2, the first line of stderr names the problem, a `fix:`
line follows, and the store is byte-identical afterwards apart from its lock file (or, where it
did not exist, is not created). Synthetic arrays: these are property tests of refusal."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from divergent.cli import main
from divergent.store import Store
from divergent.store.layout import VERDICTS

N, C = 12, 3
Y = np.arange(N) % C
IDS = np.asarray([f"test/{i:04d}" for i in range(N)])
Z = (np.eye(C)[Y] * 2 + np.linspace(0, 1, N * C).reshape(N, C)).astype(np.float32)


def snapshot(root: Path):
    """Every file under root (but the lock and the checksum-verdict cache, which reads update) with
    its bytes; None when root does not exist."""
    if not root.exists():
        return None
    if root.is_file():
        return root.read_bytes()
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else "dir")
            for p in sorted(root.rglob("*")) if p.name != ".lock" and p.relative_to(root) not in (Path(VERDICTS), Path(VERDICTS).parent)}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("template") / "S"
    st = Store.create(root)
    with st.writer() as w:
        w.add_split("test", labels=Y, class_names=["a", "b", "c"], ids=IDS, dataset="toy")
        w.put("m0", "test", logits=Z)
    return root


@pytest.fixture
def ctx(tmp_path, template):
    """S: a store with split 'test' (12 examples, 3 classes) and model m0; NEW: no store yet."""
    shutil.copytree(template, tmp_path / "S")
    return tmp_path


def npz(tmp: Path, name: str, **arrays) -> str:
    np.savez(tmp / name, **arrays)
    return str(tmp / name)


def write(tmp: Path, name: str, data: bytes | str) -> str:
    p = tmp / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(p)


def imp(tmp, file, *, store="S", split="test", model="m1", extra=()):
    return ["import", str(tmp / store), str(file), "--split", split, "--model", model, *extra]


def good(tmp):  # a valid file for the split 'test'
    return npz(tmp, "good.npz", labels=Y, ids=IDS, logits=Z)


def card(tmp, name, text):
    return imp(tmp, good(tmp), extra=("--card", write(tmp, name, text)))


def corrupt_npz(tmp, how):
    p = Path(npz(tmp, "c.npz", labels=Y, logits=Z))
    b = bytearray(p.read_bytes())
    if how == "truncated":
        b = b[: len(b) // 2]
    else:  # flip bytes inside the first member's data: the zip's CRC-32 no longer matches
        i = b.index(b"\x93NUMPY") + 140
        b[i:i + 8] = bytes(x ^ 0xFF for x in b[i:i + 8])
    p.write_bytes(bytes(b))
    return imp(tmp, p, store="NEW")


def csv(tmp, text, extra=()):
    return imp(tmp, write(tmp, "p.csv", text), extra=extra)


def csv_ok(k=1, pred=None, score=None, label=None):
    rows = ["id,index,prob" + (",label" if label else "")]
    for i in range(N):
        p = pred(i) if pred else str(int(Y[i]))
        s = score(i) if score else "0.9"
        rows.append(f"{IDS[i]},{p},{s}" + (f",{label(i)}" if label else ""))
    return "\n".join(rows) + "\n"


def parquet(tmp, how):
    pd = pytest.importorskip("pandas")
    p = tmp / "p.parquet"
    pd.DataFrame({"id": IDS, "index": Y}).to_parquet(p)
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 2] if how == "truncated" else b"PAR1" + bytes(range(256)) * 4 + b"PAR1")
    return imp(tmp, p)


def manifest(tmp, edit):
    mf = tmp / "S" / "manifest.json"
    if edit == "non-utf8":
        mf.write_bytes(mf.read_bytes().replace(b'"toy"', b'"t\xffy"'))
    elif edit == "not-json":
        mf.write_bytes(mf.read_bytes()[:-40])
    else:
        m = json.loads(mf.read_text())
        if edit == "list":
            m = [m]
        elif edit == "rename-models":
            m["modelz"] = m.pop("models")
        elif edit == "rename-files":
            m["splits"]["test"]["filez"] = m["splits"]["test"].pop("files")
        elif edit == "edit-class":
            m["splits"]["test"]["class_names"][0] = "z"
        elif edit == "rename-sha":
            a = m["models"]["m0"]["splits"]["test"]["arrays"]["logits"]
            a["sha"] = a.pop("sha256")
        mf.write_text(json.dumps(m))
    return ["verify", str(tmp / "S")]


def array_file(tmp, how):
    st = Store.open(tmp / "S")
    p = st.root / st.info("m0", "test", "logits")["path"]
    if how == "empty":
        p.write_bytes(b"")
    else:
        b = bytearray(p.read_bytes())
        b[10:40] = b"{'descr': garbled!!, 'shape':("
        p.write_bytes(bytes(b))
    return ["pairs", str(tmp / "S"), "--split", "test", "--n-boot", "0"]


def hold_lock(tmp, cmd):
    """Another process's lock, simulated by a second lock on the same file (flock: per open file)."""
    from divergent.store import WriterLock

    lock = WriterLock(tmp / "S")
    lock.acquire()
    hold_lock.held.append(lock)
    if cmd == "import":
        return imp(tmp, good(tmp))
    if cmd == "rm":
        return ["rm", str(tmp / "S"), "m0"]
    if cmd == "head":
        return ["head", str(tmp / "S"), "--model", "m0"]
    return ["calibrate", str(tmp / "S"), "--fit-on", "test", "--allow-fit-on-eval"]


hold_lock.held = []

# (id, argv builder, words the first line of stderr must contain)
CASES = [
    # arrays that cannot be predictions
    ("pred-N-by-0", lambda t: imp(t, npz(t, "x.npz", pred=np.zeros((N, 0), int))), "no columns"),
    ("logits-0d", lambda t: imp(t, npz(t, "x.npz", logits=np.float32(1))), "0-d"),
    ("labels-0d", lambda t: imp(t, npz(t, "x.npz", labels=np.int64(1), logits=Z)), "0-d"),
    ("ids-0d", lambda t: imp(t, npz(t, "x.npz", ids=np.str_("a"), logits=Z)), "shape ()"),
    ("logits-nan", lambda t: imp(t, npz(t, "x.npz", logits=np.where(Z > 1, np.nan, Z))), "NaN"),
    ("logits-inf", lambda t: imp(t, npz(t, "x.npz", logits=np.where(Z > 1, np.inf, Z))), "NaN or Inf"),
    ("logits-ints", lambda t: imp(t, npz(t, "x.npz", logits=Y[:, None].repeat(C, 1))), "expected floats"),
    ("logits-strings", lambda t: imp(t, npz(t, "x.npz", logits=np.full((N, C), "x"))), "not numbers"),
    ("logits-3d", lambda t: imp(t, npz(t, "x.npz", logits=Z[:, :, None])), "2-D"),
    ("logits-1d", lambda t: imp(t, npz(t, "x.npz", logits=Z[:, 0])), "2-D"),
    ("logits-wrong-classes", lambda t: imp(t, npz(t, "x.npz", logits=Z[:, :2])), "2 classes"),
    ("logits-extra-rows", lambda t: imp(t, npz(t, "x.npz", logits=np.vstack([Z, Z[:1]]))), "13 rows"),
    ("logits-and-probs", lambda t: imp(t, npz(t, "x.npz", logits=Z, probs=np.full((N, C), 1 / C))), "not both"),
    ("probs-negative", lambda t: imp(t, npz(t, "x.npz", probs=np.full((N, C), -1 / C))), "negative"),
    ("probs-not-summing", lambda t: imp(t, npz(t, "x.npz", probs=np.full((N, C), 0.2))), "sum to 1"),
    ("probs-zero-rows", lambda t: imp(t, npz(t, "x.npz", probs=np.zeros((N, C))), extra=("--renormalize",)),
     "summing to 0"),
    ("scores-without-pred", lambda t: imp(t, npz(t, "x.npz", scores=np.ones((N, 1)))), "scores need"),
    ("pred-out-of-range", lambda t: imp(t, npz(t, "x.npz", pred=Y + C)), "outside"),
    ("pred-floats", lambda t: imp(t, npz(t, "x.npz", pred=Y + 0.5)), "integer class ids"),
    ("features-N-by-0", lambda t: imp(t, npz(t, "x.npz", features=np.zeros((N, 0), np.float32))), "no columns"),
    ("features-nan", lambda t: imp(t, npz(t, "x.npz", features=np.full((N, 4), np.nan, np.float32))), "NaN"),
    ("scores-nan", lambda t: imp(t, npz(t, "x.npz", pred=Y, scores=np.full(N, np.nan))), "NaN"),
    # rows, ids and labels that do not fit the split
    ("labels-ids-lengths", lambda t: imp(t, npz(t, "x.npz", labels=Y[:-2], ids=IDS, logits=Z)), "numbers of rows"),
    ("ids-unknown", lambda t: imp(t, npz(t, "x.npz", ids=np.char.add(IDS, "x"), logits=Z)), "ids do not match"),
    ("ids-duplicate", lambda t: imp(t, npz(t, "x.npz", ids=np.r_[IDS[:-1], IDS[:1]], logits=Z)), "duplicate ids"),
    ("labels-disagree", lambda t: imp(t, npz(t, "x.npz", labels=(Y + 1) % C, ids=IDS, logits=Z)), "disagree"),
    ("class-names-differ", lambda t: imp(t, npz(t, "x.npz", class_names=np.array(["x", "y", "z"]), logits=Z)),
     "class names"),
    ("class-names-2d", lambda t: imp(t, npz(t, "x.npz", class_names=np.array([["a", "b", "c"]]), logits=Z)),
     "class_names"),
    ("unknown-array", lambda t: imp(t, npz(t, "x.npz", logits=Z, logitz=Z)), "unknown arrays"),
    ("no-predictions", lambda t: imp(t, npz(t, "x.npz", labels=Y)), "no predictions"),
    ("object-array", lambda t: imp(t, npz(t, "x.npz", logits=Z, ids=np.array(list(IDS), dtype=object))),
     "Python objects"),
    ("model-exists", lambda t: imp(t, good(t), model="m0"), "already has"),
    # names
    ("name-c1-control", lambda t: imp(t, good(t), model="m\x9b1"), "control character"),
    ("name-nel-in-split", lambda t: imp(t, good(t), store="NEW", split="hold\x85out"), "control character"),
    ("name-line-separator", lambda t: imp(t, good(t), model="m\u20281"), "separator"),
    ("name-bidi-override", lambda t: imp(t, good(t), model="m\u202e1"), "bidirectional"),
    ("name-zero-width", lambda t: imp(t, good(t), model="m\u200b1"), "U+200B"),
    ("name-hangul-filler", lambda t: imp(t, good(t), model="m\u31641"), "invisible"),
    ("name-nbsp", lambda t: imp(t, good(t), model="m\u00a01"), "space other than"),
    ("name-trailing-space", lambda t: imp(t, good(t), model="m1 "), "trailing whitespace"),
    ("name-leading-space-split", lambda t: imp(t, good(t), store="NEW", split=" test"), "leading"),
    ("name-tab", lambda t: imp(t, good(t), model="m\t1"), "control character"),
    ("name-dotdot", lambda t: imp(t, good(t), model="a/../b"), "'..'"),
    ("name-leading-slash", lambda t: imp(t, good(t), model="/m1"), "leading '/'"),
    ("name-backslash", lambda t: imp(t, good(t), model="a\\b"), "backslash"),
    ("name-empty", lambda t: imp(t, good(t), model=""), "empty"),
    ("name-too-long", lambda t: imp(t, good(t), model="m" * 201), "characters long"),
    # files that are not what they claim
    ("npz-truncated", lambda t: corrupt_npz(t, "truncated"), "not a readable .npz"),
    ("npz-bad-crc", lambda t: corrupt_npz(t, "crc"), "corrupted"),
    ("npy-renamed-npz", lambda t: imp(t, (np.save(t / "a.npy", Z), (t / "a.npy").rename(t / "a.npz"))[1],
                                      store="NEW"), "single .npy array"),
    ("npz-is-directory", lambda t: ((t / "x.npz").mkdir(), imp(t, t / "x.npz", store="NEW"))[1], "is a directory"),
    ("npz-zero-bytes", lambda t: imp(t, write(t, "x.npz", b""), store="NEW"), "empty (0 bytes)"),
    ("npz-is-text", lambda t: imp(t, write(t, "x.npz", "labels,logits\n1,2\n"), store="NEW"), "not a readable .npz"),
    ("unknown-suffix", lambda t: imp(t, write(t, "x.txt", "1"), store="NEW"), "unknown file type"),
    ("missing-file", lambda t: imp(t, t / "nope.npz", store="NEW"), "no such file"),
    ("store-is-a-file", lambda t: imp(t, good(t), store=Path(write(t, "afile", "x")).name), "is a file"),
    ("store-dir-not-a-store", lambda t: ((t / "D").mkdir(), write(t, "D/x", "x"), imp(t, good(t), store="D"))[2],
     "not an empty directory"),
    # a split the import would create
    ("new-split-empty", lambda t: imp(t, npz(t, "x.npz", labels=np.zeros(0, int), logits=np.zeros((0, C), np.float32)),
                                      store="NEW"), "no examples"),
    ("new-split-nan-new-store", lambda t: imp(t, npz(t, "x.npz", labels=Y, logits=np.full((N, C), np.nan, np.float32)),
                                              store="NEW"), "NaN"),
    ("new-split-nan-old-store", lambda t: imp(t, npz(t, "x.npz", labels=Y, logits=np.full((N, C), np.nan, np.float32)),
                                              split="holdout"), "NaN"),
    ("new-split-no-labels", lambda t: imp(t, npz(t, "x.npz", logits=Z), split="holdout"), "no labels"),
    ("new-split-multihot-no-names", lambda t: imp(t, npz(t, "x.npz", labels=np.eye(C, dtype=int)[Y], logits=Z),
                                                  store="NEW"), "no class names"),
    ("new-split-multihot-not-0-1", lambda t: imp(t, npz(t, "x.npz", labels=2 * np.eye(C, dtype=int)[Y], logits=Z,
                                                         class_names=np.array(["a", "b", "c"])), store="NEW"),
     "0 or 1"),
    ("new-split-labels-fractional", lambda t: imp(t, npz(t, "x.npz", labels=Y + 0.5, logits=Z), store="NEW"),
     "integers"),
    ("new-split-labels-strings", lambda t: imp(t, npz(t, "x.npz", labels=np.array(["a"] * N), logits=Z),
                                               store="NEW"), "not numbers"),
    ("new-split-labels-out-of-range", lambda t: imp(t, npz(t, "x.npz", labels=Y + 5, logits=Z), store="NEW"),
     "labels range"),
    ("new-split-duplicate-ids", lambda t: imp(t, npz(t, "x.npz", labels=Y, ids=np.array(["a"] * N), logits=Z),
                                              store="NEW"), "duplicate"),
    ("new-split-duplicate-class-names", lambda t: imp(t, npz(t, "x.npz", labels=Y, logits=Z,
                                                             class_names=np.array(["a", "a", "b"])), store="NEW"),
     "duplicate class names"),
    # CSV and Parquet
    ("csv-text-in-pred", lambda t: csv(t, csv_ok(pred=lambda i: "cat" if i == 3 else "1")), "row 4"),
    ("csv-malformed-list", lambda t: csv(t, csv_ok(pred=lambda i: '"[1, 2"', score=lambda i: '"[0.5, 0.4]"')),
     "malformed list"),
    ("csv-ragged-lists", lambda t: csv(t, csv_ok(pred=lambda i: '"[1, 2]"' if i else '"[1]"',
                                             score=lambda i: '"[0.5, 0.4]"' if i else '"[0.5]"')), "different lengths"),
    ("csv-empty-file", lambda t: csv(t, ""), "empty (0 bytes)"),
    ("csv-blank-lines", lambda t: csv(t, "\n\n"), "no header"),
    ("csv-header-only", lambda t: csv(t, "id,index,prob\n"), "no rows"),
    ("csv-unknown-label-name", lambda t: csv(t, csv_ok(label=lambda i: "zebra" if i == 0 else "abc"[Y[i]]),
                                             extra=("--label-col", "label")), "zebra"),
    ("csv-fractional-label", lambda t: csv(t, csv_ok(label=lambda i: "0.5"), extra=("--label-col", "label")),
     "class indices"),
    ("csv-missing-label", lambda t: csv(t, csv_ok(label=lambda i: "" if i == 2 else "0"), extra=("--label-col", "label")),
     "empty in row 3"),
    ("csv-no-pred-column", lambda t: csv(t, "id,klass\n" + "".join(f"{i},1\n" for i in IDS)), "no prediction column"),
    ("csv-empty-pred-cell", lambda t: csv(t, csv_ok(pred=lambda i: "" if i == 5 else "1")), "integer class ids"),
    ("csv-no-id-col", lambda t: csv(t, csv_ok(), extra=("--id-col", "path")), "no column 'path'"),
    ("csv-no-label-col", lambda t: csv(t, csv_ok(), extra=("--label-col", "y")), "no label column"),
    ("csv-not-utf8", lambda t: imp(t, write(t, "p.csv", b"id,index\n\xff\xfe\x00junk\n")), "not a readable CSV"),
    ("parquet-truncated", lambda t: parquet(t, "truncated"), "not a readable Parquet"),
    ("parquet-junk", lambda t: parquet(t, "junk"), "not a readable Parquet"),
    # cards
    ("card-toml-syntax", lambda t: card(t, "c.toml", 'name = "m1"\nfamily = resnet\n'), "not valid TOML"),
    ("card-json-syntax", lambda t: card(t, "c.json", '{"name": "m1",}'), "not valid JSON"),
    ("card-missing", lambda t: imp(t, good(t), extra=("--card", str(t / "nope.toml"))), "no such card"),
    ("card-no-name", lambda t: card(t, "c.toml", 'family = "resnet"\n'), "no `name`"),
    ("card-family-int", lambda t: card(t, "c.toml", 'name = "m1"\nfamily = 5\n'), "'family' must be a string"),
    ("card-json-list", lambda t: card(t, "c.json", '[{"name": "m1"}]'), "got a list"),
    ("card-depth-string", lambda t: card(t, "c.toml", 'name = "m1"\ndepth = "deep"\n'), "'depth' must be an integer"),
    ("card-seed-string", lambda t: card(t, "c.toml", 'name = "m1"\nseed = "abc"\n'), "'seed' must be an integer"),
    ("card-hparams-int", lambda t: card(t, "c.toml", 'name = "m1"\nhparams = 5\n'), "'hparams' must be a table"),
    ("card-width-bool", lambda t: card(t, "c.json", '{"name": "m1", "width": true}'), "'width' must be a finite"),
    ("card-unknown-field", lambda t: card(t, "c.toml", 'name = "m1"\ndepht = 3\n'), "unknown fields"),
    ("card-unknown-family", lambda t: card(t, "c.toml", 'name = "m1"\nfamily = "resnt"\n'), "unknown family"),
    ("card-yaml", lambda t: card(t, "c.yaml", "name: m1\n"), "unknown file type"),
    ("card-not-utf8", lambda t: card(t, "c.toml", b'name = "m\xff1"\n'), "not UTF-8"),
    ("card-bad-new-store", lambda t: imp(t, good(t), store="NEW",
                                         extra=("--card", write(t, "c.toml", "name = 'm1'\nseed = 'x'\n"))), "'seed'"),
    # a store whose manifest or arrays were damaged: reads refuse, naming the damage
    ("manifest-non-utf8", lambda t: manifest(t, "non-utf8"), "utf-8"),
    ("manifest-not-json", lambda t: manifest(t, "not-json"), "not valid JSON"),
    ("manifest-a-list", lambda t: manifest(t, "list"), "manifest"),
    ("manifest-renamed-models", lambda t: manifest(t, "rename-models"), "malformed: it lacks 'models'"),
    ("manifest-renamed-files", lambda t: manifest(t, "rename-files"), "lacks 'files'"),
    ("manifest-renamed-sha256", lambda t: manifest(t, "rename-sha"), "lacks 'sha256'"),
    ("manifest-renamed-pairs", lambda t: ["pairs", manifest(t, "rename-models")[1]], "lacks 'models'"),
    ("manifest-edited-value", lambda t: manifest(t, "edit-class"), "checksum"),
    ("array-garbled-header", lambda t: array_file(t, "garbled"), "checksum"),
    ("array-zero-length", lambda t: array_file(t, "empty"), "checksum"),
    # a second writer is refused at once by the interactive commands (--wait 0)
    ("locked-import", lambda t: hold_lock(t, "import"), "being written by another process"),
    ("locked-rm", lambda t: hold_lock(t, "rm"), "being written by another process"),
    ("locked-calibrate", lambda t: hold_lock(t, "calibrate"), "being written by another process"),
    ("locked-head", lambda t: hold_lock(t, "head"), "being written by another process"),
    # other refusals of the store commands
    ("rm-unknown-model", lambda t: ["rm", str(t / "S"), "m9"], "unknown model"),
    ("wait-nan", lambda t: imp(t, good(t), extra=("--wait", "nan")), "wait"),
]


def test_the_table_is_large_enough():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(ctx, capsys, case):
    _, build, words = case
    argv = build(ctx)
    before = {name: snapshot(ctx / name) for name in ("S", "NEW")}
    capsys.readouterr()
    try:
        rc = main(argv)
    finally:
        while hold_lock.held:
            hold_lock.held.pop().release()
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert rc == 2, err
    assert lines and lines[0].startswith("error: ") and words in lines[0], err
    assert any(line.startswith("  fix: ") and len(line) > len("  fix: ") + 5 for line in lines[1:]), err
    assert "Traceback" not in err
    after = {name: snapshot(ctx / name) for name in ("S", "NEW")}
    assert after == before  # NEW stays absent: nothing is created by a refused import


@pytest.mark.parametrize("how", ["garbled", "empty"])
def test_damaged_array_file_reads_as_corrupt_store(ctx, how):
    from divergent.errors import CorruptStoreError

    array_file(ctx, how)
    with pytest.raises(CorruptStoreError) as e:
        Store.open(ctx / "S").array("m0", "test", "logits")
    assert "divergent verify" in e.value.fix or "re-import" in e.value.fix


def test_names_that_are_kept_and_their_normal_form(ctx):
    from divergent.conventions import check_name

    for name in ("timm:resnet50.a1_in1k", "fmnist/cnn-base", "my model", "模型-1", "Ωmega", "a.b_c-d"):
        assert check_name(name) == name
    assert check_name("cafe\u0301") == "caf\u00e9"  # NFD in, NFC kept
    assert main(imp(ctx, good(ctx), model="cafe\u0301")) == 0
    assert "caf\u00e9" in Store.open(ctx / "S").models


def test_every_card_field_has_a_type_rule():
    import dataclasses

    from divergent.cards import _FIELD_TYPES, ModelCard

    assert {f.name for f in dataclasses.fields(ModelCard)} == set(_FIELD_TYPES)
    c = ModelCard.from_dict({"name": "m", "depth": np.int64(18), "width": np.float32(0.5), "seed": 3})
    assert type(c.depth) is int and type(c.width) is float and json.loads(json.dumps(c.to_dict()))["depth"] == 18
