"""Benchmark: extraction throughput vs a bare `model(x)` loop over the same batches (issue 3, 'Speed').

(a) CIFAR ResNet-20 over the CIFAR-10 JPEG test .tar.gz (10,000 images): extraction reads the
    archive and decodes every JPEG on its side (DataLoader workers), stages chunks and commits
    to a store; the bare loop runs `model(x)` over the same batches already decoded and
    normalized in memory.
(b) EfficientNet-Lite0 on Fashion-MNIST (official test set, 10,000 images) at 64 px, the
    resolution the zoo presets use (28x28 grayscale -> RGB -> resize to 73 -> center crop 64).

Prints every figure and the ratio extraction / bare (target >= 0.9). The bare loop is eager
torch, so the extraction runs with --runtime torch by default (the overhead comparison);
--runtime auto shows what ONNX Runtime on CPU gains over that same bare torch loop. Run:
    python bench/extract.py [--device cpu|cuda] [--repeats 2] [--limit N] [--runtime torch|auto]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def bare_loop(runner, batches) -> float:
    """Seconds for `model(x)` over pre-normalized batches (no decoding, no copies back)."""
    import torch

    module = runner.module
    dev = runner.device
    xs = [runner.model_input(b) for b in batches]
    with torch.inference_mode(), torch.autocast("cuda", enabled=runner.amp):
        module(xs[0])  # warm-up
        if dev.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for x in xs:
            module(x)
        if dev.startswith("cuda"):
            torch.cuda.synchronize()
    return time.perf_counter() - t0


def case(title, model, data, split, *, batch_size, device, workers, input_size, repeats, limit, runtime="torch"):
    import torch

    from divergent.data import open_dataset
    from divergent.extract import extract
    from divergent.sources import load
    from divergent.sources.preprocess import ImageTransform

    print(f"\n== {title}: {model} on {data}:{split} (batch {batch_size}, device {device}, workers {workers}, "
          f"torch threads {torch.get_num_threads()})")
    t = time.perf_counter()
    ds = open_dataset(data, split)
    t_open = time.perf_counter() - t
    if limit:
        ds = ds.subset(np.arange(min(limit, len(ds))))
    n = len(ds)
    runner = load(model, device=device, input_size=input_size, runtime="torch")
    tf = ImageTransform(runner.preprocess)
    t = time.perf_counter()
    imgs = np.stack([tf(ds.raw(i) if not getattr(ds._reader, "decodes", True) else ds.image(i)) for i in range(n)])
    t_decode = time.perf_counter() - t
    batches = [torch.from_numpy(imgs[i:i + batch_size]) for i in range(0, n, batch_size)]
    print(f"   dataset open {t_open:.2f} s; serial decode+transform {t_decode:.2f} s ({n / t_decode:.0f} img/s); "
          f"input {runner.preprocess.size}px")
    bare, ext, ext_total = [], [], []
    for rep in range(repeats):
        if rep % 2 == 0:  # alternate the order, so drift in machine load does not favour one side
            bare.append(bare_loop(runner, batches))
        tmp = Path(tempfile.mkdtemp(prefix="bench-extract-"))
        try:
            t = time.perf_counter()
            r = extract(tmp / "st", model, ds if limit else data, split, batch_size=batch_size, device=device,
                        workers=workers, input_size=input_size, progress=False, runtime=runtime)
            ext_total.append(time.perf_counter() - t)
            ext.append(r["seconds"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if rep % 2 == 1:
            bare.append(bare_loop(runner, batches))
        b = bare[-1]
        print(f"   rep {rep}: bare model(x) {b:.2f} s ({n / b:.0f} img/s) | extraction pass {ext[-1]:.2f} s "
              f"({n / ext[-1]:.0f} img/s) | extract() end-to-end incl. dataset open, model load, commit {ext_total[-1]:.2f} s")
    b, e, et = min(bare), min(ext), min(ext_total)
    print(f"   best: bare {n / b:.0f} img/s, extraction pass {n / e:.0f} img/s -> ratio {b / e:.3f} "
          f"(end-to-end ratio {b / et:.3f}); target >= 0.9: {'MET' if b / e >= 0.9 else 'NOT MET'}")
    return {"case": title, "n": n, "bare_img_s": n / b, "extract_img_s": n / e, "ratio": b / e, "ratio_end_to_end": b / et}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N images (0: all)")
    ap.add_argument("--size", type=int, default=64, help="EfficientNet-Lite0 input size for (b)")
    ap.add_argument("--only", choices=["a", "b"], default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--runtime", default="torch", choices=["torch", "auto", "onnxruntime"],
                    help="the extraction side's CPU runtime (the bare loop is always eager torch)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from divergent.extract.run import _default_workers

    workers = _default_workers(args.device) if args.workers is None else args.workers
    rows = []
    if args.only in (None, "a"):
        rows.append(case("(a) CIFAR ResNet-20, JPEG .tar.gz", "cifar10/resnet20", "cifar10-jpeg", "official-test",
                         batch_size=256, device=args.device, workers=workers, input_size=None, repeats=args.repeats, limit=args.limit, runtime=args.runtime))
    if args.only in (None, "b"):
        rows.append(case(f"(b) EfficientNet-Lite0 @ {args.size}px, Fashion-MNIST", "imagenet/efficientnet-lite0", "fashion-mnist",
                         "official-test", batch_size=256, device=args.device, workers=workers, input_size=args.size,
                         repeats=args.repeats, limit=args.limit, runtime=args.runtime))
    import pandas as pd

    print("\n" + pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
