"""Linear evaluation: the L-BFGS probe, linear heads into the store, feature combination, transfer."""
from .features import dims_to_target, feature_combination, rank_dimensions, ranked_features
from .heads import fit_head
from .lbfgs import (
    COARSE_GRID, KORNBLITH_GRID, ProbeConvergenceWarning, ProbeFit, Sweep, C_to_lam, fit_probe,
    l2_normalize, lam_to_C, objective, sweep_probe,
)
from .transfer import transfer

__all__ = [
    "COARSE_GRID", "KORNBLITH_GRID", "ProbeConvergenceWarning", "ProbeFit", "Sweep", "C_to_lam",
    "dims_to_target", "feature_combination", "fit_head", "fit_probe", "l2_normalize", "lam_to_C",
    "objective", "rank_dimensions", "ranked_features", "sweep_probe", "transfer",
]
