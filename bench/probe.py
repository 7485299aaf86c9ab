"""Benchmark of the L-BFGS probe against scikit-learn's lbfgs LogisticRegression (one run, same data).

(a) one fit at a fixed lam on 50,000 x 1,024 features, 100 classes: both converge; report
    both objectives (float64), their relative gap (target <= 1e-4) and the time ratio
    (target: not slower);
(b) the default lam sweep (coarse decades + refinement, warm starts) with selection on a
    validation split, 20,000 x 512 x 100, against scikit-learn fitting every lam of the
    same grid from scratch with a high max_iter (non-converged fits reported) -- target >= 5x;
(c) the same on CUDA when a GPU is present (skipped otherwise).

Data: synthetic but learnable -- 100 class means on a random 64-dimensional subspace plus
isotropic noise, L2-normalised. Threads: torch.set_num_threads(2) and BLAS limited to 2
threads for scikit-learn. The machine may be shared: the load average is printed.
Usage: python bench/probe.py [--quick] [--skip-a] [--skip-b]
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np


def make_data(n, d, k, seed=0, noise=6.0):
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(64, d)) / np.sqrt(64)
    means = rng.normal(size=(k, 64)) @ basis
    y = rng.integers(0, k, size=n)
    X = means[y] + noise * rng.normal(size=(n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), y.astype(np.int64)


def load():
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def sk_fit(X64, y, C, max_iter, tol=1e-4):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always", ConvergenceWarning)
        t = time.perf_counter()
        m = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, tol=tol).fit(X64, y)
        dt = time.perf_counter() - t
    conv = not any(issubclass(r.category, ConvergenceWarning) for r in rec)
    return m, dt, conv


def bench_a(n, d, k, lam, device):
    from divergent.probes.lbfgs import fit_probe, lam_to_C, objective

    X, y = make_data(n, d, k, seed=0)
    fit_probe(X[:2000], y[:2000], lam, normalize=False, warn=False, device=device)  # warm-up
    t = time.perf_counter()
    ours = fit_probe(X, y, lam, normalize=False, device=device)
    t_ours = time.perf_counter() - t
    o_ours = objective(X, y, ours.W, ours.b, lam)
    print(f"(a) {n} x {d} x {k}, lam={lam:g} (C={lam_to_C(lam, n):.4g}), device={device}")
    print(f"    divergent: {t_ours:7.2f} s  {ours.n_iter} iterations, {ours.n_evals} evaluations, "
          f"status={ours.status}, objective={o_ours:.8f}")
    if device != "cpu":
        return t_ours, None
    X64 = X.astype(np.float64)
    sk, t_sk, conv = sk_fit(X64, y, lam_to_C(lam, n), max_iter=1000)
    o_sk = objective(X, y, sk.coef_, sk.intercept_, lam)
    gap = (o_ours - o_sk) / o_sk
    print(f"    sklearn  : {t_sk:7.2f} s  {int(sk.n_iter_[0])} iterations, converged={conv}, objective={o_sk:.8f}")
    print(f"    relative objective gap (ours - sklearn) / sklearn = {gap:+.2e} (target |gap| <= 1e-4)")
    print(f"    time ratio sklearn / divergent = {t_sk / t_ours:.2f}x (target >= 1)")
    return t_ours, t_sk


def bench_b(n, d, k, device, sk_max_iter=3000):
    from divergent.probes.lbfgs import lam_to_C, objective, sweep_probe

    # validation split: the same class means, fresh examples
    Xall, yall = make_data(n + n // 4, d, k, seed=1)
    X, y, Xv, yv = Xall[:n], yall[:n], Xall[n:], yall[n:]
    t = time.perf_counter()
    sw = sweep_probe(X, y, Xv, yv, None, normalize=False, warn=False, device=device)
    t_ours = time.perf_counter() - t
    tab = sw.table
    print(f"(b) default sweep on {n} x {d} x {k} (validation {len(yv)}), device={device}: {len(tab)} lam values, "
          f"{int(tab.n_iter.sum())} iterations, {t_ours:.2f} s, selected lam={sw.best.lam:.4g} "
          f"(validation acc {tab.select_score[tab.selected].iloc[0]:.4f}); not converged: "
          f"{int((~tab.converged).sum())}")
    if device != "cpu":
        return t_ours, None
    X64 = X.astype(np.float64)
    t_sk, rows = 0.0, []
    for lam in tab.lam:
        m, dt, conv = sk_fit(X64, y, lam_to_C(lam, n), max_iter=sk_max_iter)
        t_sk += dt
        acc = float((m.predict(Xv) == yv).mean())
        fit = sw.fits[lam]
        o_sk, o_ours = objective(X, y, m.coef_, m.intercept_, lam), objective(X, y, fit.W, fit.b, lam)
        rows.append((lam, int(m.n_iter_[0]), conv, acc, dt, (o_ours - o_sk) / o_sk))
    best_sk = max(rows, key=lambda r: (r[3], r[0]))[0]
    nc = [f"{r[0]:.3g}" for r in rows if not r[2]]
    print(f"    sklearn from scratch, same {len(rows)} values, max_iter={sk_max_iter}: {t_sk:.2f} s, "
          f"{sum(r[1] for r in rows)} iterations, selected lam={best_sk:.4g}; not converged: {nc or 'none'}")
    for lam, it, conv, acc, dt, gap in rows:
        o = tab.loc[tab.lam == lam].iloc[0]
        print(f"      lam={lam:9.3g}  sklearn {it:5d} it {dt:6.2f} s acc {acc:.4f} {'' if conv else 'NOT CONVERGED'} | "
              f"divergent {int(o.n_iter):4d} it {int(o.n_evals):4d} ev {o.time_s:6.2f} s acc {o.select_score:.4f} "
              f"{o.status} | objective gap {gap:+.1e}")
    print(f"    largest relative objective gap over the grid: {max(abs(r[5]) for r in rows):.1e}")
    print(f"    time ratio sklearn / divergent = {t_sk / t_ours:.2f}x (target >= 5)")
    return t_ours, t_sk


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--skip-a", action="store_true")
    ap.add_argument("--skip-b", action="store_true")
    ap.add_argument("--lam", type=float, default=1e-4)
    args = ap.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(2)
    threadpool_limits(2)
    print(f"load average before: {load()}; torch threads {torch.get_num_threads()}; cores {os.cpu_count()}")
    a = (5000, 256, 20) if args.quick else (50_000, 1024, 100)
    b = (4000, 128, 20) if args.quick else (20_000, 512, 100)
    if not args.skip_a:
        t_cpu_a, t_sk_a = bench_a(*a, args.lam, "cpu")
        print(f"    load average: {load()}")
    if not args.skip_b:
        t_cpu_b, t_sk_b = bench_b(*b, "cpu")
        print(f"    load average: {load()}")
    if torch.cuda.is_available():
        print(f"(c) GPU: {torch.cuda.get_device_name(0)}")
        if not args.skip_a:
            t, _ = bench_a(*a, args.lam, "cuda")
            print(f"    sklearn / GPU = {t_sk_a / t:.1f}x (aim >= 50); divergent CPU / GPU = {t_cpu_a / t:.1f}x")
        if not args.skip_b:
            t, _ = bench_b(*b, "cuda")
            print(f"    sklearn / GPU = {t_sk_b / t:.1f}x (aim >= 50); divergent CPU / GPU = {t_cpu_b / t:.1f}x")
    else:
        print("(c) skipped: no CUDA device")


if __name__ == "__main__":
    main()
