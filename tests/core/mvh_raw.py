"""model-vs-human raw-data files written by hand for tests (a small excerpt in its format)."""
import csv

# contrast: 4 images in each of c50 and c10 (kept) and c100 (excluded by model-vs-human);
# sketch: 4 images, one condition. 1 = correct. S2 leaves one c10 trial unanswered (na).
CORRECT = {
    "contrast": {
        "c50": {"resnet50": [1, 1, 0, 0], "subject-01": [1, 1, 1, 0], "subject-02": [1, 0, 0, 0]},
        "c10": {"resnet50": [1, 0, 0, 0], "subject-01": [1, 1, 0, 0], "subject-02": ["na", 1, 0, 0]},
        "c100": {"resnet50": [0, 0, 0, 0], "subject-01": [1, 1, 1, 1], "subject-02": [1, 1, 1, 1]},
    },
    "sketch": {"0": {"resnet50": [1, 1, 1, 1], "subject-01": [1, 1, 1, 1], "subject-02": [1, 1, 0, 1]}},
}
CATS = ["knife", "bicycle", "bird", "airplane"]
WRONG = {"knife": "oven", "bicycle": "car", "bird": "dog", "airplane": "truck"}


def _images(dataset, cond):
    if dataset == "sketch":
        return [f"ske_s01_{cond}_{c}_00_{c}-00{k}{i}-sketch-2.png" for i, c in enumerate(CATS) for k in [0]]
    return [f"cop_s01_{cond}_{c}_10_n0{3000000 + 7 * i}_{cond}{i}.png" for i, c in enumerate(CATS)]


def write_raw(root, *, session_header="session"):
    for dataset, conds in CORRECT.items():
        folder = root / dataset
        folder.mkdir(parents=True, exist_ok=True)
        for who in ("resnet50", "subject-01", "subject-02"):
            rows = []
            for cond, by in conds.items():
                for img, c, ok in zip(_images(dataset, cond), CATS, by[who]):
                    resp = "na" if ok == "na" else (c if ok else WRONG[c])
                    rows.append([who, 1, 0, 0.5, resp, c, cond, img])
            rows = rows[::-1] if who == "subject-02" else rows  # trial order differs between observers
            for t, r in enumerate(rows):
                r[2] = t + 1
                r[7] = f"{t + 1:04d}_{r[7]}"
            name = f"{dataset}_{who}_session_1.csv" if who.startswith("subject") else f"{dataset}_{who}_session-1.csv"
            header = "Session" if who == "subject-01" else session_header
            with open(folder / name, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["subj", header, "trial", "rt", "object_response", "category", "condition", "imagename"])
                w.writerows(rows)
    return root
