"""numba kernels of the engines: top-k extraction, the fused pass, pair and greedy certificates.

All arithmetic here is IEEE float64 add/divide/compare (no fastmath), so the values are those
numpy computes. The fused pass and the one-pair tier 2 call libm's `exp` (used only where
`prepare.fused_exp_matches_numpy()`: where it is numpy's); the all-pairs kernels call no `exp` —
they form its arguments and numpy's own `np.exp` computes it between two kernels.

The kernels that allocate nothing are compiled without numba's reference counting (`_nrt=False`):
with it, every array handed to an inlined helper is increfed and decrefed (atomic operations) each
time the helper runs, which made the per-example pair logic ~15x slower than its arithmetic.
Their callers pass any scratch arrays in.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

#: kernels that allocate no arrays: no reference counting (see the module docstring)
_PLAIN = dict(nogil=True, cache=True, _nrt=False)
#: helpers inlined into their callers (their arrays are the callers' own)
_INLINE = dict(nogil=True, cache=True, inline="always")


def _libm_exp_address() -> int:
    """Address of glibc's double `exp` without its errno wrapper (`__exp_finite`, which `exp`
    calls and whose result it returns unchanged), or 0 where there is none (then numba's own call
    to `exp` is used). Skipping the wrapper makes each call ~1/3 cheaper; `exp_into` is what
    `prepare.fused_exp_matches_numpy` compares with numpy's `exp`, so the kernels use it only where
    it gives numpy's values."""
    for lib in (None, "libdl.so.2"):
        try:
            dlvsym = ctypes.CDLL(lib).dlvsym
            dlvsym.restype = ctypes.c_void_p
            dlvsym.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
            libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
            return int(dlvsym(libm._handle, b"__exp_finite", b"GLIBC_2.15") or 0)
        except (OSError, AttributeError, TypeError):
            continue
    return 0


#: see _libm_exp_address; passed to the kernels as an argument (their cached code holds no address)
LIBM_EXP = _libm_exp_address()


@intrinsic
def _call_f64(typingctx, addr, x):
    """Call the function double f(double) at address `addr`."""
    sig = types.float64(types.intp, types.float64)

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.DoubleType(), [ir.DoubleType()])
        return builder.call(builder.inttoptr(args[0], fnty.as_pointer()), [args[1]])

    return sig, codegen


@njit(**_INLINE)
def _exp(expf, x):
    """exp(x) by libm: through `expf` (LIBM_EXP) when there is one."""
    if expf != 0:
        return _call_f64(expf, x)
    return np.exp(x)


@njit(**_INLINE)
def _reset_topk(vals, ids, k):
    for j in range(k + 1):
        vals[j] = -1.0
        ids[j] = -1


@njit(**_INLINE)
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


@njit(**_INLINE)
def _topk_scan(e, c, vals, ids, k):
    """Top-(k+1) of e[0:c] into vals/ids as _insert_topk builds it scanning c = 0, 1, ...; chunks of
    8 whose largest value does not beat the current (k+1)-th are skipped (NaN never enters)."""
    _reset_topk(vals, ids, k)
    lim = vals[k]
    cc = 0
    while cc + 8 <= c:
        mx = -1.0
        for j in range(8):
            if e[cc + j] > mx:
                mx = e[cc + j]
        if mx > lim:
            for j in range(8):
                v = e[cc + j]
                if v > lim:
                    _insert_topk(vals, ids, k, v, cc + j)
                    lim = vals[k]
        cc += 8
    while cc < c:
        v = e[cc]
        if v > lim:
            _insert_topk(vals, ids, k, v, cc)
            lim = vals[k]
        cc += 1


@njit(**_INLINE)
def _summarise_row(i, e, c, s, y, k, vals, ids, topi, topp, thr, plabel, unot):
    """Row i's summaries from e = exp(z - m) (c values) and s = sum(e): the top-(k+1) by e
    (division by s is monotone, so this is the top by p up to ties that the division itself
    creates); p = e / s only for those, and the exact scan on p when the k-th and (k+1)-th p are
    tied (then the set itself can depend on class ids outside it)."""
    _topk_scan(e, c, vals, ids, k)
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
    plabel[i] = e[y] / s
    unot[i] = vals[1] if ids[0] == y else vals[0]


def topk_from_exp(e, s, labels, k, topi, topp, thr, plabel, unot):
    """Per row of e = exp(z - m) (B, C) with row sums s: the top-k ids/probs of p = e / s by
    (p desc, class asc), the largest p outside the top-k (thr; 0 when k == C), p[label] and the
    largest p of a class != label — without dividing the whole row."""
    _topk_from_exp(e, s, labels, k, topi, topp, thr, plabel, unot, np.empty(k + 1), np.empty(k + 1, np.int32))


@njit(**_PLAIN)
def _topk_from_exp(e, s, labels, k, topi, topp, thr, plabel, unot, vals, ids):
    b, c = e.shape
    for i in range(b):
        _summarise_row(i, e[i], c, s[i], labels[i], k, vals, ids, topi, topp, thr, plabel, unot)


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


@njit(**_INLINE)
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


#: scratch of _pairwise_sum: ranges (start, length, state) of the ranges being summed, 64 deep
PAIRWISE_STACK = 3 * 64


@njit(**_PLAIN)
def _pairwise_sum(a, lo, n, stack, vals):
    """numpy's pairwise summation of a[lo:lo+n] (the order of float64 add.reduce on a contiguous row:
    blocks of <= 128 with 8 accumulators, larger ranges split at n/2 rounded down to a multiple of 8),
    evaluated without recursion; `stack` (PAIRWISE_STACK int64) and `vals` (64 float64) are scratch.
    Checked against numpy at run time (prepare, path="auto")."""
    if n <= 128:
        return _pairwise_leaf(a, lo, n)
    sp = 0
    vsp = 0
    stack[0] = lo
    stack[1] = n
    stack[2] = 0
    sp = 1
    while sp > 0:
        t = 3 * (sp - 1)
        cl = stack[t]
        cn = stack[t + 1]
        if cn <= 128:
            sp -= 1
            vals[vsp] = _pairwise_leaf(a, cl, cn)
            vsp += 1
            continue
        n2 = cn // 2
        n2 -= n2 % 8
        u = 3 * sp
        if stack[t + 2] == 0:
            stack[t + 2] = 1
            stack[u] = cl
            stack[u + 1] = n2
            stack[u + 2] = 0
            sp += 1
        elif stack[t + 2] == 1:
            stack[t + 2] = 2
            stack[u] = cl + n2
            stack[u + 1] = cn - n2
            stack[u + 2] = 0
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


@functools.lru_cache(maxsize=32)
def scaled_half_table(temperature: float) -> np.ndarray:
    """z = float64(float32(x)) / T for every float16 bit pattern x (65,536 values, read-only; the
    division is the reference's, element by element, so z[bits] is bitwise its scaled logit)."""
    with np.errstate(invalid="ignore"):
        z = HALF_TABLE / np.float64(temperature)
    z.flags.writeable = False
    return z


def fused_topk_rows(xf, xh, is_half, ztab, temperature, labels, k, topi, topp, thr, plabel, unot, mout, sout):
    """One pass per row of scores, float32 `xf` or float16 bits `xh` (uint16; z read from
    `ztab` = scaled_half_table(T); the unused array is a dummy): z = float64(float32(x)) / T,
    m = max z, e = exp(z - m), s = pairwise sum(e), p = e / s, and the summaries of
    topk_from_exp. Returns the number of rows with a non-finite m or s (the caller rejects them)."""
    c = xh.shape[1] if is_half else xf.shape[1]
    return _fused_rows(xf, xh, is_half, ztab, temperature, labels, k, topi, topp, thr, plabel, unot, mout, sout,
                       np.empty(c), np.empty(c), np.empty(k + 1), np.empty(k + 1, np.int32),
                       np.empty(PAIRWISE_STACK, np.int64), np.empty(64), LIBM_EXP)


@njit(**_PLAIN)
def _fused_rows(xf, xh, is_half, ztab, temperature, labels, k, topi, topp, thr, plabel, unot, mout, sout,
                z, e, vals, ids, stack, svals, expf):
    b, c = (xh.shape[0], xh.shape[1]) if is_half else (xf.shape[0], xf.shape[1])
    t = np.float64(temperature)
    bad = 0
    for i in range(b):
        m = -np.inf
        if is_half:
            for cc in range(c):
                v = ztab[xh[i, cc]]
                z[cc] = v
                if v > m:
                    m = v
        else:
            for cc in range(c):
                v = np.float64(xf[i, cc]) / t
                z[cc] = v
                if v > m:
                    m = v
        for cc in range(c):
            e[cc] = _exp(expf, z[cc] - m)
        s = _pairwise_sum(e, 0, c, stack, svals)
        mout[i] = m
        sout[i] = s
        if not (np.isfinite(m) and np.isfinite(s) and s > 0.0):
            bad += 1
        _summarise_row(i, e, c, s, labels[i], k, vals, ids, topi, topp, thr, plabel, unot)
    return bad


def exp_into(z, out):
    """out = exp(z) by the `exp` the numba kernels call (see _libm_exp_address)."""
    _exp_into(z, out, LIBM_EXP)


@njit(**_PLAIN)
def _exp_into(z, out, expf):
    for i in range(z.size):
        out[i] = _exp(expf, z[i])


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
    topk_from_exp(p, p.sum(axis=1), y, k, topi, topp, v[0], v[1], v[2])
    xf, xh = np.ones((n, c), np.float32), np.ones((n, c), np.float16).view(np.uint16)
    for half in (False, True):  # float32 scores come with HALF_TABLE as a dummy, float16 with a read-only table
        table = scaled_half_table(1.0) if half else HALF_TABLE
        fused_topk_rows(xf, xh, half, table, np.float64(1.0), y, k, topi, topp, v[0], v[1], v[2], v[3], v[4])
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
                       xf, xh, hb, 1.0, v[3], v[4], topi, topp, v[0], ens, pend)
    two = np.array([0, 1], np.int64)
    xh2 = np.ones((n, c), np.float16).view(np.uint16)
    addr = model_addresses([(pred, topi, topp, v[0], v[3], v[4], xf, None), (pred, topi, topp, v[0], v[3], v[4], None, xh2)])
    st = (np.empty((n, 2), np.int32), np.empty((n, 2, k), np.int32), np.empty((n, 2, k)), np.empty((n, 2)),
          np.empty((n, 2)), np.empty((n, 2)))
    stage_rows(0, n, n, k, addr, *st)
    halfs, readable, temps = np.array([False, True]), np.array([True, True]), np.ones(2)
    pos_ab, in_a, miss = np.empty(k, np.int64), np.empty(k, np.bool_), np.empty(k)
    codes2, counts, z1 = np.empty((1, n), np.uint8), np.zeros((1, 16), np.int64), np.zeros(1, np.int64)
    ent, args, full = np.empty((4, 3), np.int64), np.empty(4 * 2 * k + 2 * c), np.empty((4, 2), np.int64)
    local = np.empty((n, 1), np.uint8)
    pairs_tier1(0, n, 0, two[:1], two[1:], y, k, readable, st[0], st[1], st[2], st[3], pos_ab, in_a, local, ent)
    pairs_args(0, ent, 0, two[:1], two[1:], n, c, k, addr, halfs, temps, st[1], st[4], pos_ab, in_a,
               np.empty((ARGS_BATCH, 2 * k)), args)
    pairs_tier2(0, ent, args, 0, two[:1], two[1:], y, k, st[1], st[2], st[3], st[5], pos_ab, in_a, miss, miss.copy(),
                local, z1, full)
    pairs_full_args(0, full, 0, two[:1], two[1:], n, c, addr, halfs, temps, st[4], args)
    pairs_full(0, full, args, 0, two[:1], two[1:], y, c, st[5], local, z1)
    pairs_store(local, 0, codes2, counts, z1)


# ---- pairs -------------------------------------------------------------------------------
# Summaries enter the row helpers as (rows, models, k) / (rows, models) arrays with a row and a
# model index, so that the all-pairs kernels read them from per-block staging arrays (one example's
# summaries of every model side by side) and the one-pair kernels from a model's own arrays (as a
# stack of one model).


@njit(**_INLINE)
def _match(a, ra, topi_a, b, rb, topi_b, k, pos_ab, in_a):
    """pos_ab[j] = where class topi_a[ra, a, j] sits among topi_b[rb, b, :] (-1 if absent);
    in_a[l] = whether class topi_b[rb, b, l] is among topi_a[ra, a, :]."""
    for l in range(k):
        in_a[l] = False
    for j in range(k):
        c = topi_a[ra, a, j]
        pos = -1
        for l in range(k):  # class ids in a row are distinct: at most one match, no branch needed
            hit = topi_b[rb, b, l] == c
            pos = l if hit else pos
            in_a[l] = in_a[l] or hit
        pos_ab[j] = pos


@njit(**_INLINE)
def _tier1_row(y, a, ra, pred_a, topi_a, topp_a, thr_a, b, rb, pred_b, topi_b, topp_b, thr_b, pos_ab, in_a):
    """(code, pending) of one example of a pair (model a at row ra, model b at row rb of their
    arrays) from the top-k summaries; pending = 1 where the ensemble argmax is not certified (then
    pos_ab / in_a hold the candidates' matches, see _match, for tier 2)."""
    k = topi_a.shape[2]
    pa = pred_a[ra, a]
    pb = pred_b[rb, b]
    code = 0
    if pa == y:
        code |= 1
    if pb == y:
        code |= 2
    if pa == pb:
        code |= 8
        # every other class c has p_a[c] <= topp_a[1], p_b[c] <= topp_b[1]
        if topp_a[ra, a, 1] + topp_b[rb, b, 1] < topp_a[ra, a, 0] + topp_b[rb, b, 0]:
            if pa == y:
                code |= 4
            return code, 0
    # quick cases of the interval certificate below (same decision, without matching the classes):
    # every class c != pred_a has q_c <= fl(p_a^(2) + max p_b) by monotonicity, and q[pred_a] >=
    # max p_a; so max p_a > fl(p_a^(2) + max p_b) makes pred_a the unique maximum (and b alike)
    pa0 = topp_a[ra, a, 0]
    pb0 = topp_b[rb, b, 0]
    if pa0 > topp_a[ra, a, 1] + pb0:
        if pa == y:
            code |= 4
        return code, 0
    if pb0 > topp_b[rb, b, 1] + pa0:
        if pb == y:
            code |= 4
        return code, 0
    # interval certificate: lo <= fl(pa[c] + pb[c]) <= hi for every candidate c
    _match(a, ra, topi_a, b, rb, topi_b, k, pos_ab, in_a)
    best = -1.0
    w = -1
    for j in range(k):
        l = pos_ab[j]
        lo = topp_a[ra, a, j] + topp_b[rb, b, l] if l >= 0 else topp_a[ra, a, j]
        if lo > best:
            best = lo
            w = topi_a[ra, a, j]
    for l in range(k):
        if not in_a[l] and topp_b[rb, b, l] > best:
            best = topp_b[rb, b, l]
            w = topi_b[rb, b, l]
    ta = thr_a[ra, a]
    tb = thr_b[rb, b]
    if not best > ta + tb:
        return code, 1
    for j in range(k):
        if topi_a[ra, a, j] == w:
            continue
        l = pos_ab[j]
        hi = topp_a[ra, a, j] + topp_b[rb, b, l] if l >= 0 else topp_a[ra, a, j] + tb
        if not best > hi:
            return code, 1
    for l in range(k):
        if topi_b[rb, b, l] == w or in_a[l]:
            continue
        if not best > topp_b[rb, b, l] + ta:
            return code, 1
    if w == y:
        code |= 4
    return code, 0


#: 2^(e - 25) for the exponent field e of a float16 (see _half)
_HALF_POW2 = np.array([2.0 ** (e - 25) for e in range(32)])


@njit(**_INLINE)
def _half(h):
    """The float16 with bits h as float64, exactly (no 512 KB table: tier 2 reads few scores each
    from a different row, and a table lookup after each would add a dependent cache miss)."""
    ex = (h >> 10) & 0x1F
    f = h & 0x3FF
    if ex == 0:
        v = f * 5.9604644775390625e-08  # subnormal: f * 2^-24
    elif ex == 31:
        v = np.inf if f == 0 else np.nan
    else:
        v = (1024 + f) * _HALF_POW2[ex]
    return -v if h >> 15 else v


@njit(**_INLINE)
def _score(xf, xh, is_half, i, c):
    """Score [i, c] of float32 `xf` or float16 bits `xh`, exactly, as float64."""
    if is_half:
        return _half(xh[i, c])
    return np.float64(xf[i, c])


@njit(**_INLINE)
def _tier2_decide(a, ra, topi_a, topp_a, thr_a, b, rb, topi_b, topp_b, thr_b, pos_ab, in_a, pa_miss, pb_miss):
    """(ens, certified) of an example tier 1 left open (pos_ab / in_a from it), given the exact
    missing probabilities pb_miss[j] = p_b[topi_a[j]] (where pos_ab[j] < 0) and pa_miss[l] =
    p_a[topi_b[l]] (where not in_a[l]): ens = lowest class with the largest candidate sum, certified
    iff that sum exceeds fl(thr_a + thr_b) strictly (then no class outside both top-k reaches it)."""
    k = topi_a.shape[2]
    best = -1.0
    w = -1
    for j in range(k):
        c = topi_a[ra, a, j]
        l = pos_ab[j]
        vb = topp_b[rb, b, l] if l >= 0 else -1.0
        if vb < 0.0:
            vb = pb_miss[j]
        v = topp_a[ra, a, j] + vb
        if v > best or (v == best and c < w):
            best = v
            w = c
    for l in range(k):
        if in_a[l]:
            continue
        c = topi_b[rb, b, l]
        v = pa_miss[l] + topp_b[rb, b, l]
        if v > best or (v == best and c < w):
            best = v
            w = c
    return w, (1 if best > thr_a[ra, a] + thr_b[rb, b] else 0)


@njit(**_INLINE)
def _tier2_row(i, a, ra, topi_a, topp_a, thr_a, xfa, xha, half_a, ta, m_a, s_a,
               b, rb, topi_b, topp_b, thr_b, xfb, xhb, half_b, tb, m_b, s_b, pos_ab, in_a, pa_miss, pb_miss, expf):
    """_tier2_decide with the missing probabilities recomputed here from row i of the scores as the
    reference does (float32 value / T - m, exp, / s); exp by libm (see _exp), so only where that
    is numpy's."""
    k = topi_a.shape[2]
    for j in range(k):
        if pos_ab[j] < 0:
            z = _score(xfb, xhb, half_b, i, topi_a[ra, a, j])
            pb_miss[j] = _exp(expf, np.float64(np.float32(z)) / tb - m_b) / s_b
    for l in range(k):
        if not in_a[l]:
            z = _score(xfa, xha, half_a, i, topi_b[rb, b, l])
            pa_miss[l] = _exp(expf, np.float64(np.float32(z)) / ta - m_a) / s_a
    return _tier2_decide(a, ra, topi_a, topp_a, thr_a, b, rb, topi_b, topp_b, thr_b, pos_ab, in_a, pa_miss, pb_miss)


def pair_tier1(pred_a, topi_a, topp_a, thr_a, pred_b, topi_b, topp_b, thr_b, labels, codes, pending):
    """Codes of a pair from the top-k summaries; pending[i] = 1 where the ensemble argmax is not
    certified (those need exact candidate sums or full rows). Returns the number pending."""
    k = topi_a.shape[1]
    return _pair_tier1(_one(pred_a), _one(topi_a), _one(topp_a), _one(thr_a), _one(pred_b), _one(topi_b),
                       _one(topp_b), _one(thr_b), labels, codes, pending, np.empty(k, np.int64), np.empty(k, np.bool_))


def _one(x):
    """A model's (N,) or (N, k) summary as the (N, 1[, k]) stack of one model the row helpers index."""
    return x.reshape((x.shape[0], 1) + x.shape[1:])


@njit(**_PLAIN)
def _pair_tier1(pred_a, topi_a, topp_a, thr_a, pred_b, topi_b, topp_b, thr_b, labels, codes, pending, pos_ab, in_a):
    n = topi_a.shape[0]
    npend = 0
    for i in range(n):
        code, pend = _tier1_row(labels[i], 0, i, pred_a, topi_a, topp_a, thr_a, 0, i, pred_b, topi_b, topp_b, thr_b,
                                pos_ab, in_a)
        codes[i] = code
        pending[i] = pend
        npend += pend
    return npend


def pair_tier2(rows, xfa, xha, half_a, ta, ma, sa, topi_a, topp_a, thr_a,
               xfb, xhb, half_b, tb, mb, sb, topi_b, topp_b, thr_b, ens, certified):
    """Tier 2 (exact candidate sums, see _tier2_row; numba's exp, so only where it is numpy's) for
    the rows tier 1 left open: ens[r], certified[r] of example rows[r]."""
    k = topi_a.shape[1]
    _pair_tier2(rows, xfa, xha, half_a, np.float64(ta), ma, sa, _one(topi_a), _one(topp_a), _one(thr_a),
                xfb, xhb, half_b, np.float64(tb), mb, sb, _one(topi_b), _one(topp_b), _one(thr_b), ens, certified,
                np.empty(k, np.int64), np.empty(k, np.bool_), np.empty(k), np.empty(k), LIBM_EXP)


@njit(**_PLAIN)
def _pair_tier2(rows, xfa, xha, half_a, ta, ma, sa, topi_a, topp_a, thr_a,
                xfb, xhb, half_b, tb, mb, sb, topi_b, topp_b, thr_b, ens, certified, pos_ab, in_a, pa_miss, pb_miss,
                expf):
    k = topi_a.shape[2]
    for r in range(rows.size):
        i = rows[r]
        _match(0, i, topi_a, 0, i, topi_b, k, pos_ab, in_a)
        w, ok = _tier2_row(i, 0, i, topi_a, topp_a, thr_a, xfa, xha, half_a, ta, ma[i], sa[i],
                           0, i, topi_b, topp_b, thr_b, xfb, xhb, half_b, tb, mb[i], sb[i], pos_ab, in_a,
                           pa_miss, pb_miss, expf)
        ens[r] = w
        certified[r] = ok


# ---- all pairs, a block of examples at a time ----------------------------------------------
# Every model's summaries of the block are staged (stage_rows); tier 1 runs over every example and
# pair (pairs_tier1), writing for each open example the arguments z - m of the probabilities tier 2
# needs; numpy's own exp turns them into exp(z - m) (so these kernels never call exp, and give the
# reference's values wherever numpy's exp differs from libm's); pairs_tier2 decides from them, and
# lists what tier 2 leaves open for full rows (pairs_full_args, numpy's exp, pairs_full).

#: flag pairs_tier1 leaves in a code for the caller to resolve in numpy: tier 1 left it open and a
#: model's scores cannot be read by the kernels (probabilities as input, other dtypes or layouts)
NEEDS_TIER2 = 0x40
#: columns of the per-model address table of the kernels (see model_addresses)
A_PRED, A_TOPI, A_TOPP, A_THR, A_M, A_S, A_XF, A_XH = range(8)


def _viewer(dtype, ndim: int):
    """An intrinsic view(address, shape) -> C-contiguous `dtype` array over memory the caller owns
    (no reference counting: the arrays behind the addresses outlive the kernel call)."""
    arrty = types.Array(dtype, ndim, "C")

    @intrinsic
    def view(typingctx, addr, shape):
        sig = arrty(types.intp, types.UniTuple(types.intp, ndim))

        def codegen(context, builder, signature, args):
            addr_v, shape_v = args
            ary = make_array(arrty)(context, builder)
            itemsize = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(dtype)))
            shapes = cgutils.unpack_tuple(builder, shape_v, ndim)
            strides, acc = [], itemsize
            for s in reversed(shapes):
                strides.insert(0, acc)
                acc = builder.mul(acc, s)
            populate_array(ary, data=builder.inttoptr(addr_v, ary.data.type), shape=cgutils.pack_array(builder, shapes),
                           strides=cgutils.pack_array(builder, strides), itemsize=itemsize, meminfo=None)
            return ary._getvalue()

        return sig, codegen

    return view


_v1_i32, _v2_i32, _v1_f64, _v2_f64, _v2_f32, _v2_u16 = (
    _viewer(t, d) for t, d in ((types.int32, 1), (types.int32, 2), (types.float64, 1), (types.float64, 2),
                               (types.float32, 2), (types.uint16, 2)))


def model_addresses(arrays: list[tuple]) -> np.ndarray:
    """(M, 8) table of the data addresses of each model's arrays for the all-pairs kernels, in the
    order pred (N,) int32, topi (N, k) int32, topp (N, k) float64, thr, m, s (N,) float64, float32
    scores (N, C), float16 bits (N, C) uint16 (0 where absent). Every array must be C-contiguous with
    that dtype (checked here); the caller keeps them alive while the kernels run."""
    want = (np.int32, np.int32, np.float64, np.float64, np.float64, np.float64, np.float32, np.uint16)
    out = np.zeros((len(arrays), 8), dtype=np.intp)
    for mi, arrs in enumerate(arrays):
        for j, (x, dt) in enumerate(zip(arrs, want)):
            if x is None:
                continue
            if x.dtype != dt or not x.flags.c_contiguous:
                raise ValueError(f"array {j} of model {mi}: {x.dtype}, contiguous={x.flags.c_contiguous}; want C-contiguous {np.dtype(dt)}")
            out[mi, j] = x.ctypes.data
    return out


@njit(**_PLAIN)
def stage_rows(r0, r1, n, k, addr, pred, topi, topp, thr, ms, ss):
    """Copy examples r0..r1-1 of every model's summaries into the (rows, models[, k]) staging arrays."""
    for mi in range(addr.shape[0]):
        p_ = _v1_i32(addr[mi, A_PRED], (n,))
        ti = _v2_i32(addr[mi, A_TOPI], (n, k))
        tp = _v2_f64(addr[mi, A_TOPP], (n, k))
        th = _v1_f64(addr[mi, A_THR], (n,))
        m_ = _v1_f64(addr[mi, A_M], (n,))
        s_ = _v1_f64(addr[mi, A_S], (n,))
        for r in range(r1 - r0):
            i = r0 + r
            pred[r, mi] = p_[i]
            thr[r, mi] = th[i]
            ms[r, mi] = m_[i]
            ss[r, mi] = s_[i]
            for j in range(k):
                topi[r, mi, j] = ti[i, j]
                topp[r, mi, j] = tp[i, j]


@njit(**_INLINE)
def _scaled(addr, halfs, temps, ms, n, c, mi, r, i, cc):
    """z - m of model mi's class cc on example i (staged at row r): the argument of the reference's
    exp, float64(float32(score)) / T - m, by the same IEEE operations."""
    if halfs[mi]:
        z = _half(_v2_u16(addr[mi, A_XH], (n, c))[i, cc])
    else:
        z = np.float64(_v2_f32(addr[mi, A_XF], (n, c))[i, cc])
    return np.float64(np.float32(z)) / temps[mi] - ms[r, mi]


@njit(**_PLAIN)
def pairs_tier1(r0, r1, start, pair_a, pair_b, labels, k, readable, pred, topi, topp, thr, pos_ab, in_a, local, ent):
    """Tier 1 of every pair (pair_a[p], pair_b[p]) on the staged examples r0..r1-1, from position
    start = r * P + p on, into local[r, p] (the block's codes, example-major). An open example of
    two readable models gets an entry (p, r) in ent (for pairs_args and tier 2); other open examples
    get NEEDS_TIER2. Stops when ent is full; returns (the position to resume from, entries)."""
    npairs = pair_a.size
    end = (r1 - r0) * npairs
    ne = 0
    pos = start
    while pos < end:
        r = pos // npairs
        p = pos - r * npairs
        y = labels[r0 + r]
        a = pair_a[p]
        b = pair_b[p]
        code, pend = _tier1_row(y, a, r, pred, topi, topp, thr, b, r, pred, topi, topp, thr, pos_ab, in_a)
        if pend:
            if readable[a] and readable[b]:
                if ne == ent.shape[0]:
                    return pos, ne
                ent[ne, 0] = p
                ent[ne, 1] = r
                ne += 1
            else:
                code |= NEEDS_TIER2
        local[r, p] = code
        pos += 1
    return pos, ne


#: entries whose scores pairs_args reads together (their cache misses overlap)
ARGS_BATCH = 16


@njit(**_PLAIN)
def pairs_args(ne, ent, r0, pair_a, pair_b, n, c, k, addr, halfs, temps, topi, ms, pos_ab, in_a, raw, args):
    """For each entry (p, r) the arguments z - m of its missing probabilities, from offset ent[q, 2]
    of args: p_b of topi_a's classes missing from topi_b, then p_a of topi_b's classes missing from
    topi_a (as _tier2_decide reads them). The scores of ARGS_BATCH entries (all 2k candidates each,
    raw: (ARGS_BATCH, 2k)) are read first, in a loop that does nothing else, so that their cache
    misses overlap; then the arguments are formed by the reference's operations. Returns how many."""
    na = 0
    for q0 in range(0, ne, ARGS_BATCH):
        q1 = min(ne, q0 + ARGS_BATCH)
        for q in range(q0, q1):
            p = ent[q, 0]
            r = ent[q, 1]
            i = r0 + r
            a = pair_a[p]
            b = pair_b[p]
            if halfs[b]:
                xb = _v2_u16(addr[b, A_XH], (n, c))
                for j in range(k):
                    raw[q - q0, j] = _half(xb[i, topi[r, a, j]])
            else:
                xbf = _v2_f32(addr[b, A_XF], (n, c))
                for j in range(k):
                    raw[q - q0, j] = xbf[i, topi[r, a, j]]
            if halfs[a]:
                xa = _v2_u16(addr[a, A_XH], (n, c))
                for l in range(k):
                    raw[q - q0, k + l] = _half(xa[i, topi[r, b, l]])
            else:
                xaf = _v2_f32(addr[a, A_XF], (n, c))
                for l in range(k):
                    raw[q - q0, k + l] = xaf[i, topi[r, b, l]]
        for q in range(q0, q1):
            p = ent[q, 0]
            r = ent[q, 1]
            a = pair_a[p]
            b = pair_b[p]
            _match(a, r, topi, b, r, topi, k, pos_ab, in_a)
            ent[q, 2] = na
            for j in range(k):
                if pos_ab[j] < 0:
                    args[na] = np.float64(np.float32(raw[q - q0, j])) / temps[b] - ms[r, b]
                    na += 1
            for l in range(k):
                if not in_a[l]:
                    args[na] = np.float64(np.float32(raw[q - q0, k + l])) / temps[a] - ms[r, a]
                    na += 1
    return na


@njit(**_PLAIN)
def pairs_tier2(ne, ent, e, r0, pair_a, pair_b, labels, k, topi, topp, thr, ss, pos_ab, in_a,
                pa_miss, pb_miss, local, n_tier2, full):
    """Tier 2 of the entries pairs_tier1 made, with e = numpy's exp of its arguments: the missing
    probabilities are e / s (the reference's division), the decision is _tier2_decide's. Certified
    examples get their ensemble bit in local[r, p] (counted in n_tier2[p]); the others are listed
    in full[:, 0:2] as (p, r) for full rows. Returns how many were listed."""
    nf = 0
    for q in range(ne):
        p = ent[q, 0]
        r = ent[q, 1]
        o = ent[q, 2]
        a = pair_a[p]
        b = pair_b[p]
        _match(a, r, topi, b, r, topi, k, pos_ab, in_a)
        for j in range(k):
            if pos_ab[j] < 0:
                pb_miss[j] = e[o] / ss[r, b]
                o += 1
        for l in range(k):
            if not in_a[l]:
                pa_miss[l] = e[o] / ss[r, a]
                o += 1
        w, ok = _tier2_decide(a, r, topi, topp, thr, b, r, topi, topp, thr, pos_ab, in_a, pa_miss, pb_miss)
        if ok:
            if w == labels[r0 + r]:
                local[r, p] |= 4
            n_tier2[p] += 1
        else:
            full[nf, 0] = p
            full[nf, 1] = r
            nf += 1
    return nf


@njit(**_PLAIN)
def pairs_full_args(nf, full, r0, pair_a, pair_b, n, c, addr, halfs, temps, ms, args):
    """The arguments z - m of every class of both models of the listed examples: for entry q, model
    a's c values at args[2qc:(2q+1)c], model b's after them."""
    for q in range(nf):
        p = full[q, 0]
        r = full[q, 1]
        i = r0 + r
        a = pair_a[p]
        b = pair_b[p]
        for cc in range(c):
            args[2 * q * c + cc] = _scaled(addr, halfs, temps, ms, n, c, a, r, i, cc)
            args[(2 * q + 1) * c + cc] = _scaled(addr, halfs, temps, ms, n, c, b, r, i, cc)


@njit(**_PLAIN)
def pairs_full(nf, full, e, r0, pair_a, pair_b, labels, c, ss, local, n_full):
    """Full rows (tier 3) of the listed examples, e = numpy's exp of pairs_full_args' arguments:
    p = e / s, q = fl(p_a + p_b), the reference ensemble's argmax = the lowest class with the
    largest q (halving q, as the mean does, is exact near the maximum and cannot change it)."""
    for q in range(nf):
        p = full[q, 0]
        r = full[q, 1]
        a = pair_a[p]
        b = pair_b[p]
        best = -1.0
        w = -1
        for cc in range(c):
            v = e[2 * q * c + cc] / ss[r, a] + e[(2 * q + 1) * c + cc] / ss[r, b]
            if v > best:
                best = v
                w = cc
        if w == labels[r0 + r]:
            local[r, p] |= 4
        n_full[p] += 1


@njit(**_PLAIN)
def pairs_store(local, r0, codes, counts, n_open):
    """The block's codes local[r, p] into codes[p, r0 + r], counted in counts[p, code]; those left
    to numpy (NEEDS_TIER2) are counted in n_open[p] instead."""
    rr, npairs = local.shape
    for p in range(npairs):
        for r in range(rr):
            code = local[r, p]
            codes[p, r0 + r] = code
            if code < 16:
                counts[p, code] += 1
            else:
                n_open[p] += 1
