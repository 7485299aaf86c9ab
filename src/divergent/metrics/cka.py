"""Linear CKA (Kornblith et al. 2019), exact and streamed over examples; biased or unbiased HSIC.

Pure functions on (n, d) arrays (numpy arrays or read-only memory maps, any float dtype).

* :func:`linear_cka` never forms an n x n Gram matrix: it streams rows in chunks, accumulates
  the d x d cross-products of the mean-centred features in float64 and evaluates HSIC from
  these sufficient statistics (formulas in docs/shift.md).
* :func:`cka_gram` is the direct Gram-matrix reference (small n only), used to check it.
* :func:`bootstrap_cka` gives every pair's CKA on resamples of the examples, exactly, with the
  resample counts as weights; it works on c x c blocks of the Gram matrices of all models at
  once (memory bounded by the block size, not by n^2), which costs about as much as the point
  estimates whatever the number of resamples per block.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DivergentError

#: bytes of float64 rows held per chunk while streaming
CHUNK_BYTES = 1 << 25


def _rows(d: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    return max(1, chunk_bytes // (8 * max(1, d)))


def _check(X, Y=None) -> int:
    if np.ndim(X) != 2 or (Y is not None and np.ndim(Y) != 2):
        raise DivergentError("features must be 2-D arrays (examples x dimensions)", "pass one row per example")
    n = X.shape[0]
    if Y is not None and Y.shape[0] != n:
        raise DivergentError(f"the two feature arrays cover {n} and {Y.shape[0]} examples",
                             "compare features of the same examples, in the same order")
    return n


def column_means(X, *, chunk_bytes: int = CHUNK_BYTES) -> np.ndarray:
    """float64 column means, streamed."""
    n = _check(X)
    r = _rows(X.shape[1], chunk_bytes)
    s = np.zeros(X.shape[1])
    for i in range(0, n, r):
        s += np.asarray(X[i : i + r], dtype=np.float64).sum(axis=0)
    return s / max(n, 1)


def cross_stats(X, Y, *, mean_x=None, mean_y=None, chunk_bytes: int = CHUNK_BYTES) -> dict:
    """Sufficient statistics of HSIC between X and Y, streamed over rows of the centred features
    x~ = x - mean_x, y~ = y - mean_y (float64):

    S = X~'Y~ (p x q), sx = X~'1, sy = Y~'1, a_i = |x~_i|^2, b_i = |y~_i|^2, sum_a, sum_b,
    sum_ab = sum_i a_i b_i, Xb = X~'b (p), Ya = Y~'a (q), n.
    The centring only serves precision: the formulas are exact for any shift (sx, sy are kept).
    """
    n = _check(X, Y)
    mx = column_means(X, chunk_bytes=chunk_bytes) if mean_x is None else np.asarray(mean_x, np.float64)
    my = column_means(Y, chunk_bytes=chunk_bytes) if mean_y is None else np.asarray(mean_y, np.float64)
    p, q = X.shape[1], Y.shape[1]
    st = {"n": n, "S": np.zeros((p, q)), "sx": np.zeros(p), "sy": np.zeros(q), "sum_a": 0.0, "sum_b": 0.0,
          "sum_ab": 0.0, "Xb": np.zeros(p), "Ya": np.zeros(q)}
    r = _rows(p + q, chunk_bytes)
    for i in range(0, n, r):
        x = np.asarray(X[i : i + r], dtype=np.float64) - mx
        y = x if Y is X else np.asarray(Y[i : i + r], dtype=np.float64) - my
        a = np.einsum("ij,ij->i", x, x)
        b = a if Y is X else np.einsum("ij,ij->i", y, y)
        st["S"] += x.T @ y
        st["sx"] += x.sum(axis=0)
        st["sy"] += y.sum(axis=0)
        st["sum_a"] += a.sum()
        st["sum_b"] += b.sum()
        st["sum_ab"] += a @ b
        st["Xb"] += x.T @ b
        st["Ya"] += y.T @ a
    return st


def hsic_from_stats(st: dict, unbiased: bool = False) -> float:
    """HSIC of linear kernels from :func:`cross_stats`, up to a factor common to every pair on the
    same examples (which CKA cancels): biased = ||X_c'Y_c||_F^2 with X_c the exactly centred
    features; unbiased = Song et al. (2012)'s estimator, n(n-3) HSIC_1, divided by n(n-3)."""
    n, S, sx, sy = st["n"], st["S"], st["sx"], st["sy"]
    if not unbiased:
        C = S - np.outer(sx, sy) / n
        return float(np.einsum("ij,ij->", C, C))
    if n < 4:
        raise DivergentError(f"the unbiased HSIC needs at least 4 examples, got {n}", "use more examples or the biased CKA")
    t1 = float(np.einsum("ij,ij->", S, S)) - st["sum_ab"]
    sk = float(sx @ sx) - st["sum_a"]
    sl = float(sy @ sy) - st["sum_b"]
    t3 = float(sx @ S @ sy) - float(sx @ st["Xb"]) - float(st["Ya"] @ sy) + st["sum_ab"]
    return (t1 + sk * sl / ((n - 1) * (n - 2)) - 2.0 * t3 / (n - 2)) / (n * (n - 3))


def _ratio(hxy: float, hxx: float, hyy: float) -> float:
    den = hxx * hyy
    return float(hxy / np.sqrt(den)) if den > 0 else float("nan")


def linear_cka(X, Y, *, unbiased: bool = False, chunk_bytes: int = CHUNK_BYTES) -> float:
    """Linear CKA of two feature arrays of the same examples (streamed, Gram-free, exact).

    CKA = HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y)); NaN where a self-HSIC is not positive
    (constant features, or a negative unbiased estimate on very few examples)."""
    _check(X, Y)
    mx, my = column_means(X, chunk_bytes=chunk_bytes), column_means(Y, chunk_bytes=chunk_bytes)
    kw = {"chunk_bytes": chunk_bytes}
    hxy = hsic_from_stats(cross_stats(X, Y, mean_x=mx, mean_y=my, **kw), unbiased)
    hxx = hsic_from_stats(cross_stats(X, X, mean_x=mx, mean_y=mx, **kw), unbiased)
    hyy = hsic_from_stats(cross_stats(Y, Y, mean_x=my, mean_y=my, **kw), unbiased)
    return _ratio(hxy, hxx, hyy)


def cka_pairs(features: Sequence, pairs: Sequence[tuple[int, int]], *, unbiased: bool = False,
              chunk_bytes: int = CHUNK_BYTES) -> np.ndarray:
    """CKA of each (i, j) in ``pairs`` of ``features`` (a list of (n, d_k) arrays); each model's
    means and self-HSIC are computed once."""
    need = sorted({k for ab in pairs for k in ab})
    n = _check(features[need[0]]) if need else 0
    for k in need:
        if _check(features[k]) != n:
            raise DivergentError("feature arrays cover different numbers of examples", "compare the same examples")
    means = {k: column_means(features[k], chunk_bytes=chunk_bytes) for k in need}
    selfh = {k: hsic_from_stats(cross_stats(features[k], features[k], mean_x=means[k], mean_y=means[k],
                                            chunk_bytes=chunk_bytes), unbiased) for k in need}
    out = np.empty(len(pairs))
    for t, (i, j) in enumerate(pairs):
        if i == j:
            out[t] = 1.0 if selfh[i] > 0 else np.nan
            continue
        h = hsic_from_stats(cross_stats(features[i], features[j], mean_x=means[i], mean_y=means[j],
                                        chunk_bytes=chunk_bytes), unbiased)
        out[t] = _ratio(h, selfh[i], selfh[j])
    return out


# ---- the direct reference ---------------------------------------------------------------------

def hsic_gram(K: np.ndarray, L: np.ndarray, unbiased: bool = False) -> float:
    """HSIC from full Gram matrices (reference; scaled like :func:`hsic_from_stats`)."""
    K, L = np.asarray(K, np.float64), np.asarray(L, np.float64)
    n = K.shape[0]
    if not unbiased:
        H = np.eye(n) - 1.0 / n
        return float(np.sum((H @ K @ H) * (H @ L @ H)))
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    one = np.ones(n)
    return float((np.sum(Kt * Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
                  - 2.0 / (n - 2) * (one @ Kt @ Lt @ one)) / (n * (n - 3)))


def cka_gram(X, Y, *, unbiased: bool = False) -> float:
    """Linear CKA through the n x n Gram matrices K = XX', L = YY' (the direct definition)."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    K, L = X @ X.T, Y @ Y.T
    return _ratio(hsic_gram(K, L, unbiased), hsic_gram(K, K, unbiased), hsic_gram(L, L, unbiased))


# ---- the bootstrap ----------------------------------------------------------------------------

def resample_weights(n: int, idx_rows) -> np.ndarray:
    """(B, n) float64 counts of each example in each resample (rows of example indices)."""
    return np.stack([np.bincount(np.asarray(ix), minlength=n) for ix in idx_rows]).astype(np.float64)


def bootstrap_cka(features: Sequence, pairs: Sequence[tuple[int, int]], weights: np.ndarray, *,
                  unbiased: bool = False, block: int | None = None, budget_bytes: int = 1 << 30) -> np.ndarray:
    """(P, B) CKA of every pair on every resample; resample b repeats example i weights[b, i] times.

    Exact: with w the counts, K = X~X~' (any fixed centring), s = sum w,
      Q_xy = w'(K o L)w,  k = Kw,  l = Lw,  a = diag K,  b = diag L
    biased   HSIC = Q_xy - 2/s sum_i w_i k_i l_i + (w'k)(w'l)/s^2
    unbiased HSIC = [Q_xy - sum w a b + (w'k - w'a)(w'l - w'b)/((s-1)(s-2))
                     - 2/(s-2) sum_i w_i (k_i - a_i)(l_i - b_i)] / (s(s-3))
    (a resampled example repeated r times is r distinct rows, as in the Gram reference on X[idx]).
    The n x n Gram matrices are visited in c x c blocks; resamples are processed in groups so
    that the per-model vectors k (n x B) fit in ``budget_bytes``.
    """
    W = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    pairs = [tuple(map(int, ab)) for ab in pairs]
    need = sorted({k for ab in pairs for k in ab})
    n = W.shape[1]
    for k in need:
        if _check(features[k]) != n:
            raise DivergentError("weights and features cover different numbers of examples", "one weight per example")
    slot = {k: t for t, k in enumerate(need)}
    m = len(need)
    dmax = max(features[k].shape[1] for k in need)
    if block is None:  # rows of two blocks and the c x c Gram blocks of all models in half the budget
        lin, quad = 2 * m * dmax * 8, m * 8 * 2  # bytes per block row; per block row squared (Grams + product)
        c = (-lin + np.sqrt(lin * lin + 4 * quad * budget_bytes / 2)) / (2 * quad)
        block = int(max(64, min(n, 2048, c)))
    means = [column_means(features[k]) for k in need]
    rows = [(s, min(n, s + block)) for s in range(0, n, block)]

    def load(rs):
        s, e = rs
        return [np.asarray(features[k][s:e], dtype=np.float64) - means[t] for t, k in enumerate(need)]

    diag = np.zeros((m, n))
    for rs in rows:
        for t, x in enumerate(load(rs)):
            diag[t, rs[0] : rs[1]] = np.einsum("ij,ij->i", x, x)
    self_pairs = [(k, k) for k in need]
    all_pairs = list(dict.fromkeys(self_pairs + [(i, j) for i, j in pairs if i != j]))
    B = W.shape[0]
    group = int(max(1, min(B, budget_bytes // 2 // (8 * max(1, m * n)))))
    out = np.full((len(pairs), B), np.nan)
    for g0 in range(0, B, group):
        Wg = W[g0 : g0 + group]
        bg = Wg.shape[0]
        kw = np.zeros((m, n, bg))
        Q = np.zeros((len(all_pairs), bg))
        for ia, ra in enumerate(rows):
            xa = load(ra)
            wa = Wg[:, ra[0] : ra[1]].T  # (ca, bg)
            for rb in rows[ia:]:
                xb = xa if rb == ra else load(rb)
                wb = Wg[:, rb[0] : rb[1]].T
                grams = [u @ v.T for u, v in zip(xa, xb)]
                for t, G in enumerate(grams):
                    kw[t, ra[0] : ra[1]] += G @ wb
                    if rb != ra:
                        kw[t, rb[0] : rb[1]] += G.T @ wa
                mult = 1.0 if rb == ra else 2.0
                for q, (i, j) in enumerate(all_pairs):
                    H = grams[slot[i]] * grams[slot[j]]
                    Q[q] += mult * np.einsum("ib,ib->b", wa, H @ wb)
        s = Wg.sum(axis=1)
        h = {}
        for q, (i, j) in enumerate(all_pairs):
            ki, kj = kw[slot[i]], kw[slot[j]]  # (n, bg)
            ai, aj = diag[slot[i]], diag[slot[j]]
            wt = Wg.T
            if not unbiased:
                h[(i, j)] = (Q[q] - 2.0 / s * np.einsum("nb,nb->b", wt * ki, kj)
                             + np.einsum("nb,nb->b", wt, ki) * np.einsum("nb,nb->b", wt, kj) / s**2)
            else:
                wab = (ai * aj) @ wt
                sk = np.einsum("nb,nb->b", wt, ki) - ai @ wt
                sl = np.einsum("nb,nb->b", wt, kj) - aj @ wt
                t3 = np.einsum("nb,nb->b", wt * (ki - ai[:, None]), kj - aj[:, None])
                with np.errstate(invalid="ignore", divide="ignore"):
                    h[(i, j)] = (Q[q] - wab + sk * sl / ((s - 1) * (s - 2)) - 2.0 * t3 / (s - 2)) / (s * (s - 3))
        for t, (i, j) in enumerate(pairs):
            hxy = h[(i, i)] if i == j else h[(i, j)]
            den = h[(i, i)] * h[(j, j)]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[t, g0 : g0 + bg] = np.where(den > 0, hxy / np.sqrt(np.where(den > 0, den, 1.0)), np.nan)
    return out
