"""What is wrong with a store: every array file against its sha256, shape and dtype, the
manifest's values against each other, and every cached derived result against its own checks."""
from __future__ import annotations

import numpy as np

from ..errors import CorruptStoreError
from .cache import cache_files, check_cache_file


def store_problems(st) -> list[str]:
    """Every problem of the store `st` (empty when all is well).

    The manifest's checksum and the consistency of its values (sizes, classes, temperatures and
    the arrays they were fitted on), every array file's sha256 (hashed afresh), shape and dtype,
    and every cached derived result under STORE/cache against its own checksums and key."""
    problems = [st.manifest_problem] if st.manifest_problem else []
    try:
        files = [(f"split {s}", info) for s, e in st._m["splits"].items() for info in e["files"].values()]
        files += [(f"{m} / {s} / {k}", info) for m, e in st._m["models"].items()
                  for s, se in e["splits"].items() for k, info in se["arrays"].items()]
    except (KeyError, AttributeError, TypeError) as exc:
        return problems + [f"manifest.json is malformed ({type(exc).__name__}: {exc})"]
    present = []
    for what, info in files:
        try:
            path = st._path_of(info)
        except (CorruptStoreError, TypeError, AttributeError) as exc:
            problems.append(f"{what}: {getattr(exc, 'problem', exc)}")
            continue
        if not path.exists():
            problems.append(f"{what}: file {info['path']} is missing")
        else:
            present.append((what, info))
    matches = st._hash_and_record([i for _, i in present])
    for what, info in present:
        if not matches[info["path"]]:
            problems.append(f"{what}: file {info['path']} does not match its checksum")
            continue
        try:
            st._load(info)
        except CorruptStoreError as exc:
            problems.append(f"{what}: {exc.problem}")
    problems += value_problems(st._m)
    problems += [p for p in (check_cache_file(st.root, f) for f in cache_files(st.root)) if p]
    return problems


def value_problems(m: dict) -> list[str]:
    """Values of the manifest that contradict each other (sizes, classes, temperatures)."""
    out = []
    for s, e in m["splits"].items():
        try:
            n, names, files = int(e["n"]), list(e["class_names"]), e["files"]
            if int(e["n_classes"]) != len(names):
                out.append(f"split {s}: n_classes {e['n_classes']} but {len(names)} class names")
            for k in ("labels", "ids"):
                if list(files[k]["shape"])[:1] != [n]:
                    out.append(f"split {s}: n is {n} but its {k} have shape {files[k]['shape']}")
        except (KeyError, TypeError, ValueError) as exc:
            out.append(f"split {s}: malformed entry ({type(exc).__name__}: {exc})")
    for mname, me in m["models"].items():
        try:
            for s, se in me["splits"].items():
                if s not in m["splits"]:
                    out.append(f"{mname}: arrays for split {s!r}, which the store does not have")
                    continue
                sp = m["splits"][s]
                for k, info in se["arrays"].items():
                    shape = list(info["shape"])
                    if shape[:1] != [int(sp["n"])]:
                        out.append(f"{mname} / {s} / {k}: {shape[0] if shape else '?'} rows, the split has {sp['n']}")
                    if k in ("logits", "probs") and shape[1:2] != [len(sp["class_names"])]:
                        out.append(f"{mname} / {s} / {k}: {shape[1:2]} classes, the split has {len(sp['class_names'])}")
            cal = me.get("calibration")
            if cal:
                t = cal.get("temperature")
                if not (isinstance(t, (int, float)) and np.isfinite(t) and t > 0):
                    out.append(f"{mname}: temperature {t!r} is not a positive number")
                fit_on, fitted = cal.get("fit_on"), cal.get("fitted_on_sha256")
                arrays = me["splits"].get(fit_on, {}).get("arrays", {})
                src = arrays.get("logits") or arrays.get("probs")
                if fitted is not None and (src is None or src.get("sha256") != fitted):
                    out.append(f"{mname}: its temperature was fitted on {fit_on} scores the store no longer holds "
                               "(refit with `divergent calibrate`)")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            out.append(f"{mname}: malformed entry ({type(exc).__name__}: {exc})")
    return out
