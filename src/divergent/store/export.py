"""Export a store as one long Parquet table (one row per model x split x example)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metrics.probs import log_probs_from_probs, reference_probs
from .store import Store


def export_long(store: Store, out, *, models=None, splits=None, calibrated: bool = True) -> Path:
    """Columns: model, split, id, label, pred, correct, p_pred, p_label (calibrated when a T exists)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    writer = None
    try:
        for m in models or store.models:
            for s in splits or store.model_splits(m):
                sd = store.split(s)
                if sd.multilabel:
                    continue
                row = {"model": m, "split": s, "id": sd.ids.astype(str), "label": sd.labels}
                if store.has(m, s, "logits") or store.has(m, s, "probs"):
                    kind, arr = store.scores(m, s)
                    z = np.asarray(arr, np.float32) if kind == "logits" else log_probs_from_probs(arr)
                    t = store.temperature(m) if calibrated and store.temperature(m) else 1.0
                    p = reference_probs(z, t)
                    pred = p.argmax(axis=1)
                    row.update(pred=pred, p_pred=p[np.arange(len(p)), pred], p_label=p[np.arange(len(p)), sd.labels])
                elif store.has(m, s, "pred"):
                    pred = np.asarray(store.array(m, s, "pred")[:, 0])
                    row.update(pred=pred, p_pred=np.full(len(pred), np.nan), p_label=np.full(len(pred), np.nan))
                else:
                    continue
                row["correct"] = row["pred"] == sd.labels
                n = len(sd.labels)
                table = pa.table({k: (np.repeat(v, n) if isinstance(v, str) else v) for k, v in row.items()})
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()
    if tmp.exists():
        tmp.replace(out)
    return out
