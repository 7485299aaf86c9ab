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

    def __init__(self, size: int):
        self.size = size
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
            q.mul_(float(s.dot(y)) / float(y.dot(y)))
        for (s, y, rho), a in zip(zip(self.s, self.y, rhos), reversed(alphas)):
            bcoef = rho * float(y.dot(q))
            q.add_(s, alpha=a - bcoef)
        return q.neg_()


def _lbfgs(problem: _Problem, lam: float, theta, memory: _Memory, *, tol: float, max_iter: int,
           ftol: float = 1e-12, c1: float = 1e-4, max_ls: int = 40):
    """Minimise F(theta) from theta (modified in place). Returns (theta, f, gmax, iters, evals, status)."""
    memory.shift(lam, problem.nW)
    f, g = problem.loss_grad(theta, lam)
    evals = 1
    gmax = float(g.abs().max())
    if gmax <= tol:
        return theta, f, gmax, 0, evals, "gtol"
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
    return theta, f, gmax, it, evals, status


def _to_fit(problem: _Problem, theta, lam, f, gmax, it, evals, status, t0, tol) -> ProbeFit:
    W, b = problem.split(theta)
    return ProbeFit(
        W=W.detach().cpu().numpy().copy(), b=b.detach().cpu().numpy().copy(), lam=float(lam),
        n=problem.n, multilabel=problem.multilabel, objective=float(f), grad_max=float(gmax),
        n_iter=int(it), n_evals=int(evals), converged=status == "gtol", status=status,
        time_s=time.perf_counter() - t0, tol=float(tol),
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
    theta, f, gmax, it, ev, status = _lbfgs(problem, lam, theta, _Memory(history), tol=tol, max_iter=max_iter)
    fit = _to_fit(problem, theta, lam, f, gmax, it, ev, status, t0, tol)
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
