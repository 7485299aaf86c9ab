"""`divergent specialize`: where two calibrated models are each the expert (Sections 4.3-4.4)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..conventions import N_BOOT, TEST


def register(app: typer.Typer) -> None:
    """Add the `specialize` command to the divergent CLI."""

    @app.command("specialize")
    def specialize_cmd(
        store: Path = typer.Argument(..., help="the store directory"),
        a: str = typer.Option(..., "--a", help="model A, the base ('Model 1'); high angle = A more confident"),
        b: str = typer.Option(..., "--b", help="model B, compared with the base"),
        split: str = typer.Option(TEST, "--split", help="the split that is evaluated"),
        groups: Optional[str] = typer.Option(
            None, "--groups",
            help="class groups: 'builtin' (CIFAR-10, Fashion-MNIST) or a TOML/JSON/CSV file"),
        out: Optional[Path] = typer.Option(
            None, "--out", help="write the tables: X.json (all in one) or X.csv / X.parquet (X.<table>.csv ...)"),
        n_boot: int = typer.Option(N_BOOT, "--n-boot", help="bootstrap resamples for intervals"),
        n_perm: int = typer.Option(10_000, "--n-perm", help="permutations for the class-group test"),
        seed: int = typer.Option(0, "--seed", help="seed of the bootstrap and the permutation test"),
        uncalibrated: bool = typer.Option(False, "--uncalibrated", help="use raw probabilities (T = 1)"),
    ) -> None:
        """Confidence angles of A vs B, how far the only-A and only-B examples separate, per-class margins."""
        from ..analyses.specialization import specialization, write_tables

        # a DivergentError propagates to divergent.cli.main, which prints problem + fix (exit 2)
        res = specialization(store, a, b, split, groups, n_boot=n_boot, n_perm=n_perm, seed=seed,
                             calibrated=not uncalibrated)
        written = write_tables(res, out) if out is not None else []
        typer.echo(f"specialization of {b!r} vs base {a!r} on {split!r} "
                   f"({'calibrated' if not uncalibrated else 'uncalibrated'}):")
        from ..report.tables import fmt_value

        for r in res.summary.itertuples(index=False):
            ci = f"  [{r.ci_low:.3f}, {r.ci_high:.3f}]" if r.ci_low == r.ci_low else ""
            p = f"  p={r.p_value:.3g}" if r.p_value == r.p_value else ""
            # counts (n_only_a, ...) as integers, by the one rule of report.tables.fmt_value
            typer.echo(f"  {r.statistic:<20} {fmt_value(r.value, 3, integer=r.statistic.startswith('n_')):>10}{ci}{p}")
        if len(res.groups):
            typer.echo(f"class groups ({res.meta['group_source']}):")
            for r in res.groups.itertuples(index=False):
                typer.echo(f"  {r.group:<16} classes={r.n_classes:<4} only_a={r.n_only_a:<6} only_b={r.n_only_b:<6} "
                           f"a_margin={r.a_margin_deg:7.2f}  b_margin={r.b_margin_deg:7.2f}  lean={r.lean_deg:7.2f}")
            for r in res.group_test.itertuples(index=False):
                typer.echo(f"  test of {r.statistic} across {r.groups}: p={r.p_value:.3g} ({r.method}, "
                           f"{r.n_perm} relabellings; Kruskal-Wallis p={r.kruskal_p:.3g})")
        for p in written:
            typer.echo(f"wrote {p}")
