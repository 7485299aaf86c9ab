"""ImageFolder trees on disk or inside .tar/.tar.gz archives (read in memory, never unpacked).

Layout: <root>/<class>/<file> (no official split), or <root>/{train,val,test}/<class>/<file>.
Ids are paths relative to the dataset root with forward slashes, sorted; classes are the
sorted class-folder names, by number when every name is a class number (or the classes= list/file). A single wrapper folder at the top of
an archive (e.g. cifar10/train/cat/0.jpg) is stripped.
"""
from __future__ import annotations

import os
import tarfile
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..conventions import SPLIT_SEED
from ..errors import DivergentError, suggest
from .base import IMAGE_EXTENSIONS, ImageDataset, decode_bytes, decode_file
from .splitting import empty_split_error, halves_of, official_plan, thirds_of

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
#: top-level folder names that mean an official split, and the part they are
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test", "testing": "test"}
#: archives (and their bytes) kept in memory so holdout and test do not re-read them
_ARCHIVE_CACHE: OrderedDict[tuple, tuple[list[str], bytes, np.ndarray, list[tuple[str, str]]]] = OrderedDict()
_ARCHIVE_CACHE_SIZE = 4


def is_image_name(rel: str) -> bool:
    base = rel.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


# --- readers -------------------------------------------------------------------------------
class FileReader:
    """Image files under a root directory, decoded on access."""

    kind = "files"
    decodes = True

    def __init__(self, root: str, relpaths: np.ndarray):
        self.root = root
        self.relpaths = np.asarray(relpaths, dtype=str)

    def __len__(self) -> int:
        return len(self.relpaths)

    def _path(self, j: int) -> str:
        return os.path.join(self.root, *str(self.relpaths[j]).split("/"))

    def image(self, j: int):
        return decode_file(self._path(j))

    def raw(self, j: int) -> np.ndarray:
        return np.asarray(self.image(j))

    def encoded(self, j: int) -> bytes:
        with open(self._path(j), "rb") as fh:
            return fh.read()

    def where(self, j: int) -> str:
        return self._path(j)

    def array(self, index: np.ndarray) -> None:
        return None


class BytesReader:
    """Encoded images held in one in-memory buffer (from archives); decoded on access.

    Memory: the encoded bytes once (CIFAR-10 JPEG: about 9 MB for test, 45 MB for train) plus
    an offsets array. Pickling copies the buffer (spawned DataLoader workers); forked workers
    share it copy-on-write.
    """

    kind = "bytes"
    decodes = True

    def __init__(self, buffer: bytes, offsets: np.ndarray, names: np.ndarray, origin: str):
        self.buffer = buffer
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.names = np.asarray(names, dtype=str)
        self.origin = origin

    def __len__(self) -> int:
        return len(self.names)

    def encoded(self, j: int) -> bytes:
        return self.buffer[self.offsets[j] : self.offsets[j + 1]]

    def image(self, j: int):
        return decode_bytes(self.encoded(j))

    def raw(self, j: int) -> np.ndarray:
        return np.asarray(self.image(j))

    def where(self, j: int) -> str:
        return f"{self.origin}:{self.names[j]}"

    def array(self, index: np.ndarray) -> None:
        return None


# --- tree parsing --------------------------------------------------------------------------
def _strip_wrapper(rels: list[str]) -> tuple[list[str], str]:
    """Drop one common top folder that is neither a split nor a class folder."""
    if not rels:
        return rels, ""
    tops = {r.split("/", 1)[0] for r in rels}
    if len(tops) == 1 and all(r.count("/") >= 2 for r in rels):
        top = next(iter(tops))
        if top.lower() not in SPLIT_FOLDERS:
            return [r.split("/", 1)[1] for r in rels], top
    return rels, ""


def parse_tree(rels: list[str], where: str) -> dict[str, list[str]]:
    """Group relative image paths into official parts {'train'|'val'|'test'|'': [paths]}."""
    if not rels:
        raise DivergentError(f"{where} holds no image files ({', '.join(IMAGE_EXTENSIONS)})", "check the path; images must sit in class folders")
    tops = {r.split("/", 1)[0] for r in rels}
    split_tops = {t for t in tops if t.lower() in SPLIT_FOLDERS}
    loose = [r for r in rels if "/" not in r]
    if loose:
        raise DivergentError(
            f"{where}: image {loose[0]!r} is not inside a class folder",
            "arrange images as <root>/<class>/<file> or <root>/<train|test>/<class>/<file>",
        )
    if split_tops and split_tops == tops and all(r.count("/") >= 2 for r in rels):
        parts: dict[str, list[str]] = {}
        for r in rels:
            parts.setdefault(SPLIT_FOLDERS[r.split("/", 1)[0].lower()], []).append(r)
        return parts
    if split_tops and len(split_tops) != len(tops) and any(r.count("/") >= 2 for r in rels if r.split("/", 1)[0] in split_tops):
        raise DivergentError(
            f"{where} mixes split folders ({', '.join(sorted(split_tops))}) with other top folders "
            f"({', '.join(sorted(tops - split_tops)[:5])})",
            "put every class folder under train/ val/ test/, or none of them",
        )
    return {"": rels}


def _class_of(rel: str, part: str) -> str:
    comps = rel.split("/")
    return comps[1] if part else comps[0]


def default_class_order(found) -> list[str]:
    """Sorted class-folder names; folders that are all class numbers ('0', '1', ..., '999', as in
    ImageNet-V2) are ordered by number, so folder '10' is class 10 (as text it would come third)."""
    if found and all(c.isascii() and c.isdigit() and (c == "0" or not c.startswith("0")) for c in found):
        return sorted(found, key=int)
    return sorted(found)


def _resolve_classes(found: set[str], classes, where: str) -> list[str]:
    if classes is None:
        return default_class_order(found)
    if isinstance(classes, (str, os.PathLike)):
        p = Path(classes)
        if not p.is_file():
            raise DivergentError(f"classes file {p} does not exist", "pass a text file with one class name per line, or a list")
        names = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
    else:
        names = [str(c) for c in classes]
    if len(set(names)) != len(names):
        raise DivergentError("the classes list repeats a name", "give each class once, in label order")
    extra = sorted(found - set(names))
    if extra:
        raise DivergentError(
            f"{where} has class folder {extra[0]!r} that is not in the classes list",
            f"add it to the classes list ({suggest(extra[0], names, 'class')}) or remove the folder",
        )
    return names


def build(rels: list[str], *, where: str, split: str, seed: int, classes, name: str, root: str,
          reader_for, source_dataset: str | None, meta: dict, allow_missing_classes: bool = False) -> ImageDataset:
    """Turn sorted relative paths into an ImageDataset for split (reader_for(rels) -> reader)."""
    from ..cards import canonical_dataset

    parts = parse_tree(rels, where)
    found = {_class_of(r, p) for p, rs in parts.items() for r in rs}
    class_names = _resolve_classes(found, classes, where)
    lookup = {c: k for k, c in enumerate(class_names)}
    if "" in parts:
        rels_all = sorted(parts[""])
        labels_all = np.array([lookup[_class_of(r, "")] for r in rels_all], dtype=np.int64)
        pos = thirds_of(labels_all, split, seed=seed)
        sel, labels, rule = [rels_all[k] for k in pos], labels_all[pos], f"stratified_thirds(all)[{split}] seed={seed}"
    else:
        plan = official_plan(split, tuple(parts))
        if not plan:
            raise empty_split_error(where, split, f"{where} holds only {', '.join(f'{p}/' for p in sorted(parts))}; "
                                    "open the folder (or directory of archives) that holds the other split too")
        sel, labels_l = [], []
        for part, rule in plan:
            prels = sorted(parts[part])
            plabels = np.array([lookup[_class_of(r, part)] for r in prels], dtype=np.int64)
            pos = np.arange(len(prels)) if rule is None else halves_of(plabels, rule, seed=seed)
            sel += [prels[k] for k in pos]
            labels_l.append(plabels[pos])
        labels = np.concatenate(labels_l)
        order = np.argsort(np.array(sel, dtype=str), kind="stable")
        sel, labels = [sel[k] for k in order], labels[order]
        rule = " + ".join(p if r is None else f"stratified_halves({p})[{r}] seed={seed}" for p, r in plan)
    if not sel:
        raise empty_split_error(where, split)
    if not allow_missing_classes:
        counts = np.bincount(labels, minlength=len(class_names))
        missing = [class_names[k] for k in np.flatnonzero(counts == 0)]
        if missing:
            raise DivergentError(
                f"split {split!r} of {where} has no images of class {missing[0]!r}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                "check the class folders / classes list, or pass allow_missing_classes=True",
            )
    reader, index = reader_for(sel)
    ids = np.array(sel, dtype=str)
    if len(set(sel)) != len(sel):
        raise DivergentError(f"{where} lists an image path twice", "remove duplicate archive members or files")
    return ImageDataset(
        name=name, split=split, source_dataset=canonical_dataset(source_dataset or name),
        ids=ids, labels=labels, class_names=class_names, reader=reader, index=index, root=root,
        meta={**meta, "rule": rule, "seed": seed},
    )


# --- directories ---------------------------------------------------------------------------
def _walk(root: Path) -> list[str]:
    rels = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        for f in filenames:
            rel = f if rel_dir == "." else f"{rel_dir}/{f}"
            if is_image_name(rel):
                rels.append(rel)
    return sorted(rels)


def open_folder(path: str, split: str, *, seed: int = SPLIT_SEED, classes=None, name: str | None = None,
                source_dataset: str | None = None, allow_missing_classes: bool = False, on_error: str = "fail",
                **unused) -> ImageDataset:
    """An ImageFolder directory (class subfolders, optionally under train/ val/ test/)."""
    _no_options(unused)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DivergentError(f"image folder {path!r} does not exist", "check the path")
    rels = _walk(root)

    def reader_for(sel):
        return FileReader(str(root), np.array(sel, dtype=str)), None

    return build(rels, where=str(root), split=split, seed=seed, classes=classes, name=name or root.name,
                 root=str(root), reader_for=reader_for, source_dataset=source_dataset,
                 meta={"source": "folder"}, allow_missing_classes=allow_missing_classes)


# --- archives ------------------------------------------------------------------------------
def archive_parts(path: Path) -> dict[str, list[Path]]:
    """In a directory: its archives grouped by the split their name says ('' when it says none).

    Only directories without class subfolders count as archive directories."""
    if not path.is_dir():
        return {}
    if any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir()):
        return {}
    out: dict[str, list[Path]] = {}
    for p in sorted(path.iterdir()):
        low = p.name.lower()
        if p.is_file() and low.endswith(TAR_SUFFIXES):
            stem = low
            for suf in TAR_SUFFIXES:
                if stem.endswith(suf):
                    stem = stem[: -len(suf)]
                    break
            out.setdefault(SPLIT_FOLDERS.get(stem, ""), []).append(p)
    return out


def read_archive(path: Path, on_error: str = "fail") -> tuple[list[str], bytes, np.ndarray, list[tuple[str, str]]]:
    """All image members of an archive: (names, one bytes buffer, offsets (n+1,), skipped)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, on_error)
    if key in _ARCHIVE_CACHE:
        _ARCHIVE_CACHE.move_to_end(key)
        return _ARCHIVE_CACHE[key]
    skipped: list[tuple[str, str]] = []
    fast = _fast_ustar(path)
    if fast is not None:
        names, blobs = fast
    else:
        names, blobs, skipped = _tarfile_members(path, on_error)
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in blobs], out=offsets[1:])
    out = (names, b"".join(blobs), offsets, skipped)
    _ARCHIVE_CACHE[key] = out
    while len(_ARCHIVE_CACHE) > _ARCHIVE_CACHE_SIZE:
        _ARCHIVE_CACHE.popitem(last=False)
    return out


def _tarfile_members(path: Path, on_error: str) -> tuple[list[str], list[bytes], list[tuple[str, str]]]:
    """The general (slower) path through tarfile: any compression and header format."""
    names: list[str] = []
    blobs: list[bytes] = []
    skipped: list[tuple[str, str]] = []
    try:
        with tarfile.open(path, "r|*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                rel = _clean_name(m.name)
                if rel is None:
                    continue
                fh = tf.extractfile(m)
                data = fh.read() if fh is not None else b""
                names.append(rel)
                blobs.append(data)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        if on_error != "skip":
            raise DivergentError(
                f"cannot read archive {path} (after {len(names)} images): {type(exc).__name__}: {exc}",
                "re-download the archive (it is truncated or corrupt), or open it with on_error='skip' "
                "to keep the images read before the damage",
            ) from exc
        skipped.append((f"{path.name}:<rest of archive>", f"{type(exc).__name__}: {exc}"))
    return names, blobs, skipped


def _clean_name(name: str) -> str | None:
    rel = name.replace("\\", "/").lstrip("/")
    while rel.startswith("./"):
        rel = rel[2:]
    if ".." in rel.split("/") or not is_image_name(rel):
        return None
    return rel


def _fast_ustar(path: Path) -> tuple[list[str], list[bytes]] | None:
    """Read a plain or gzipped ustar archive in one pass (about 4x faster than tarfile).

    Returns None for anything it does not fully understand (other compressions, pax/GNU long
    names, bad header checksums, truncation): the caller then uses tarfile, which reports errors."""
    import gzip

    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return None
    names: list[str] = []
    blobs: list[bytes] = []
    pos, end = 0, len(data)
    while pos + 512 <= end:
        h = data[pos : pos + 512]
        if h[0] == 0:
            return names, blobs  # end-of-archive block
        try:
            chk = int(h[148:156].split(b"\0", 1)[0].strip() or b"-1", 8)
            size = int(h[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            return None
        if chk != sum(h) - sum(h[148:156]) + 256:  # checksum field counted as spaces
            return None
        flag = h[156:157]
        if flag not in (b"0", b"\0", b"5", b"1", b"2"):
            return None  # pax / GNU long names / sparse files: let tarfile handle them
        name = h[0:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if h[257:262] == b"ustar":
            prefix = h[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            if prefix:
                name = f"{prefix}/{name}"
        pos += 512
        if pos + size > end:
            return None
        if flag in (b"0", b"\0"):
            rel = _clean_name(name)
            if rel is not None:
                names.append(rel)
                blobs.append(data[pos : pos + size])
        pos += (size + 511) // 512 * 512
    return None if pos < end else (names, blobs)


def _archives_for(split: str, groups: dict[str, list[Path]]) -> list[Path]:
    if "" in groups or split == "all":
        return [p for ps in groups.values() for p in ps]
    want = {"train": ["train"]}.get(split, ["val", "test"] if split in ("holdout", "test") else ["test", "val"])
    if split in ("holdout", "test", "official-test"):
        chosen = [p for w in want for p in groups.get(w, [])]
    else:
        chosen = groups.get("train", [])
    return chosen


def open_tar(path: str, split: str, *, seed: int = SPLIT_SEED, classes=None, name: str | None = None,
             source_dataset: str | None = None, allow_missing_classes: bool = False, on_error: str = "fail",
             **unused) -> ImageDataset:
    """One archive, or a directory of archives named after their split (train.tar.gz, test.tar.gz).

    Only the archives a split needs are read: 'train' reads train.*, 'holdout'/'test'/'official-test'
    read test.* (and val.*), 'all' reads every archive."""
    _no_options(unused)
    p = Path(path).expanduser()
    if p.is_dir():
        groups = archive_parts(p)
        if not groups:
            raise DivergentError(f"{p} holds no .tar/.tar.gz archives", "pass an archive, or an ImageFolder directory with folder:")
        archives = _archives_for(split, groups)
        if not archives:
            raise empty_split_error(str(p), split, f"{p} has archives for {', '.join(sorted(g or '?' for g in groups))} only")
        root, default_name = p, p.name
    elif p.is_file():
        archives, root = [p], p.parent
        default_name = p.name
        for suf in TAR_SUFFIXES:
            if default_name.lower().endswith(suf):
                default_name = default_name[: -len(suf)]
                break
        if default_name.lower() in SPLIT_FOLDERS:  # test.tar.gz -> named after its folder
            default_name = p.resolve().parent.name
    else:
        raise DivergentError(f"archive {path!r} does not exist", "check the path")
    names, buffers, offsets_l, skipped, origins = [], [], [], [], []
    for a in archives:
        n, buf, off, sk = read_archive(a, on_error=on_error)
        names.append(n)
        buffers.append(buf)
        offsets_l.append(off)
        skipped += sk
        origins.append(str(a))
    flat = [r for n in names for r in n]
    stripped, wrapper = _strip_wrapper(flat)
    if len(archives) > 1 and wrapper:
        stripped, wrapper = flat, ""
    position = {r: k for k, r in enumerate(stripped)}
    if len(position) != len(stripped):
        raise DivergentError(f"the archives under {p} hold the same member path twice", "keep each image in one archive")
    buffer = b"".join(buffers)
    starts = np.cumsum([0] + [len(b) for b in buffers])
    offsets = np.concatenate([off[:-1] + s for off, s in zip(offsets_l, starts)] + [np.array([len(buffer)], np.int64)])
    origin = origins[0] if len(origins) == 1 else str(p)

    def reader_for(sel):
        # keep only the selected members' bytes: holdout keeps half of the test archive in memory
        idx = np.array([position[r] for r in sel], dtype=np.int64)
        lens = offsets[idx + 1] - offsets[idx]
        new_off = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lens, out=new_off[1:])
        mv = memoryview(buffer)
        buf = b"".join(mv[offsets[k] : offsets[k + 1]] for k in idx)
        full = [(wrapper + "/" + r) if wrapper else r for r in sel]
        return BytesReader(buf, new_off, np.array(full, dtype=str), origin), None

    ds = build(sorted(stripped), where=str(p), split=split, seed=seed, classes=classes,
               name=name or default_name, root=str(root), reader_for=reader_for,
               source_dataset=source_dataset or name or default_name,
               meta={"source": "tar", "archives": origins}, allow_missing_classes=allow_missing_classes)
    ds.skipped = skipped
    return ds


def _no_options(unused: dict) -> None:
    if unused:
        raise DivergentError(f"folder/archive sources take no option(s) {', '.join(sorted(unused))}",
                             "use classes=, name=, source_dataset=, allow_missing_classes= (see docs/datasets.md)")
