"""Export a store for other tools: one long Parquet table (one row per model x split x example), or
per-example decisions as model-vs-human raw-data CSVs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metrics.probs import log_probs_from_probs, reference_probs
from .._files import atomic_write_bytes, commit_temp, discard_temp, reserve_temp
from .reader import Store


def export_long(store: Store, out, *, models=None, splits=None, calibrated: bool = True) -> Path:
    """Columns: model, split, id, label, pred, correct, confidence, p_pred, p_label (calibrated when a T
    exists; `confidence` is the probability of the predicted class, = p_pred; NaN for decision-only
    models; pred -1 is a decision-only model's 'no answer')."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    tmp = reserve_temp(out)
    writer = None
    try:
        for m in models or store.models:
            for s in splits or store.model_splits(m):
                sd = store.split(s)
                if sd.multilabel:
                    continue
                row = {"model": m, "split": s, "id": sd.ids.astype(str), "label": sd.labels}
                if store.has_scores(m, s):
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
                row["confidence"] = row["p_pred"]
                n = len(sd.labels)
                table = pa.table({k: (np.repeat(v, n) if isinstance(v, str) else v) for k, v in row.items()})
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table.cast(writer.schema))
    except BaseException:
        if writer is not None:
            writer.close()
        discard_temp(tmp)
        raise
    if writer is None:
        discard_temp(tmp)  # nothing to export: no file written
    else:
        writer.close()
        commit_temp(tmp, out)
    return out


def _file_part(name: str) -> str:
    """A model name as model-vs-human writes it in file names (`_` -> `-`), safe as a file name."""
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in name)


def export_model_vs_human(store: Store, out, *, models=None, splits=None) -> list[Path]:
    """Per-example decisions as model-vs-human raw-data CSVs: ``OUT/<dataset>/<dataset>_<model>_session-1.csv``
    (humans imported from it, ``<dataset>/subject-NN``, as ``<dataset>_subject-NN_session_1.csv``).

    Columns subj, session, trial, rt, object_response, category, condition, imagename: the model's
    top-1 class name (``na`` for no answer), the label's class name, the example's condition (the
    split's ``meta['conditions']``, else ``0``), and the example id as the image name (prefixed with
    the trial number, as model-vs-human's own files are). Written atomically, one file per model and split."""
    import csv
    import io

    out = Path(out)
    written = []
    for s in splits or store.splits:
        sd = store.split(s)
        if sd.multilabel:
            continue
        dataset = sd.dataset or s
        conds = sd.meta.get("conditions") or ["0"] * sd.n
        names = np.asarray(sd.class_names + ["na"], dtype=object)
        for m in models or store.models:
            if not any(store.has(m, s, k) for k in ("logits", "probs", "pred")):
                continue
            pred = store.predictions(m, s)
            own = m.split("/", 1)[1] if m.startswith(f"{dataset}/") else m
            human = own.startswith("subject-")
            fname = f"{dataset}_{_file_part(own)}_session_1.csv" if human else f"{dataset}_{_file_part(own)}_session-1.csv"
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["subj", "session", "trial", "rt", "object_response", "category", "condition", "imagename"])
            for t, (i, p, y, c) in enumerate(zip(sd.ids.tolist(), pred.tolist(), sd.labels.tolist(), conds), 1):
                w.writerow([own, 1, t, "NaN", names[p], names[y], c, f"{t:04d}_{i}"])
            path = out / _file_part(dataset) / fname
            atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
            written.append(path)
    return written
