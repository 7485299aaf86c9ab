"""Small hand-made report tables matching the documented schemas (used by the report tests)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from divergent.analyses.findings import make_row
from divergent.report import ReportTables

MODELS = [
    # model, method, head, T, acc, category
    ("cnn-base", "Sup. / FMNIST", "trained", 1.10, 0.9012, "base"),
    ("cnn-seed1", "Sup. / FMNIST", "trained", 1.05, 0.8990, "reinit"),
    ("cnn-drop", "Sup. / FMNIST", "trained", 0.95, 0.8871, "hyperparameters"),
    ("mlp", "Sup. / FMNIST", "trained", 1.20, 0.8702, "architecture"),
    ("simclr", "Cont. / FMNIST", "linear-probe", 0.80, 0.8433, "framework"),
    ("effnet-lite0", "Sup. / ImageNet", "linear-probe", 0.70, 0.8120, "dataset"),
]
EI = {"cnn-seed1": 0.0512, "cnn-drop": 0.0633, "mlp": 0.0871, "simclr": 0.1104, "effnet-lite0": 0.1420}


def make_tables() -> ReportTables:
    models = pd.DataFrame(MODELS, columns=["model", "method", "head", "temperature", "accuracy", "category"])
    rows = []
    base_acc = MODELS[0][4]
    for m, _, _, _, acc, cat in MODELS[1:]:
        ei = EI[m]
        ens = max(acc, base_acc) + 0.3 * ei - 0.01
        r = dict(model_a="cnn-base", model_b=m, category=cat, acc_a=base_acc, acc_b=acc, error_inconsistency=ei,
                 both_correct=(base_acc + acc - ei) / 2, both_wrong=1 - (base_acc + acc + ei) / 2,
                 agreement=0.9 - ei, error_consistency=0.6 - ei, ensemble_acc=ens,
                 gain_vs_best=ens - max(acc, base_acc), gain_vs_mean=ens - (acc + base_acc) / 2,
                 conversion_rate=0.5 + ei)
        for k in ("error_inconsistency", "both_correct", "both_wrong", "ensemble_acc", "conversion_rate"):
            r[f"{k}_lo"], r[f"{k}_hi"] = r[k] - 0.005, r[k] + 0.005
        rows.append(r)
    pairs = pd.DataFrame(rows)
    rng = np.random.default_rng(0)
    ang = []
    for m, cat, sep in (("cnn-seed1", "reinit", 2.0), ("mlp", "architecture", 6.0), ("effnet-lite0", "dataset", 14.0)):
        for oc, mu, n in (("only_a", 45 + sep / 2, 60), ("only_b", 45 - sep / 2, 50), ("both", 45, 300), ("neither", 45, 40)):
            ang += [dict(model_b=m, category=cat, phi=float(v), outcome=oc) for v in np.clip(rng.normal(mu, 6, n), 1, 89)]
    angles = pd.DataFrame(ang)
    classes = [("T-shirt", "garments"), ("Trouser", "garments"), ("Sandal", "footwear"), ("Sneaker", "footwear"), ("Bag", "bags")]
    cs = [dict(model_b=m, category=cat, class_name=c, group=g, specialization=float(rng.normal(sep, 2)))
          for m, cat, sep in (("cnn-seed1", "reinit", 1), ("effnet-lite0", "dataset", 10)) for c, g in classes]
    class_spec = pd.DataFrame(cs)
    gs = (class_spec.groupby(["model_b", "category", "group"], as_index=False)["specialization"].mean()
          .assign(specialization_lo=lambda d: d.specialization - 1.5, specialization_hi=lambda d: d.specialization + 1.5))
    greedy = pd.DataFrame([
        dict(base="cnn-base", size=1, added="cnn-base", category="base", holdout_acc=0.9030, test_acc=0.9012),
        dict(base="cnn-base", size=2, added="effnet-lite0", category="dataset", holdout_acc=0.9150, test_acc=0.9133),
        dict(base="cnn-base", size=3, added="simclr", category="framework", holdout_acc=0.9190, test_acc=0.9161),
    ])
    fc = pd.DataFrame([dict(model_a="cnn-base", model_b=m, category=c, fraction_a=p, seed=s, accuracy=0.85 + 0.05 * p * (1 - p) * k + 0.001 * s)
                       for m, c, k in (("cnn-seed1", "reinit", 0.5), ("effnet-lite0", "dataset", 2.0))
                       for p in (0.0, 0.25, 0.5, 0.75, 1.0) for s in (0, 1)])
    dims = pd.DataFrame([dict(model_a="cnn-base", model_b=m, category=c, n_dims=n, accuracy=0.9 * (1 - np.exp(-n / sc)))
                         for m, c, sc in (("cnn-seed1", "reinit", 40.0), ("effnet-lite0", "dataset", 15.0))
                         for n in (16, 32, 64, 128, 256)])
    transfer = pd.DataFrame([
        dict(embedding="cnn-base", kind="single", task="digits", metric="accuracy", score=0.9011),
        dict(embedding="effnet-lite0", kind="single", task="digits", metric="accuracy", score=0.9355),
        dict(embedding="cnn-base+effnet-lite0", kind="stacked", task="digits", metric="accuracy", score=0.9522),
        dict(embedding="cnn-base", kind="single", task="digit-mosaics", metric="11-point mAP", score=0.7021),
        dict(embedding="cnn-base+effnet-lite0", kind="stacked", task="digit-mosaics", metric="11-point mAP", score=0.7533),
    ])
    findings = pd.DataFrame([
        make_row(1, "all", 0.90, 0.70, 1.0, n=5), make_row(2, "all", 0.31, 0.12, 0.50, n=5),
        make_row(3, "all", 12.0, 8.0, 16.0, n=2), make_row(4, "all", 0.0149, 0.004, 0.025, n=5000),
        make_row(5, "all", 0.0167, -0.002, 0.035, n=1797),
        make_row(1, "band", 0.5, -0.2, 0.9, n=3), make_row(2, "band", -0.2, -0.4, -0.05, n=3),
        make_row(3, "band", float("nan"), float("nan"), float("nan"), reason="no dataset pair in the band"),
        make_row(4, "band", 0.01, 0.001, 0.02, n=5000), make_row(5, "band", 0.0167, -0.002, 0.035, n=1797),
    ])
    # the gallery without image files (each example shows its id) and the machine's description
    gallery = pd.DataFrame([dict(model_a="cnn-base", model_b="mlp", category="architecture", side=side, group=g,
                                 rank=r, id=f"t10k/{k:05d}", class_name=c, pred_a_name=pa, pred_b_name=pb,
                                 confidence=conf, thumbnail="")
                            for k, (side, g, r, c, pa, pb, conf) in enumerate([
                                ("only_a", "garments", 0, "Shirt", "Shirt", "T-shirt", 0.91),
                                ("only_b", "footwear", 0, "Sandal", "Sneaker", "Sandal", 0.88)])])
    env = pd.DataFrame({"item": ["cpu", "instruction set", "numpy"], "value": ["Test CPU", "AVX2", "2.0.0"]})
    return ReportTables(models=models, pairs=pairs, findings=findings, angles=angles, class_specialization=class_spec,
                        group_specialization=gs, greedy=greedy, feature_combination=fc, dims_curve=dims,
                        transfer=transfer, gallery=gallery, environment=env,
                        meta={"acc_band": (0.84, 0.92), "dataset": "fashion-mnist", "study": "test"})
