"""Make a paper-scale synthetic prediction store for the store-level benchmarks.

Default: 82 models x 50,000 examples x 1,000 classes of float16 logits (8.2 GB of arrays) on one
split `test`, each model with a temperature (the synthetic generator's own fit; recorded as fitted
on `holdout`), written through the store's writer like any import. The scores come from
divergent.engine.synthetic (correlated models, accuracies 60-90 %); each model's source file is
deleted once it is in the store, so the disk holds one copy. Delete the store when done.

Usage: python bench/make_store.py OUT [--models 82 --n 50000 --classes 1000 --seed 0]
then:  python bench/pairs.py --store OUT --split test
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def make_store(out: Path, models: int, n: int, classes: int, seed: int = 0) -> Path:
    from divergent.engine.synthetic import make_scores
    from divergent.store import Store

    out = Path(out)
    if out.exists():
        raise SystemExit(f"{out} exists: choose a new path (or delete it)")
    src = out.parent / f".{out.name}.scores"
    t = time.perf_counter()
    meta = make_scores(src, models, n, classes, seed=seed)
    print(f"scores: {time.perf_counter() - t:.1f} s")
    sdir = Path(meta["dir"])
    y = np.load(sdir / "labels.npy")
    st = Store.create(out)
    t = time.perf_counter()
    with st.writer(command="bench/make_store.py") as w:
        w.add_split("test", labels=y, class_names=[f"c{i:04d}" for i in range(classes)],
                    ids=[f"test/{i:06d}" for i in range(n)], dataset="synthetic")
    for name, f, T in zip(meta["names"], meta["files"], meta["temperatures"]):
        with st.writer(command="bench/make_store.py") as w:  # one commit per model, like a study
            w.put(name, "test", logits=np.load(sdir / f, mmap_mode="r"))
            w.set_temperature(name, T, fit_on="holdout")
        (sdir / f).unlink()
    shutil.rmtree(src, ignore_errors=True)
    print(f"store: {out} ({models} models, {time.perf_counter() - t:.1f} s to write)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--models", type=int, default=82)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    make_store(args.out, args.models, args.n, args.classes, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
