"""Measured scale of all pairs with bootstrap: the local engine vs blocks of models on Ray.

Synthetic zoos (divergent.engine.synthetic: float16 logits, temperatures fitted) of 40, 80, 160 and
320 models x 10,000 examples x 1,000 classes; every pair's code counts, then a 95 % bootstrap of every
pair metric (1,000 resamples of the counts). Two paths on the same data:

* local: `prepare_many` + `all_pair_codes` in this process on --workers threads;
* ray: `divergent.engine.distributed.pair_counts` in blocks of --block x --block models on a
  multi-node Ray cluster on this machine (`ray.cluster_utils.Cluster`, bound to 127.0.0.1 only: a
  head without CPUs and --nodes worker nodes of one CPU each); the score files are read in place by
  the tasks (every node of this cluster sees the same disk), summaries go through the object store.

Both paths' counts and intervals are checked equal. A cost model is fitted to the runs:

    engine wall = (p * models + q * pairs + r * blocks) / workers,    bootstrap wall = s * pairs

(p: one model's prepare, q: one pair, r: one block's overhead — task start, reading its models'
summaries, attaching them — all in worker-seconds, i.e. wall time x workers, p at 10,000 x 1,000
scores and q at 10,000 examples; s: the driver's bootstrap per pair),
and each run's wall time is predicted from it. The projection to a larger zoo scales p with N x C,
q and r with N. Memory: the largest anonymous resident memory (RssAnon) of any Ray worker process,
sampled every 0.1 s, and the driver's.

Usage: python bench/scale.py [--sizes 40,80,160,320] [--n 10000] [--quick] [--block 16]
       [--nodes 2] [--out bench/scale.json]; python bench/scale.py --fit bench/scale.json
--quick: 2,000 examples instead of 10,000 (for a loaded machine), said in the output.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakAnon  # noqa: E402

from divergent.engine import ModelSource, all_pair_codes, prepare_many  # noqa: E402
from divergent.engine import distributed as dist  # noqa: E402
from divergent.metrics.bootstrap import count_bootstrap  # noqa: E402
from divergent.metrics.pairs import metrics_from_counts  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- Ray worker processes: memory and CPU

def _ray_workers() -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            except OSError:
                continue
            if b"default_worker.py" in cmd or cmd.startswith(b"ray::"):
                out.append(int(d))
    return out


def _status(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / CLK
    except (OSError, IndexError):
        return 0.0


class WorkerWatch:
    """Peak RssAnon of any Ray worker process, and the CPU seconds the workers used, over a run."""

    def __init__(self, interval: float = 0.1):
        self.interval, self.peak_kb, self._stop = interval, 0, threading.Event()
        self.cpu0: dict[int, float] = {}
        self.cpu1: dict[int, float] = {}

    def _run(self):
        while not self._stop.is_set():
            for pid in _ray_workers():
                self.peak_kb = max(self.peak_kb, _status(pid, "RssAnon:"))
                self.cpu1[pid] = max(self.cpu1.get(pid, 0.0), _cpu(pid))
            time.sleep(self.interval)

    def __enter__(self):
        self.cpu0 = {pid: _cpu(pid) for pid in _ray_workers()}
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        for pid in _ray_workers():
            self.cpu1[pid] = max(self.cpu1.get(pid, 0.0), _cpu(pid))

    @property
    def cpu_s(self) -> float:
        return sum(v - self.cpu0.get(pid, 0.0) for pid, v in self.cpu1.items())


# ---------------------------------------------------------------- the two paths

def run_local(srcs, y, workers: int, n_boot: int) -> tuple[dict, np.ndarray, dict]:
    c0, t0 = time.process_time(), time.perf_counter()
    with PeakAnon(0.05) as mem:
        prepared = prepare_many(srcs, y, workers=workers)
        t1 = time.perf_counter()
        counts = np.stack([r.counts for r in all_pair_codes(prepared, progress=False, workers=workers)])
        del prepared
        t2 = time.perf_counter()
        ci = count_bootstrap(counts, metrics_from_counts, n_boot=n_boot, workers=workers)
        t3 = time.perf_counter()
    return ({"prepare_s": t1 - t0, "pairs_s": t2 - t1, "engine_s": t2 - t0, "boot_s": t3 - t2, "wall_s": t3 - t0,
             "cpu_s": time.process_time() - c0, "driver_anon_gb": mem.peak_gb, "blocks": 0}, counts, ci)


def run_ray(ray, srcs, y, block: int, n_boot: int, workers: int) -> tuple[dict, np.ndarray, dict]:
    runner = dist.RayRunner(ray, shared_fs=True)
    c0, t0 = time.process_time(), time.perf_counter()
    with WorkerWatch() as ww, PeakAnon(0.05) as mem:
        pc = dist.pair_counts(srcs, y, size=block, runner=runner)
        t1 = time.perf_counter()
        ci = count_bootstrap(pc.counts, metrics_from_counts, n_boot=n_boot, workers=workers)
        t2 = time.perf_counter()
    assert pc.prepared == len(srcs), "every model is prepared exactly once"
    return ({"engine_s": t1 - t0, "boot_s": t2 - t1, "wall_s": t2 - t0, "cpu_s": time.process_time() - c0,
             "worker_cpu_s": ww.cpu_s, "worker_anon_gb": ww.peak_kb / 2**20, "driver_anon_gb": mem.peak_gb,
             "blocks": pc.blocks}, pc.counts, ci)


def start_cluster(nodes: int):
    import ray
    from ray.cluster_utils import Cluster

    from divergent.study.ray_cluster import loopback

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with loopback():
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                                "object_store_memory": 512 << 20})
        for _ in range(nodes):
            cluster.add_node(num_cpus=1, object_store_memory=512 << 20)
        ray.init(address=cluster.address, log_to_driver=False)
    t0 = time.monotonic()
    while sum(1 for x in ray.nodes() if x.get("Alive")) < nodes + 1 and time.monotonic() - t0 < 120:
        time.sleep(0.2)
    return ray, cluster


# ---------------------------------------------------------------- the cost model

#: the unit sizes the costs are given for: p per model at 10,000 x 1,000 scores, q per pair at 10,000 examples
REF_SCORES, REF_N = 10_000 * 1000, 10_000


def features(run: dict, workers: int) -> list[float]:
    """prepare scales with N x C, a pair and a block's reading with N."""
    n, c = run["n"], run["classes"]
    return [run["models"] * n * c / REF_SCORES / workers, run["pairs"] * n / REF_N / workers,
            run["blocks"] / workers]


def fit(runs: list[dict]) -> dict:
    """Non-negative least squares on relative errors (each run weighs the same): engine =
    (p M + q P + r K) / w, bootstrap = s P."""
    from scipy.optimize import nnls

    X = np.array([features(r, r["workers"]) for r in runs])
    t = np.array([r["engine_s"] for r in runs])
    coef, _ = nnls(X / t[:, None], np.ones(len(t)))  # no negative costs
    P = np.array([r["pairs"] for r in runs], dtype=float)
    b = np.array([r["boot_s"] for r in runs])
    s = float(np.sum(P * b / b**2) / np.sum((P / b) ** 2))
    return {"p": float(coef[0]), "q": float(coef[1]), "r": float(coef[2]), "s": s}


def predict(model: dict, run: dict) -> tuple[float, float]:
    p, q, r = features(run, run["workers"])
    return model["p"] * p + model["q"] * q + model["r"] * r, model["s"] * run["pairs"]


def report(res: dict) -> str:
    runs, model = res["runs"], fit(res["runs"])
    lines = [f"block {res['block']}; ray: {res['nodes']} worker nodes x 1 CPU (head without CPUs); local: "
             f"{res['workers']} threads; bootstrap {res.get('n_boot', 1000)} resamples",
             "| path | models | N | pairs | blocks | engine s | bootstrap s | wall s | predicted s | error | "
             "worker RssAnon GB | driver RssAnon GB | load |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    worst = 0.0
    for r in sorted(runs, key=lambda r: (r["n"], r["models"], r["path"])):
        e, b = predict(model, r)
        err = (e + b) / r["wall_s"] - 1
        worst = max(worst, abs(err))
        wmem = f"{r['worker_anon_gb']:.2f}" if "worker_anon_gb" in r else "—"
        lines.append(f"| {r['path']} | {r['models']} | {r['n']:,} | {r['pairs']:,} | {r['blocks']} | {r['engine_s']:.1f} | "
                     f"{r['boot_s']:.1f} | {r['wall_s']:.1f} | {e + b:.1f} | {100 * err:+.0f} % | "
                     f"{wmem} | {r['driver_anon_gb']:.2f} | {r['load']:.1f} |")
    lines.append(f"cost model (worker-seconds: wall x workers): prepare p = {model['p']:.3f} s per model of 10,000 x "
                 f"1,000 scores, pair q = {1e3 * model['q']:.2f} ms per pair of 10,000 examples, block r = "
                 f"{model['r']:.2f} s per block; "
                 f"bootstrap s = {1e3 * model['s']:.3f} ms per pair on the driver; worst error {100 * worst:.0f} %")
    # projection: 1,500 models x 50,000 x 1,000 on 8 nodes x 16 cores
    M, N, C, w, B = 1500, 50_000, 1000, 8 * 16, res.get("project_block", 64)
    P = M * (M - 1) // 2
    g = -(-M // B)
    K = g * (g + 1) // 2
    big = {"models": M, "n": N, "classes": C, "pairs": P, "blocks": K, "workers": w}
    e, b = predict(model, big)
    cpu_h = e * w / 3600
    summ_mb = N * (12 * 6 + 48) / 2**20  # one model's summaries, k = 6
    lines.append(f"projection, {M:,} models x {N:,} x {C:,} on 8 nodes x 16 cores, blocks of {B} ({K:,} blocks, "
                 f"{P:,} pairs): engine {e / 60:.1f} min ({cpu_h:.1f} worker-h), bootstrap on the driver {b / 60:.1f} min, "
                 f"total {(e + b) / 60:.1f} min")
    lines.append(f"memory per worker (one block task): summaries of <= {2 * B} models x {summ_mb:.1f} MB = "
                 f"{2 * B * summ_mb / 1024:.2f} GB + codes of one group of pairs <= {min(B * B * N, 256 << 20) / 2**30:.2f} GB "
                 f"+ scratch; the scores are read from memory-mapped files or the node's object store (shared)")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="40,80,160,320")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="2,000 examples (a loaded machine)")
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--project-block", type=int, default=64, help="block size of the projection to 1,500 models")
    ap.add_argument("--workers", type=int, default=2, help="threads of the local path")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--paths", default="local,ray")
    ap.add_argument("--cache", default="/tmp")
    ap.add_argument("--zoo", type=int, default=None, help="generate (or reuse) a zoo of this many models; runs use its first ones")
    ap.add_argument("--out", default=None, help="JSON of the runs (appended to when it exists)")
    ap.add_argument("--fit", default=None, help="only fit and print the model of a JSON of runs")
    a = ap.parse_args(argv)
    if a.fit:
        print(report({**json.loads(Path(a.fit).read_text()), "project_block": a.project_block}))
        return
    from divergent.engine.synthetic import load_scores, make_scores

    n = 2000 if a.quick else a.n
    sizes = [int(s) for s in a.sizes.split(",")]
    meta = make_scores(a.cache, max(sizes + [a.zoo or 0]), n, a.classes)
    xs, y = load_scores(meta)
    res = {"block": a.block, "nodes": a.nodes, "workers": a.workers, "n_boot": a.n_boot, "runs": []}
    if a.out and Path(a.out).exists():
        old = json.loads(Path(a.out).read_text())
        if all(old.get(k) == res[k] for k in ("block", "nodes", "workers", "n_boot")):
            res["runs"] = old["runs"]
    paths = a.paths.split(",")
    ray = cluster = None
    if "local" in paths:  # numba compile / cache load, once per process: not part of the runs
        run_local([ModelSource(x, T, "logits", nm) for x, T, nm in zip(xs[:3], meta["temperatures"], meta["names"])],
                  y, a.workers, 10)
    if "ray" in paths:
        t = time.perf_counter()
        ray, cluster = start_cluster(a.nodes)
        # warm every worker (process start, numba cache load) on a tiny zoo: not part of the runs
        tiny = [ModelSource(x, T, "logits", nm) for x, T, nm in zip(xs[:4], meta["temperatures"], meta["names"])]
        dist.pair_counts(tiny, y, size=2, runner=dist.RayRunner(ray, shared_fs=True))
        print(f"ray cluster up and warm in {time.perf_counter() - t:.1f} s", flush=True)
    try:
        for m in sizes:
            for path in paths:
                if path == "local":
                    srcs = [ModelSource(x, T, "logits", nm) for x, T, nm in
                            zip(xs[:m], meta["temperatures"], meta["names"])]
                    run, counts, ci = run_local(srcs, y, a.workers, a.n_boot)
                    ref = (counts, ci)
                else:
                    srcs = [ModelSource(x, T, "logits", nm) for x, T, nm in
                            zip(xs[:m], meta["temperatures"], meta["names"])]
                    run, counts, ci = run_ray(ray, srcs, y, a.block, a.n_boot, a.workers)
                    if "local" in paths:
                        same = np.array_equal(counts, ref[0]) and all(
                            np.array_equal(ci[k][0], ref[1][k][0]) and np.array_equal(ci[k][1], ref[1][k][1]) for k in ci)
                        assert same, "the Ray path differs from the local engine"
                        run["equal_to_local"] = True
                run.update(path=path, models=m, pairs=m * (m - 1) // 2, n=n, classes=a.classes,
                           workers=a.workers if path == "local" else a.nodes, load=os.getloadavg()[0])
                res["runs"] = [r for r in res["runs"] if (r["path"], r["models"], r["n"]) != (path, m, n)] + [run]
                print(json.dumps(run), flush=True)
                if a.out:
                    Path(a.out).write_text(json.dumps(res, indent=1))
    finally:
        if ray is not None:
            ray.shutdown()
            cluster.shutdown()
    if len(res["runs"]) >= 4:
        print(report({**res, "project_block": a.project_block}))


if __name__ == "__main__":
    main()
