"""Print a study's model table (OUT/tables/models.csv) as the Markdown table of docs/zoo.md."""
import sys

import pandas as pd


def main(out: str) -> None:
    df = pd.read_csv(f"{out}/tables/models.csv")
    order = {c: i for i, c in enumerate(["base", "reinit", "subset", "hyperparameters", "architecture",
                                          "framework", "dataset"])}
    df = df.sort_values(["category", "model"], key=lambda s: s.map(order) if s.name == "category" else s)
    print("| model | category vs base | family (depth, width) | objective / head | train data (subset) | seed "
          "| test acc | made in |")
    print("|---|---|---|---|---|---|---|---|")
    for r in df.itertuples():
        depth = "" if pd.isna(r.depth) else int(r.depth)
        width = "" if pd.isna(r.width) else f"{r.width:g}"
        data = r.train_data + (f" ({r.subset})" if isinstance(r.subset, str) else "")
        seed = "" if pd.isna(r.seed) else int(r.seed)
        acc = f"{100 * r.accuracy:.1f} %" + (" (probe)" if r.head == "linear-probe" else "")
        cost = "" if pd.isna(r.cost_s) else f"{r.cost_s:.0f} s {r.cost_of}"
        print(f"| {r.model} | {r.category} | {r.family} ({depth}, {width}) | {r.objective} / {r.head} | {data} "
              f"| {seed} | {acc} | {cost} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out/fashion-mnist")
