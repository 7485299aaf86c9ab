"""Benchmark of the exact greedy-ensemble engine (forward selection, Caruana et al. 2004).

Paper scale by default: 82 models x 50,000 examples x 1,000 classes of float16 logits (the cached
synthetic set of bench/pairs.py), split into a fit half (holdout, 25,000) and an eval half (test,
25,000); greedy selection from a base up to 10 members without replacement, with fit and eval
accuracy at every size. In the same process a naive exact implementation (full probability
matrices, every candidate ensemble recomputed) runs on a smaller case; the two paths must be equal,
and the ratio of their times is reported. Usage: python bench/ensemble.py [--small] [--replacement]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakAnon  # noqa: E402

from divergent.engine import ModelSource, greedy_select, prepare_many  # noqa: E402
from divergent.engine.greedy import best_size  # noqa: E402
from divergent.engine.naive import greedy_reference, ref_probs  # noqa: E402
from divergent.engine.synthetic import load_scores, make_scores  # noqa: E402


def split_sources(meta):
    xs, y = load_scores(meta)
    h = len(y) // 2
    fit = [ModelSource(x[:h], T, "logits", nm) for x, T, nm in zip(xs, meta["temperatures"], meta["names"])]
    ev = [ModelSource(x[h:], T, "logits", nm) for x, T, nm in zip(xs, meta["temperatures"], meta["names"])]
    return fit, ev, y[:h], y[h:]


def engine_run(fit, ev, yf, ye, base, max_size, replacement, k, workers, progress):
    t0 = time.perf_counter()
    prepared = prepare_many(fit, yf, k=k, workers=workers, progress=progress)
    t1 = time.perf_counter()
    pool = list(range(len(fit))) if replacement else None
    steps = greedy_select(prepared, base, pool=pool, max_size=max_size, replacement=replacement,
                          eval_sources=ev, eval_labels=ye, workers=workers, progress=progress)
    t2 = time.perf_counter()
    return steps, t1 - t0, t2 - t1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="12 models x 5,000 x 1,000")
    ap.add_argument("--models", type=int, default=82)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--max-size", type=int, default=10)
    ap.add_argument("--replacement", action="store_true")
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--naive-models", type=int, default=24)
    ap.add_argument("--naive-n", type=int, default=10_000)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    if args.small:
        args.models, args.n, args.naive_models, args.naive_n = 12, 5000, 12, 5000
    meta = make_scores(args.cache, args.models, args.n, args.classes, seed=0)
    fit, ev, yf, ye = split_sources(meta)
    base = int(np.argsort(meta["temperatures"])[len(fit) // 2])  # any fixed model
    c0 = time.process_time()
    with PeakAnon() as mem:
        steps, tp, tg = engine_run(fit, ev, yf, ye, base, args.max_size, args.replacement, args.k,
                                   args.workers, args.progress)
    cpu = time.process_time() - c0
    print(f"scale: {len(fit)} models, fit {len(yf)} / eval {len(ye)} examples, {args.classes} classes; "
          f"max size {args.max_size}, replacement={args.replacement}")
    print(f"engine: prepare {tp:.1f} s + greedy {tg:.1f} s = {tp + tg:.1f} s; peak RssAnon {mem.peak_gb:.2f} GB; "
          f"CPU time {cpu:.1f} s; load avg {os.getloadavg()[0]:.1f}")
    for s in steps:
        print(f"  size {s.size:2d} +{s.name:<22} fit_acc {s.fit_acc:.4f} eval_acc {s.eval_acc:.4f} "
              f"nll {s.fit_nll:.4f} full-row rows {s.n_fallback}")
    print(f"  best size on fit split: {best_size(steps)}")
    # naive exact comparison on a smaller case, same process
    small = make_scores(args.cache, args.naive_models, args.naive_n, args.classes, seed=0)
    sfit, sev, syf, sye = split_sources(small)
    sbase = 0
    steps_e, tp_e, tg_e = engine_run(sfit, sev, syf, sye, sbase, args.max_size, args.replacement, args.k,
                                     args.workers, False)
    t0 = time.perf_counter()
    pf = [ref_probs(s.scores, "logits", s.temperature) for s in sfit]
    pe = [ref_probs(s.scores, "logits", s.temperature) for s in sev]
    pool = list(range(len(sfit))) if args.replacement else None
    ref = greedy_reference(pf, syf, sbase, pool=pool, max_size=args.max_size, replacement=args.replacement,
                           names=[s.name for s in sfit], probs_eval=pe, labels_eval=sye)
    t_naive = time.perf_counter() - t0
    same = ([s.member for s in steps_e] == [r[0] for r in ref]
            and [s.fit_acc for s in steps_e] == [r[1] for r in ref]
            and [s.eval_acc for s in steps_e] == [r[3] for r in ref])
    print(f"naive exact on {len(sfit)} models x {len(syf)} fit examples: {t_naive:.2f} s; engine {tp_e + tg_e:.2f} s "
          f"(ratio {t_naive / (tp_e + tg_e):.1f}x); identical path and accuracies: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
