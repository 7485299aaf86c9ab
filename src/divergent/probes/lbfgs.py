"""Linear probes: L2-regularised logistic regression fitted by full-batch L-BFGS in PyTorch.

Objective (softmax, K classes, n examples, features x_i, labels y_i):

    F(W, b) = (1/n) * sum_i CE(W x_i + b, y_i) + (lam / 2) * ||W||_F^2

with an unpenalised intercept b. Multiplying by 1/lam shows this is scikit-learn's
``LogisticRegression(C=C, solver="lbfgs")`` objective ``C * sum_i CE + ||W||^2 / 2`` with

    C = 1 / (lam * n)          (exact; :func:`lam_to_C`, :func:`C_to_lam`)

for K >= 3 (scikit-learn fits K rows of W, as here). For K = 2 scikit-learn fits a single
binary vector w = W_1 - W_0; the symmetric softmax optimum has ||W||^2 = ||w||^2 / 2, so
the match is scikit-learn's binary fit with C = 2 / (lam * n).

The multi-label variant has K independent sigmoids,
    F(W, b) = (1/n) * sum_i sum_k m_ik * BCE(w_k x_i + b_k, y_ik) + (lam / 2) * ||W||_F^2,
where m_ik = 0 drops a label (a VOC "difficult" label); class k alone is scikit-learn's
binary ``LogisticRegression(C=1/(lam*n))`` on the rows with m_ik = 1 (n counts all rows).

Arithmetic is float32 on the device (CPU, or CUDA when present), the objective is summed
in float64. The optimiser starts from zero (as scikit-learn does), so a fit is a
deterministic function of its inputs; seeds only enter through subsampling elsewhere.
A fit that stops before ``max|grad| <= tol`` is reported (``converged=False``, a
:class:`ProbeConvergenceWarning`), never hidden.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import DivergentError, require

#: Kornblith et al. (2019): 45 log-spaced values of lam from 1e-6 to 1e5 (10**(-6 + i/4))
KORNBLITH_GRID: tuple[float, ...] = tuple(float(10.0 ** (-6 + i / 4)) for i in range(45))
#: default coarse grid: every 4th Kornblith value (one per decade), refined around the best
COARSE_GRID: tuple[float, ...] = KORNBLITH_GRID[::4]


#: fit statuses that count as converged (see :func:`_lbfgs`)
CONVERGED = ("gtol", "float32-limit")


class ProbeConvergenceWarning(UserWarning):
    """An L-BFGS fit stopped before reaching its gradient tolerance."""


def lam_to_C(lam: float, n: int) -> float:
    """scikit-learn's C for penalty lam on n examples (C = 1 / (lam * n))."""
    return 1.0 / (float(lam) * int(n))


def C_to_lam(C: float, n: int) -> float:
    """Penalty lam for scikit-learn's C on n examples (lam = 1 / (C * n))."""
    return 1.0 / (float(C) * int(n))


# ----------------------------------------------------------------------------- input checks

def check_features(x, what: str = "features") -> np.ndarray:
    """A finite 2-D float32 array, or a DivergentError that says what to fix."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DivergentError(
            f"{what} must be a non-empty 2-D array (examples x dimensions), got shape {x.shape}",
            "pass one embedding row per example",
        )
    x = x.astype(np.float32, copy=False)
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise DivergentError(
            f"{what} contain {int(bad.sum())} non-finite values (NaN/inf) in {rows.size} rows, "
            f"first rows {rows[:5].tolist()}",
            "re-extract those embeddings (a NaN usually means a failed or overflowing forward "
            "pass) or drop the rows from every split",
        )
    return x


def l2_normalize(x, what: str = "features") -> np.ndarray:
    """Row-wise L2 normalisation in float32 (Appendix A.5); all-zero rows stay zero."""
    x = check_features(x, what)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    norms[norms == 0] = 1.0
    return (x / norms[:, None]).astype(np.float32)


def check_labels(y, n: int, n_classes: int | None = None, what: str = "labels") -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise DivergentError(
            f"{what} have shape {y.shape} but the features have {n} rows",
            "features and labels must come from the same split, in the same example order",
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise DivergentError(f"{what} must be integer class ids, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0 or (n_classes is not None and y.max() >= n_classes):
        raise DivergentError(f"{what} must lie in [0, {n_classes}), got range [{y.min()}, {y.max()}]")
    present = np.unique(y)
    if present.size < 2:
        raise DivergentError(
            f"{what} contain a single class ({present.tolist()}); a classifier cannot be fitted",
            "fit on a split that contains at least two classes (check the split and any max_train subset)",
        )
    return y


def check_multilabel(y, n: int, mask=None, what: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[0] != n:
        raise DivergentError(
            f"multi-label {what} must be (examples x classes) with {n} rows, got shape {y.shape}",
            "pass a multi-hot matrix of 0/1 per example and class",
        )
    if not np.isin(y, (0, 1)).all():
        raise DivergentError(f"multi-label {what} must be 0/1", "mark difficult labels with the mask, not a code")
    m = np.ones(y.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != y.shape:
        raise DivergentError(f"the label mask has shape {m.shape}, the labels {y.shape}")
    for k in range(y.shape[1]):
        used = y[m[:, k], k]
        if used.size == 0 or used.min() == used.max():
            raise DivergentError(
                f"multi-label {what}: class {k} has only {'positive' if used.size and used[0] else 'negative'} "
                f"(or no) examples; a classifier cannot be fitted",
                "use a fit split where every class has positive and negative examples",
            )
    return y.astype(np.float32), m


# ----------------------------------------------------------------------------- results

@dataclass
class ProbeFit:
    """A fitted linear probe: logits = X @ W.T + b."""

    W: np.ndarray
    b: np.ndarray
    lam: float
    n: int
    multilabel: bool
    objective: float
    grad_max: float
    n_iter: int
    n_evals: int
    converged: bool
    status: str
    time_s: float
    tol: float
    extra: dict = field(default_factory=dict)

    @property
    def C(self) -> float:
        return lam_to_C(self.lam, self.n)

    def decision_function(self, X) -> np.ndarray:
        X = check_features(X)
        if X.shape[1] != self.W.shape[1]:
            raise DivergentError(f"the probe expects {self.W.shape[1]} dimensions, got {X.shape[1]}")
        return (X @ self.W.T + self.b).astype(np.float32)

    def predict(self, X) -> np.ndarray:
        z = self.decision_function(X)
        return (z > 0).astype(np.int64) if self.multilabel else np.argmax(z, axis=1)


# ----------------------------------------------------------------------------- the problem

def default_device() -> str:
    torch = require("torch", "torch")
    return "cuda" if torch.cuda.is_available() else "cpu"


class _Problem:
    """Loss and gradient on a flat float32 parameter vector theta = [W.ravel(), b]."""

    def __init__(self, X, y, *, multilabel: bool, n_classes: int, mask=None, device=None):
        torch = require("torch", "torch")
        self.torch = torch
        self.device = torch.device(device or default_device())
        self.X = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32), device=self.device)
        self.n, self.D = self.X.shape
        self.K = n_classes
        self.multilabel = multilabel
        if multilabel:
            self.Y = torch.as_tensor(np.asarray(y, dtype=np.float32), device=self.device)
            self.M = None if mask is None or np.asarray(mask).all() else torch.as_tensor(
                np.asarray(mask, dtype=np.float32), device=self.device)
        else:
            self.y = torch.as_tensor(np.asarray(y, dtype=np.int64), device=self.device)
            self.rows = torch.arange(self.n, device=self.device)
        self.size = self.K * self.D + self.K
        self.nW = self.K * self.D

    def zeros(self):
        return self.torch.zeros(self.size, dtype=self.torch.float32, device=self.device)

    def split(self, theta):
        return theta[: self.nW].view(self.K, self.D), theta[self.nW:]

    def loss_grad(self, theta, lam: float):
        """(objective as a python float computed in float64, gradient float32 tensor)."""
        torch = self.torch
        W, b = self.split(theta)
        Z = torch.addmm(b, self.X, W.T)  # n x K
        if self.multilabel:
            # BCE with logits: softplus(z) - y z ; grad: sigmoid(z) - y
            rows = torch.nn.functional.softplus(Z) - self.Y * Z
            if self.M is not None:
                rows = rows * self.M
            data = rows.sum(dtype=torch.float64) / self.n
            G = torch.sigmoid(Z).sub_(self.Y)
            if self.M is not None:
                G.mul_(self.M)
        else:
            lse = torch.logsumexp(Z, dim=1)
            data = (lse.sum(dtype=torch.float64) - Z[self.rows, self.y].sum(dtype=torch.float64)) / self.n
            G = Z.sub_(lse[:, None]).exp_()  # softmax, in place
            G[self.rows, self.y] -= 1.0
        G.mul_(1.0 / self.n)
        g = torch.empty_like(theta)
        gW, gb = self.split(g)
        torch.mm(G.T, self.X, out=gW)
        gW.add_(W, alpha=float(lam))
        torch.sum(G, dim=0, out=gb)
        pen = 0.5 * float(lam) * float(W.pow(2).sum(dtype=torch.float64))
        return float(data) + pen, g

    def data_loss(self, theta) -> float:
        """Mean unpenalised loss (for selection ties and reporting)."""
        f, _ = self.loss_grad(theta, 0.0)
        return f


class _Memory:
    """L-BFGS curvature pairs; reusable across lam (y_W shifts by (lam' - lam) * s_W exactly)."""

    def __init__(self, size: int, nW: int | None = None):
        self.size = size
        self.nW = nW
        self.s: list = []
        self.y: list = []
        self.lam: float | None = None

    def push(self, s, y):
        sy = float(s.dot(y))
        if sy <= 1e-10 * float(y.dot(y)) or not math.isfinite(sy):
            return
        self.s.append(s)
        self.y.append(y)
        if len(self.s) > self.size:
            self.s.pop(0)
            self.y.pop(0)

    def shift(self, new_lam: float, nW: int):
        """Move the pairs from the problem at self.lam to the one at new_lam."""
        if self.lam is not None and new_lam != self.lam:
            d = new_lam - self.lam
            keep_s, keep_y = [], []
            for s, y in zip(self.s, self.y):
                y = y.clone()
                y[:nW].add_(s[:nW], alpha=d)
                if float(s.dot(y)) > 1e-10 * float(y.dot(y)):
                    keep_s.append(s)
                    keep_y.append(y)
            self.s, self.y = keep_s, keep_y
        self.lam = new_lam

    def direction(self, g):
        q = g.clone()
        alphas = []
        rhos = [1.0 / float(s.dot(y)) for s, y in zip(self.s, self.y)]
        for s, y, rho in zip(reversed(self.s), reversed(self.y), reversed(rhos)):
            a = rho * float(s.dot(q))
            alphas.append(a)
            q.add_(y, alpha=-a)
        if self.s:
            s, y = self.s[-1], self.y[-1]
            gamma = float(s.dot(y)) / float(y.dot(y))
            q.mul_(gamma)
            if self.nW is not None:
                # block scaling: the unpenalised intercepts have their own curvature (~1/K),
                # far from the weights' (~lam) at large lam
                sb, yb = s[self.nW:], y[self.nW:]
                syb, yyb = float(sb.dot(yb)), float(yb.dot(yb))
                if syb > 0 and yyb > 0:
                    q[self.nW:].mul_((syb / yyb) / gamma)
        for (s, y, rho), a in zip(zip(self.s, self.y, rhos), reversed(alphas)):
            bcoef = rho * float(y.dot(q))
            q.add_(s, alpha=a - bcoef)
        return q.neg_()


def _lbfgs(problem: _Problem, lam: float, theta, memory: _Memory, *, tol: float, max_iter: int,
           ftol: float = 1e-12, c1: float = 1e-4, max_ls: int = 40,
           gap_rtol: float = 1e-7):
    """Minimise F(theta) starting at theta. Returns (theta, f, gmax, iters, evals, status, est_gap).

    Converged statuses: "gtol" (max|grad| <= tol) and "float32-limit" (the quasi-Newton
    estimate of the remaining decrease, -g.d/2, is below what float32 can resolve in f:
    <= gap_rtol * |f| once no decrease is measurable, <= gap_rtol / 100 * |f| before a step,
    and the intercepts' gradient, free of lam*W cancellation, is <= max(tol, 1e-4)). Not converged: "max_iter", "ftol" (stalled with a larger estimate), "line-search-failed".
    """
    memory.shift(lam, problem.nW)
    f, g = problem.loss_grad(theta, lam)
    evals = 1
    gmax = float(g.abs().max())
    if gmax <= tol:
        return theta, f, gmax, 0, evals, "gtol", 0.0
    status = "max_iter"
    it = 0
    while it < max_iter:
        it += 1
        d = memory.direction(g)
        gd = float(g.dot(d))
        if not gd < 0:  # not a descent direction: restart from steepest descent
            memory.s.clear()
            memory.y.clear()
            d = g.neg()
            gd = float(g.dot(d))
        if memory.s and -0.5 * gd <= 1e-2 * gap_rtol * max(abs(f), 1.0) and _gb_max(problem, g) <= max(tol, 1e-4):
            # the quasi-Newton model predicts less decrease than float32 can resolve in f
            status = "float32-limit"
            break
        t = 1.0 if memory.s else min(1.0, 1.0 / max(float(g.abs().sum()), 1e-12))
        accepted = False
        for _ in range(max_ls):
            new = theta + t * d
            f_new, g_new = problem.loss_grad(new, lam)
            evals += 1
            if math.isfinite(f_new) and f_new <= f + c1 * t * gd:
                accepted = True
                break
            t *= 0.5
        if not accepted:
            status = "line-search-failed"
            break
        memory.push(new - theta, g_new - g)
        f_old, theta, f, g = f, new, f_new, g_new
        gmax = float(g.abs().max())
        if gmax <= tol:
            status = "gtol"
            break
        if (f_old - f) <= ftol * max(abs(f_old), abs(f), 1.0):
            status = "ftol"
            break
    est_gap = -0.5 * gd if status == "float32-limit" else (0.0 if status == "gtol" else None)
    if status in ("ftol", "line-search-failed"):
        # no decrease measurable in float32: accept if the quasi-Newton estimate of the
        # remaining decrease, -g.d/2 with d = -H g, is below float32 resolution of f
        est_gap = max(-0.5 * float(g.dot(memory.direction(g))), 0.0) if memory.s else float("inf")
        if est_gap <= gap_rtol * max(abs(f), 1.0) and _gb_max(problem, g) <= max(tol, 1e-4):
            status = "float32-limit"
    return theta, f, gmax, it, evals, status, est_gap


def _gb_max(problem: _Problem, g) -> float:
    """max|gradient| of the intercepts: no lam*W cancellation, so float32 resolves it to tol."""
    return float(g[problem.nW:].abs().max())


def _to_fit(problem: _Problem, theta, lam, f, gmax, it, evals, status, est_gap, t0, tol) -> ProbeFit:
    W, b = problem.split(theta)
    return ProbeFit(
        W=W.detach().cpu().numpy().copy(), b=b.detach().cpu().numpy().copy(), lam=float(lam),
        n=problem.n, multilabel=problem.multilabel, objective=float(f), grad_max=float(gmax),
        n_iter=int(it), n_evals=int(evals), converged=status in CONVERGED, status=status,
        time_s=time.perf_counter() - t0, tol=float(tol), extra={"est_gap": est_gap},
    )


def _warn(fit: ProbeFit, warn: bool):
    if warn and not fit.converged:
        warnings.warn(
            f"L-BFGS probe at lam={fit.lam:.3g} stopped ({fit.status}) after {fit.n_iter} iterations "
            f"with max|grad|={fit.grad_max:.2e} > tol={fit.tol:.0e}; raise max_iter or loosen tol",
            ProbeConvergenceWarning, stacklevel=3,
        )


def _make_problem(X, y, *, multilabel, mask, device, normalize, n_classes=None):
    X = l2_normalize(X) if normalize else check_features(X)
    if multilabel:
        Y, M = check_multilabel(y, X.shape[0], mask)
        return _Problem(X, Y, multilabel=True, n_classes=Y.shape[1], mask=M, device=device)
    y = check_labels(y, X.shape[0], n_classes)
    K = int(n_classes if n_classes is not None else y.max() + 1)
    return _Problem(X, y, multilabel=False, n_classes=K, device=device)


def fit_probe(X, y, lam: float, *, multilabel: bool = False, mask=None, n_classes: int | None = None,
              normalize: bool = True, tol: float = 1e-5, max_iter: int = 1000, history: int = 10,
              device: str | None = None, warn: bool = True) -> ProbeFit:
    """Fit one probe at a fixed lam (see the module docstring for the objective).

    X: (n, D) features (L2-normalised here unless ``normalize=False``); y: (n,) class ids,
    or (n, K) 0/1 with ``multilabel=True`` (``mask`` False drops a label, e.g. VOC difficult).
    ``n_classes`` fixes the label space (classes absent from y are refused).
    """
    if not lam > 0:
        raise DivergentError(f"lam must be > 0, got {lam!r}", "pick lam from the grid (e.g. 1e-4)")
    t0 = time.perf_counter()
    problem = _make_problem(X, y, multilabel=multilabel, mask=mask, device=device, normalize=normalize,
                            n_classes=n_classes)
    _check_all_classes(problem, y, multilabel)
    theta = problem.zeros()
    theta, f, gmax, it, ev, status, gap = _lbfgs(problem, lam, theta, _Memory(history, problem.nW), tol=tol, max_iter=max_iter)
    fit = _to_fit(problem, theta, lam, f, gmax, it, ev, status, gap, t0, tol)
    _warn(fit, warn)
    return fit


def _check_all_classes(problem: _Problem, y, multilabel: bool):
    if multilabel:
        return
    missing = np.setdiff1d(np.arange(problem.K), np.unique(np.asarray(y)))
    if missing.size:
        raise DivergentError(
            f"classes {missing[:10].tolist()} have no examples in the fit split; their unpenalised "
            "intercepts would diverge",
            "fit on a split (or a larger max_train subset) that contains every class",
        )


def objective(X, y, W, b, lam: float, *, multilabel: bool = False, mask=None) -> float:
    """The probe objective in float64 numpy (to compare any solver's solution, e.g. scikit-learn's)."""
    X = np.asarray(X, dtype=np.float64)
    Z = X @ np.asarray(W, dtype=np.float64).T + np.asarray(b, dtype=np.float64)
    n = X.shape[0]
    if multilabel:
        Y = np.asarray(y, dtype=np.float64)
        rows = np.logaddexp(0.0, Z) - Y * Z
        if mask is not None:
            rows = rows * np.asarray(mask, dtype=np.float64)
        data = rows.sum() / n
    else:
        m = Z.max(axis=1, keepdims=True)
        lse = (m + np.log(np.exp(Z - m).sum(axis=1, keepdims=True)))[:, 0]
        data = (lse - Z[np.arange(n), np.asarray(y)]).mean()
    return float(data + 0.5 * lam * (np.asarray(W, dtype=np.float64) ** 2).sum())


# ----------------------------------------------------------------------------- lam selection

def resolve_grid(grid) -> tuple[tuple[float, ...], bool]:
    """(values, refine): None/"default" = the coarse decade grid refined around its best value
    with the Kornblith values in (best/10, best*10); "kornblith" = all 45 values; "coarse" =
    the 12 decades without refinement; a sequence = exactly those values."""
    if grid is None or (isinstance(grid, str) and grid == "default"):
        return COARSE_GRID, True
    if isinstance(grid, str):
        if grid == "kornblith":
            return KORNBLITH_GRID, False
        if grid == "coarse":
            return COARSE_GRID, False
        raise DivergentError(f"unknown grid {grid!r}", "use 'default', 'kornblith', 'coarse' or a list of lam values")
    if isinstance(grid, (int, float)):
        grid = [grid]
    vals = tuple(sorted({float(v) for v in grid}, reverse=True))
    if not vals or min(vals) <= 0 or not all(math.isfinite(v) for v in vals):
        raise DivergentError(f"a lam grid needs positive finite values, got {grid!r}")
    return vals, False


def refinement_values(best: float) -> tuple[float, ...]:
    """Kornblith-grid values strictly within a decade of best (the default refinement)."""
    return tuple(v for v in KORNBLITH_GRID if best / 10 * (1 + 1e-9) < v < best * 10 * (1 - 1e-9) and v != best)


@dataclass
class Sweep:
    """A lam sweep: every fit, a tidy table (one row per lam) and the selected fit."""

    fits: dict
    table: "object"
    best: ProbeFit
    metric: str


def _selection_score(problem_sel: "_Problem", theta, multilabel: bool, mask_sel) -> tuple[float, float]:
    """(score to maximise, unpenalised loss) of theta on the selection split."""
    torch = problem_sel.torch
    W, b = problem_sel.split(theta)
    loss = problem_sel.data_loss(theta)
    with torch.no_grad():
        Z = torch.addmm(b, problem_sel.X, W.T)
        if multilabel:
            from ..metrics.ranking import voc07_map

            score = voc07_map(Z.cpu().numpy(), problem_sel.Y.cpu().numpy().astype(np.int64),
                              difficult=None if mask_sel is None else ~np.asarray(mask_sel, dtype=bool))
        else:
            score = float((Z.argmax(dim=1) == problem_sel.y).double().mean())
    return float(score), float(loss)


def sweep_probe(X_fit, y_fit, X_sel, y_sel, grid=None, *, multilabel: bool = False, mask_fit=None,
                mask_sel=None, n_classes: int | None = None, normalize: bool = True,
                warm_start: bool = True, reuse_memory: bool = False, tol: float = 1e-5, max_iter: int = 1000, history: int = 10,
                device: str | None = None, warn: bool = True) -> Sweep:
    """Fit a probe for each lam of the grid on (X_fit, y_fit) and select lam on (X_sel, y_sel).

    Selection: highest top-1 accuracy (multi-label: VOC 2007 11-point mAP, difficult labels
    excluded) on the selection split; ties go to the lower unpenalised selection loss, then
    to the larger lam. Fits run from the largest lam down, each warm-started from the nearest
    lam already fitted, reusing the L-BFGS curvature pairs (exactly shifted for the new lam);
    ``warm_start=False`` fits every value from zero (same optimum, for checking).
    """
    import pandas as pd

    values, refine = resolve_grid(grid)
    values = tuple(sorted(values, reverse=True))
    problem = _make_problem(X_fit, y_fit, multilabel=multilabel, mask=mask_fit, device=device,
                            normalize=normalize, n_classes=n_classes)
    _check_all_classes(problem, y_fit, multilabel)
    Xs = l2_normalize(X_sel, "selection features") if normalize else check_features(X_sel, "selection features")
    if Xs.shape[1] != problem.D:
        raise DivergentError(
            f"the fit split has {problem.D} feature dimensions but the selection split has {Xs.shape[1]}",
            "use embeddings of the same model (and layer) for every split",
        )
    if multilabel:
        Ys = np.asarray(y_sel)
        if Ys.ndim != 2 or Ys.shape != (Xs.shape[0], problem.K):
            raise DivergentError(f"selection labels have shape {Ys.shape}, expected {(Xs.shape[0], problem.K)}")
        sel = _Problem(Xs, Ys.astype(np.float32), multilabel=True, n_classes=problem.K,
                       mask=mask_sel, device=problem.device)
    else:
        ys = np.asarray(y_sel)
        if ys.ndim != 1 or ys.shape[0] != Xs.shape[0]:
            raise DivergentError(f"selection labels have shape {ys.shape} but its features have {Xs.shape[0]} rows",
                                 "features and labels must come from the same split, in the same order")
        if ys.size and (ys.min() < 0 or ys.max() >= problem.K):
            raise DivergentError(f"selection labels fall outside the fit split's {problem.K} classes")
        sel = _Problem(Xs, ys.astype(np.int64), multilabel=False, n_classes=problem.K, device=problem.device)

    thetas: dict[float, object] = {}
    fits: dict[float, ProbeFit] = {}
    rows = []
    memory = _Memory(history, problem.nW)

    def run(lam: float, stage: str):
        t0 = time.perf_counter()
        if warm_start and thetas:
            near = min(thetas, key=lambda v: (abs(math.log(v / lam)), -v))
            theta = thetas[near].clone()
            mem = memory if reuse_memory else _Memory(history, problem.nW)
            start = near
        else:
            theta, mem, start = problem.zeros(), _Memory(history, problem.nW), None
        theta, f, gmax, it, ev, status, gap = _lbfgs(problem, lam, theta, mem, tol=tol, max_iter=max_iter)
        fit = _to_fit(problem, theta, lam, f, gmax, it, ev, status, gap, t0, tol)
        _warn(fit, warn)
        score, sel_loss = _selection_score(sel, theta, multilabel, mask_sel)
        thetas[lam] = theta
        fits[lam] = fit
        rows.append(dict(lam=lam, C=fit.C, stage=stage, warm_from=start, objective=fit.objective,
                         grad_max=fit.grad_max, est_gap=gap, n_iter=fit.n_iter, n_evals=fit.n_evals,
                         converged=fit.converged, status=fit.status, time_s=fit.time_s,
                         select_score=score, select_loss=sel_loss))

    for lam in values:
        run(lam, "grid")
    if refine:
        best = _pick(rows)
        for lam in sorted(refinement_values(best), reverse=True):
            if lam not in fits:
                run(lam, "refine")
    best = _pick(rows)
    table = pd.DataFrame(rows).sort_values("lam", ascending=False, ignore_index=True)
    table["selected"] = table["lam"] == best
    metric = "map11" if multilabel else "accuracy"
    table.insert(0, "metric", metric)
    return Sweep(fits=fits, table=table, best=fits[best], metric=metric)


def _pick(rows) -> float:
    """lam with the highest score; ties -> lower selection loss -> larger lam."""
    best = max(rows, key=lambda r: (r["select_score"], -r["select_loss"], r["lam"]))
    return best["lam"]
