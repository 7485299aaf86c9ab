"""The report's input tables: their names, required columns, validation and CSV/Parquet files.

Every number the report shows comes from one of these tables; every table is written to
OUT/tables/<name>.csv and OUT/tables/<name>.parquet next to the report.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import DivergentError

#: name -> (required columns, what one row is)
SCHEMAS: dict[str, tuple[tuple[str, ...], str]] = {
    "models": (
        ("model", "method", "head", "temperature", "accuracy", "category"),
        "one model of the zoo; category relative to the base ('base' for the base itself)",
    ),
    "pairs": (
        ("model_a", "model_b", "category", "acc_a", "acc_b", "error_inconsistency",
         "both_correct", "both_wrong", "ensemble_acc", "gain_vs_best", "gain_vs_mean",
         "conversion_rate"),
        "one (base, model) pair on the test split (divergent.analyses.pairs schema)",
    ),
    "angles": (
        ("model_b", "category", "phi", "outcome"),
        "one test example of a representative pair: angle phi = atan2(conf_base, conf_b) in degrees;"
        " outcome in only_a, only_b, both, neither",
    ),
    "class_specialization": (
        ("model_b", "category", "class_name", "group", "specialization"),
        "one (pair, class): mean phi where only the base is right minus mean phi where only model_b is right (degrees)",
    ),
    "group_specialization": (
        ("model_b", "category", "group", "specialization", "specialization_lo", "specialization_hi"),
        "one (pair, class group) summary of class_specialization with a bootstrap interval",
    ),
    "greedy": (
        ("base", "size", "added", "category", "holdout_acc", "test_acc"),
        "one step of the greedy ensemble from a high-accuracy base over lower-accuracy models"
        " (selected on holdout, reported on test)",
    ),
    "feature_combination": (
        ("model_a", "model_b", "category", "fraction_a", "accuracy"),
        "one random-subset concatenation: fraction_a of the budget from the base, the rest from"
        " model_b (mean over seeds), test accuracy of a linear probe",
    ),
    "dims_curve": (
        ("model_a", "model_b", "category", "n_dims", "accuracy"),
        "one point of the diversity-ranked selection curve: test accuracy using the first n_dims dims",
    ),
    "transfer": (
        ("embedding", "kind", "task", "metric", "score"),
        "one downstream evaluation of a single (kind=single) or stacked (kind=stacked) embedding;"
        " metric: accuracy (single-label task, top-1) or map11 (multi-label task, VOC 2007 11-point mAP)",
    ),
    "findings": (
        ("claim", "scope", "statistic", "estimate", "lo", "hi", "verdict", "text"),
        "one of the paper's five claims in one scope (all models / accuracy band)",
    ),
    "gallery": (
        ("model_a", "model_b", "category", "side", "group", "rank", "id", "class_name", "pred_a_name",
         "pred_b_name", "confidence", "thumbnail"),
        "one test example of a representative pair that only one model gets right (side only_a or only_b),"
        " ranked by the right model's confidence within its class group; thumbnail: a PNG path relative to"
        " the output directory ('' when the images could not be read)",
    ),
    "confusion_diff": (
        ("model_a", "model_b", "category", "true_class", "pred_class", "count_a", "count_b", "diff"),
        "one (true class, predicted class) cell of a representative pair's confusion matrices: counts of"
        " the base (a), of model_b (b), and a minus b",
    ),
    "environment": (
        ("item", "value"),
        "one fact about the machine the study ran on (CPU, instruction set, library versions)",
    ),
}
OPTIONAL = {"angles", "class_specialization", "group_specialization", "greedy",
            "feature_combination", "dims_curve", "transfer", "gallery", "confusion_diff", "environment"}


@dataclass
class ReportTables:
    """All tables the report reads; a missing optional table leaves its section with a reason."""

    models: pd.DataFrame
    pairs: pd.DataFrame
    findings: pd.DataFrame | None = None
    angles: pd.DataFrame | None = None
    class_specialization: pd.DataFrame | None = None
    group_specialization: pd.DataFrame | None = None
    greedy: pd.DataFrame | None = None
    feature_combination: pd.DataFrame | None = None
    dims_curve: pd.DataFrame | None = None
    transfer: pd.DataFrame | None = None
    gallery: pd.DataFrame | None = None
    confusion_diff: pd.DataFrame | None = None
    environment: pd.DataFrame | None = None
    base: str | None = None
    #: section name -> why it is missing (shown in the report instead of a figure)
    missing: dict[str, str] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def items(self):
        for name in SCHEMAS:
            df = getattr(self, name)
            if df is not None:
                yield name, df

    def validate(self) -> "ReportTables":
        for name, df in self.items():
            validate_table(name, df)
        if self.base is None:
            base_rows = self.models[self.models["category"] == "base"]
            if len(base_rows) != 1:
                raise DivergentError(
                    "the models table must mark exactly one model with category 'base'",
                    "set category='base' on the base model's row or pass base=",
                )
            self.base = str(base_rows["model"].iloc[0])
        return self


# ---- how a number is written in a table (the report's tables and the CLI's; docs/report.md)

#: non-zero magnitudes below this (or at/above SCI_HIGH) are written in scientific notation
SCI_LOW, SCI_HIGH = 1e-3, 1e7


def is_missing(v) -> bool:
    """None, NaN, NaT and pandas' NA: written as a blank cell."""
    try:
        return v is None or bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def fmt_value(v, digits: int = 4, *, integer: bool | None = None) -> str:
    """One table cell: blank for missing; integers (and `integer` columns' integral floats) as
    integers; other floats with `digits` decimals, in scientific notation (`digits` - 1 decimals
    of the mantissa) when non-zero and below SCI_LOW or at least SCI_HIGH in magnitude."""
    import math

    import numpy as np

    if is_missing(v):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        x = float(v)
        if not math.isfinite(x):
            return "inf" if x > 0 else "-inf"
        if integer and x.is_integer():
            return str(int(round(x)))
        if x != 0 and not SCI_LOW <= abs(x) < SCI_HIGH:
            return f"{x:.{max(digits - 1, 1)}e}"
        return f"{x:.{digits}f}"
    return str(v)


def integer_column(col: pd.Series) -> bool:
    """A column of whole numbers (ints, or floats whose every present value is integral, as
    pandas stores an integer column with missing values)."""
    import numpy as np

    if pd.api.types.is_bool_dtype(col):
        return False
    if pd.api.types.is_integer_dtype(col):
        return True
    if not pd.api.types.is_float_dtype(col):
        return False
    v = col.to_numpy(dtype=np.float64)
    v = v[np.isfinite(v)]
    return v.size > 0 and bool(np.all(v == np.round(v))) and bool(np.all(np.abs(v) < SCI_HIGH))


def format_frame(df: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """`df` as strings by :func:`fmt_value`, column by column (whole-number columns as integers)."""
    out = pd.DataFrame(index=df.index)
    for c in df.columns:
        integer = integer_column(df[c])
        out[c] = [fmt_value(v, digits, integer=integer) for v in df[c]]
    return out


def validate_table(name: str, df: pd.DataFrame) -> None:
    if name not in SCHEMAS:
        raise DivergentError(f"unknown report table {name!r}", f"known tables: {', '.join(SCHEMAS)}")
    if not isinstance(df, pd.DataFrame):
        raise DivergentError(f"report table {name!r} is a {type(df).__name__}, not a DataFrame")
    need = SCHEMAS[name][0]
    lacking = [c for c in need if c not in df.columns]
    if lacking:
        raise DivergentError(
            f"report table {name!r} lacks columns {lacking}",
            f"a {name} table needs {', '.join(need)} ({SCHEMAS[name][1]})",
        )


def write_tables(tables: ReportTables, out: Path, extra: dict | None = None) -> dict[str, dict[str, str]]:
    """Write every present table as CSV and Parquet under out/tables; returns name -> paths."""
    from .._files import atomic_write_bytes

    d = Path(out) / "tables"
    d.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, df in [*tables.items(), *(extra or {}).items()]:
        clean = _plain(df)
        atomic_write_bytes(d / f"{name}.csv", clean.to_csv(index=False).encode())
        import io

        buf = io.BytesIO()
        clean.to_parquet(buf, index=False)
        atomic_write_bytes(d / f"{name}.parquet", buf.getvalue())
        paths[name] = {"csv": f"tables/{name}.csv", "parquet": f"tables/{name}.parquet"}
    return paths


def read_tables(out: Path, base: str | None = None) -> ReportTables:
    """Read the tables a previous run wrote under out/tables (Parquet)."""
    d = Path(out) / "tables"
    if not (d / "models.parquet").exists():
        raise DivergentError(f"no report tables under {d}", "run `divergent study run` first")
    import json

    meta = json.loads((d / "meta.json").read_text()) if (d / "meta.json").exists() else {}
    if meta.get("acc_band"):
        meta["acc_band"] = tuple(meta["acc_band"])
    kw = {"meta": meta, "missing": meta.pop("missing", {}) or {}}
    base = base or meta.pop("base", None)
    for name in SCHEMAS:
        p = d / f"{name}.parquet"
        if p.exists():
            kw[name] = pd.read_parquet(p)
    return ReportTables(base=base, **kw)


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns holding lists/dicts become strings so CSV and Parquet agree."""
    out = df.reset_index(drop=True).copy()
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = out[c].map(lambda v: v if v is None or isinstance(v, str) else
                                (", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)))
    return out
