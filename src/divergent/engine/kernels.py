"""numba kernels of the engines: top-k extraction, pair certificates, greedy certificates.

All arithmetic here is IEEE float64 add/divide/compare (no fastmath, no exp/log), so the
values are those numpy would compute; exp/log stay in numpy (see rows.py).
"""
from __future__ import annotations

import threading

import numpy as np
from numba import njit


@njit(nogil=True, cache=True, inline="always")
def _reset_topk(vals, ids, k):
    for j in range(k + 1):
        vals[j] = -1.0
        ids[j] = -1


@njit(nogil=True, cache=True, inline="always")
def _insert_topk(vals, ids, k, v, cc):
    """Insert value v of class cc into the descending top-(k+1) buffer, after every entry >= v
    (so among equal values the earlier-scanned, i.e. lower, class id stays first)."""
    if v > vals[k]:
        pos = k
        while pos > 0 and v > vals[pos - 1]:
            vals[pos] = vals[pos - 1]
            ids[pos] = ids[pos - 1]
            pos -= 1
        vals[pos] = v
        ids[pos] = cc


@njit(nogil=True, cache=True, inline="always")
def _position(topi, i, k, c):
    """Where class c sits in row i's top-k ids, or -1."""
    for j in range(k):
        if topi[i, j] == c:
            return j
    return -1


@njit(nogil=True, cache=True)
def topk_rows(p, labels, k, topi, topp, thr, plabel, unot):
    """Per row of p (B, C): top-k ids/probs by (value desc, index asc), the largest prob
    outside the top-k (thr; 0 when k == C), p[label] and the largest prob of a class != label."""
    b, c = p.shape
    vals = np.empty(k + 1, dtype=np.float64)
    ids = np.empty(k + 1, dtype=np.int32)
    for i in range(b):
        _reset_topk(vals, ids, k)
        for cc in range(c):
            v = p[i, cc]
            _insert_topk(vals, ids, k, v, cc)
        for j in range(k):
            topi[i, j] = ids[j]
            topp[i, j] = vals[j]
        thr[i] = vals[k] if vals[k] > 0.0 else 0.0
        y = labels[i]
        plabel[i] = p[i, y]
        unot[i] = vals[1] if ids[0] == y else vals[0]


@njit(nogil=True, cache=True)
def pair_tier1(pred_a, topi_a, topp_a, thr_a, pred_b, topi_b, topp_b, thr_b, labels, codes, pending):
    """Codes of a pair from the top-k summaries; pending[i] = 1 where the ensemble argmax is not
    certified (those need exact candidate sums or full rows). Returns the number pending."""
    n, k = topi_a.shape
    npend = 0
    for i in range(n):
        y = labels[i]
        pa = pred_a[i]
        pb = pred_b[i]
        code = 0
        if pa == y:
            code |= 1
        if pb == y:
            code |= 2
        if pa == pb:
            code |= 8
            # every other class c has p_a[c] <= topp_a[1], p_b[c] <= topp_b[1]
            if topp_a[i, 1] + topp_b[i, 1] < topp_a[i, 0] + topp_b[i, 0]:
                if pa == y:
                    code |= 4
                codes[i] = code
                pending[i] = 0
                continue
        # interval certificate: lo <= fl(pa[c] + pb[c]) <= hi for every candidate c
        best = -1.0
        w = -1
        for j in range(k):
            c = topi_a[i, j]
            l = _position(topi_b, i, k, c)
            lo = topp_a[i, j] + topp_b[i, l] if l >= 0 else topp_a[i, j]
            if lo > best:
                best = lo
                w = c
        for l in range(k):
            c = topi_b[i, l]
            inside = _position(topi_a, i, k, c) >= 0
            if not inside and topp_b[i, l] > best:
                best = topp_b[i, l]
                w = c
        ok = best > thr_a[i] + thr_b[i]
        if ok:
            for j in range(k):
                c = topi_a[i, j]
                if c == w:
                    continue
                l = _position(topi_b, i, k, c)
                hi = topp_a[i, j] + topp_b[i, l] if l >= 0 else topp_a[i, j] + thr_b[i]
                if not best > hi:
                    ok = False
                    break
        if ok:
            for l in range(k):
                c = topi_b[i, l]
                if c == w:
                    continue
                inside = _position(topi_a, i, k, c) >= 0
                if not inside and not best > topp_b[i, l] + thr_a[i]:
                    ok = False
                    break
        if ok:
            if w == y:
                code |= 4
            pending[i] = 0
        else:
            pending[i] = 1
            npend += 1
        codes[i] = code
    return npend


@njit(nogil=True, cache=True)
def greedy_tier1(S, labels, us, cs, nn, plabel, unot, topi, topp, correct, qy_out, pending):
    """Correctness of the ensemble (S + p_j) / nn per row, certified from p_j's summaries and the
    running sum S (full float64 rows). us/cs: max and argmax over c != y of S. Returns #pending."""
    n, k = topi.shape
    npend = 0
    for i in range(n):
        y = labels[i]
        qy = (S[i, y] + plabel[i]) / nn
        qy_out[i] = qy
        pending[i] = 0
        if qy > (us[i] + unot[i]) / nn:
            correct[i] = 1
            continue
        bad = False
        for l in range(k):
            c = topi[i, l]
            if c == y:
                continue
            q = (S[i, c] + topp[i, l]) / nn
            if q > qy or (q == qy and c < y):
                bad = True
                break
        if not bad:
            c = cs[i]
            lb = S[i, c] / nn
            if lb > qy or (lb == qy and c < y):
                bad = True
        if bad:
            correct[i] = 0
        else:
            correct[i] = 0
            pending[i] = 1
            npend += 1
    return npend


@njit(nogil=True, cache=True)
def max_excluding_label(S, labels, us, cs):
    """us[i] = max_{c != y} S[i, c], cs[i] its lowest argmax."""
    n, c = S.shape
    for i in range(n):
        y = labels[i]
        best = -1.0
        arg = -1
        for cc in range(c):
            if cc != y and S[i, cc] > best:
                best = S[i, cc]
                arg = cc
        us[i] = best
        cs[i] = arg


@njit(nogil=True, cache=True)
def _pairwise_leaf(a, lo, n):
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0 = a[lo]
    r1 = a[lo + 1]
    r2 = a[lo + 2]
    r3 = a[lo + 3]
    r4 = a[lo + 4]
    r5 = a[lo + 5]
    r6 = a[lo + 6]
    r7 = a[lo + 7]
    i = 8
    stop = n - (n % 8)
    while i < stop:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(nogil=True, cache=True)
def pairwise_sum(a, lo, n):
    """numpy's pairwise summation of a[lo:lo+n] (the order of float64 add.reduce on a contiguous row:
    blocks of <= 128 with 8 accumulators, larger ranges split at n/2 rounded down to a multiple of 8),
    evaluated without recursion. Checked against numpy at run time (prepare, path="auto")."""
    if n <= 128:
        return _pairwise_leaf(a, lo, n)
    slo = np.empty(64, dtype=np.int64)
    sn = np.empty(64, dtype=np.int64)
    sst = np.empty(64, dtype=np.int64)
    vals = np.empty(64, dtype=np.float64)
    sp = 0
    vsp = 0
    slo[0] = lo
    sn[0] = n
    sst[0] = 0
    sp = 1
    while sp > 0:
        t = sp - 1
        cl = slo[t]
        cn = sn[t]
        if cn <= 128:
            sp -= 1
            vals[vsp] = _pairwise_leaf(a, cl, cn)
            vsp += 1
            continue
        n2 = cn // 2
        n2 -= n2 % 8
        if sst[t] == 0:
            sst[t] = 1
            slo[sp] = cl
            sn[sp] = n2
            sst[sp] = 0
            sp += 1
        elif sst[t] == 1:
            sst[t] = 2
            slo[sp] = cl + n2
            sn[sp] = cn - n2
            sst[sp] = 0
            sp += 1
        else:
            sp -= 1
            right = vals[vsp - 1]
            left = vals[vsp - 2]
            vsp -= 2
            vals[vsp] = left + right
            vsp += 1
    return vals[0]


HALF_TABLE = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float64)


@njit(nogil=True, cache=True)
def fused_topk_rows(xf, xh, is_half, table, temperature, labels, k, topi, topp, thr, plabel, unot, mout, sout):
    """One pass per row of scores, float32 `xf` or float16 bits `xh` (uint16, decoded exactly by
    `table`; the unused one is a dummy): z = float64(float32(x)) / T, m = max z, e = exp(z - m),
    s = pairwise sum(e), p = e / s, and the top-k summaries of topk_rows. Returns the number of rows
    with a non-finite m or s (the caller rejects them)."""
    b, c = (xh.shape[0], xh.shape[1]) if is_half else (xf.shape[0], xf.shape[1])
    e = np.empty(c, dtype=np.float64)
    vals = np.empty(k + 1, dtype=np.float64)
    ids = np.empty(k + 1, dtype=np.int32)
    t = np.float64(temperature)
    bad = 0
    for i in range(b):
        m = -np.inf
        for cc in range(c):
            if is_half:
                z = table[xh[i, cc]] / t
            else:
                z = np.float64(xf[i, cc]) / t
            e[cc] = z
            if z > m:
                m = z
        for cc in range(c):
            e[cc] = np.exp(e[cc] - m)
        s = pairwise_sum(e, 0, c)
        mout[i] = m
        sout[i] = s
        if not (np.isfinite(m) and np.isfinite(s) and s > 0.0):
            bad += 1
        # top-(k+1) by e (division by s is monotone, so this is the top by p up to ties that the
        # division itself creates); p only for those, and the exact scan on p when the k-th and
        # (k+1)-th p are tied (then the set itself can depend on class ids outside it)
        _reset_topk(vals, ids, k)
        for cc in range(c):
            v = e[cc]
            _insert_topk(vals, ids, k, v, cc)
        for j in range(k + 1):
            if ids[j] >= 0:
                vals[j] = vals[j] / s
        if ids[k] >= 0 and vals[k] == vals[k - 1]:
            _reset_topk(vals, ids, k)
            for cc in range(c):
                v = e[cc] / s
                _insert_topk(vals, ids, k, v, cc)
        else:
            # order the first k by (p desc, class asc): p ties between distinct e go to the lower id
            for j in range(1, k):
                v = vals[j]
                d = ids[j]
                pos = j
                while pos > 0 and (vals[pos - 1] < v or (vals[pos - 1] == v and ids[pos - 1] > d)):
                    vals[pos] = vals[pos - 1]
                    ids[pos] = ids[pos - 1]
                    pos -= 1
                vals[pos] = v
                ids[pos] = d
        for j in range(k):
            topi[i, j] = ids[j]
            topp[i, j] = vals[j]
        thr[i] = vals[k] if vals[k] > 0.0 else 0.0
        y = labels[i]
        plabel[i] = e[y] / s
        unot[i] = vals[1] if ids[0] == y else vals[0]
    return bad


@njit(nogil=True, cache=True)
def exp_into(z, out):
    for i in range(z.size):
        out[i] = np.exp(z[i])


_WARM = False
_WARM_LOCK = threading.Lock()


def warmup() -> None:
    """Compile (or load from cache) every kernel in the calling thread, with the argument types the
    engines use, before worker threads call them (concurrent first calls can crash numba)."""
    global _WARM
    if _WARM:
        return
    with _WARM_LOCK:
        if not _WARM:
            _warmup()
            _WARM = True


def _warmup() -> None:
    n, c, k = 3, 5, 2
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(c), size=n)
    y = np.zeros(n, dtype=np.int64)
    topi = np.empty((n, k), np.int32)
    topp = np.empty((n, k))
    v = [np.empty(n) for _ in range(5)]
    topk_rows(p, y, k, topi, topp, v[0], v[1], v[2])
    xf, xh = np.ones((n, c), np.float32), np.ones((n, c), np.float16).view(np.uint16)
    for half in (False, True):
        fused_topk_rows(xf, xh, half, HALF_TABLE, np.float64(1.0), y, k, topi, topp, v[0], v[1], v[2], v[3], v[4])
    pred = topi[:, 0].copy()
    codes = np.empty(n, np.uint8)
    pend = np.empty(n, np.uint8)
    pair_tier1(pred, topi, topp, v[0], pred, topi, topp, v[0], y, codes, pend)
    us = np.empty(n)
    cs = np.empty(n, np.int64)
    max_excluding_label(p, y, us, cs)
    greedy_tier1(p, y, us, cs, np.float64(2.0), v[1], v[2], topi, topp, codes, np.empty(n), pend)
    exp_into(np.zeros(3), np.empty(3))
    rows = np.arange(n, dtype=np.int64)
    ens = np.empty(n, np.int64)
    for ha in (False, True):
        for hb in (False, True):
            pair_tier2(rows, xf, xh, ha, 1.0, v[3], v[4], topi, topp, v[0],
                       xf, xh, hb, 1.0, v[3], v[4], topi, topp, v[0], HALF_TABLE, ens, pend)


@njit(nogil=True, cache=True, inline="always")
def _score(xf, xh, is_half, table, i, c):
    """Score [i, c] of float32 `xf` or float16 bits `xh` (decoded by `table`), exactly, as float64."""
    if is_half:
        return table[xh[i, c]]
    return np.float64(xf[i, c])


@njit(nogil=True, cache=True)
def pair_tier2(rows, xfa, xha, half_a, ta, ma, sa, topi_a, topp_a, thr_a,
               xfb, xhb, half_b, tb, mb, sb, topi_b, topp_b, thr_b, table, ens, certified):
    """Exact candidate sums for the rows tier 1 left open: the missing p_b[c] (c in topk_a only)
    and p_a[c] (c in topk_b only) are recomputed from the scores as the reference does
    (float32 value / T - m, exp, / s). ens[r] = lowest class with the largest sum; certified[r] = 1
    iff that sum exceeds fl(thr_a + thr_b) strictly. Scores: float32 xf* or float16 bits xh* (see _score)."""
    k = topi_a.shape[1]
    for r in range(rows.size):
        i = rows[r]
        best = -1.0
        w = -1
        for j in range(k):
            c = topi_a[i, j]
            l = _position(topi_b, i, k, c)
            vb = topp_b[i, l] if l >= 0 else -1.0
            if vb < 0.0:
                z = _score(xfb, xhb, half_b, table, i, c)
                vb = np.exp(np.float64(np.float32(z)) / tb - mb[i]) / sb[i]
            v = topp_a[i, j] + vb
            if v > best or (v == best and c < w):
                best = v
                w = c
        for l in range(k):
            c = topi_b[i, l]
            inside = _position(topi_a, i, k, c) >= 0
            if inside:
                continue
            z = _score(xfa, xha, half_a, table, i, c)
            va = np.exp(np.float64(np.float32(z)) / ta - ma[i]) / sa[i]
            v = va + topp_b[i, l]
            if v > best or (v == best and c < w):
                best = v
                w = c
        ens[r] = w
        certified[r] = 1 if best > thr_a[i] + thr_b[i] else 0
