"""From a validated config to the study's unit graph (train -> extract -> head -> calibrate -> pairs
-> analyses -> report), and run_study(), the one entry point of `divergent study run`."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..analyses.gallery import MAX_CLASSES
from ..cards import CATEGORY_ORDER
from ..conventions import check_name
from ..errors import DivergentError
from . import analysis_stages as A
from . import gallery_stages as G
from . import shift_stages as SH
from . import config as C
from . import stages as S
from .config import StudyConfig
from .graph import Graph, Unit
from .._files import atomic_write_text

#: feature analyses run for the base and the representative of each of these categories
FEATURE_CATEGORIES = tuple(c for c in CATEGORY_ORDER if c != "identical")


@dataclass
class ZooPlan:
    recipes: list[dict]
    backbones: list[dict]     # {"spec", "name", "input_size"}
    pretrained: list[dict]
    base: str


#: `zoo.seed` k adds k * ZOO_SEED_STRIDE to every recipe's training seed: above any seed a built-in
#: recipe uses (0-42), so the recipes of one zoo keep distinct seeds and no two zoo seeds share one
ZOO_SEED_STRIDE = 1000


def _recipes(cfg: StudyConfig) -> list[dict]:
    """The zoo's recipes as plain dicts (the train units' parameters), with `zoo.only`, `zoo.seed`
    and `zoo.epochs_scale` applied; at their defaults the recipes are unchanged (and so are the
    units' cache keys)."""
    z = cfg.zoo
    spec = z.recipes
    if spec in ("", []):
        return []
    from ..train import Recipe, recipe_by_name, zoo

    if isinstance(spec, str):
        rs = zoo(spec)
    else:
        rs = [Recipe.from_dict(r) if isinstance(r, dict) else recipe_by_name(r) for r in spec]
    if z.only:
        keep = set(z.only)
        kept = {r.name for i, r in enumerate(rs) if i == 0 or r.name in keep or r.name.split("/")[-1] in keep}
        kept |= {r.teacher for r in rs if r.name in kept and r.teacher}  # a student needs its teacher
        unknown_ = sorted(k for k in keep if k not in {r.name for r in rs} | {r.name.split("/")[-1] for r in rs})
        if unknown_:
            raise DivergentError(f"config key 'zoo.only' names recipes not in the zoo: {unknown_}",
                                 f"recipes: {', '.join(r.name.split('/')[-1] for r in rs)}")
        rs = [r for r in rs if r.name in kept]
    if z.epochs_scale <= 0:
        raise DivergentError(f"config key 'zoo.epochs_scale' is {z.epochs_scale}, which leaves nothing to train",
                             "use a positive factor, e.g. 0.5 for half the epochs (1.0: the recipes' own)")
    if z.seed < 0:
        raise DivergentError(f"config key 'zoo.seed' is {z.seed}", "use 0 (the recipes' own seeds) or a positive integer")
    changed = []
    for r in rs:
        new = {}
        if z.seed:
            new["seed"] = r.seed + z.seed * ZOO_SEED_STRIDE
        if z.epochs_scale != 1.0:
            new["epochs"] = max(1, round(r.epochs * z.epochs_scale))
        changed.append(r.replace(**new) if new else r)
    return [r.to_dict() for r in changed]


def _models(entries: list, input_size: int) -> list[dict]:
    out = []
    for e in entries:
        e = {"model": e} if isinstance(e, str) else dict(e)
        if "model" not in e:
            raise DivergentError(f"zoo entry {e!r} has no 'model' key", "write {model = \"NAME\", input_size = N}")
        size = int(e.get("input_size", input_size) or 0)
        from ..sources.registry import resolve

        spec_name = resolve(e["model"]).name   # an unknown model fails here, before any unit runs
        name = e.get("name") or (f"{spec_name}@{size}px" if size else spec_name)
        out.append({"spec": e["model"], "name": name, "input_size": size, "custom_name": bool(e.get("name"))})
    return out


def _store_name(entry: dict) -> dict:
    """The extract unit's `name` parameter: only for entries renamed in the config (a default name
    is what extraction derives itself, and leaving it out keeps those units' cache keys)."""
    return {"name": entry["name"]} if entry.get("custom_name") else {}


def check_names(cfg: StudyConfig, recipes: list[dict], entries: dict[str, list[dict]]) -> None:
    """The one name rule (:func:`divergent.conventions.check_name`) on every name of a study that
    becomes a store entry, a split, a directory or a unit, before any unit runs; plus distinct
    model directories for the recipes (``OUT/models/<recipe>``)."""
    from ..train.trainer import safe_dirname

    b = cfg.base
    items = [(r["name"], "recipe", "zoo.recipes") for r in recipes]
    items += [(r["teacher"], "teacher recipe", f"zoo.recipes ({r['name']})") for r in recipes if r.get("teacher")]
    items += [(e["name"], "zoo model", f"{key} ({e['spec']})") for key, es in entries.items() for e in es]
    items += [(cfg.data.split, "split", "data.split"), (cfg.data.fit_on, "split", "data.fit_on")]
    items += [(v, "base model", f"base.{k}") for k, v in (("model", b.model), ("high_accuracy", b.high_accuracy)) if v]
    items += [(t, "transfer task", "analysis.transfer") for t in cfg.analysis.transfer]
    items.append((cfg.study.name, "study", "study.name"))
    for name, what, key in items:
        try:
            normal = check_name(name, what)
        except DivergentError as exc:
            raise DivergentError(f"{exc.problem} (config key '{key}')", exc.fix) from None
        if normal != name:  # the store keeps names in NFC: another spelling would not match later
            raise DivergentError(f"{what} name {name!r} is not in Unicode NFC form (config key '{key}')",
                                 f"write it as {normal!r}")
    dirs: dict[str, str] = {}
    for r in recipes:
        d = safe_dirname(r["name"]).casefold()
        if d in dirs and dirs[d] != r["name"]:
            raise DivergentError(f"recipes {dirs[d]!r} and {r['name']!r} would share the directory OUT/models/{safe_dirname(r['name'])}",
                                 "rename one of them ('/' and ':' become '__' and '_'; case is ignored)")
        dirs[d] = r["name"]


def zoo_plan(cfg: StudyConfig) -> ZooPlan:
    recipes = _recipes(cfg)
    backbones = _models(cfg.zoo.backbones, cfg.zoo.input_size)
    # zoo.input_size is the frozen backbones' resolution; pretrained models keep their own unless
    # an entry sets input_size (their heads were trained at that size)
    pretrained = _models(cfg.zoo.pretrained, 0)
    check_names(cfg, recipes, {"zoo.backbones": backbones, "zoo.pretrained": pretrained})
    names = [r["name"] for r in recipes] + [b["name"] for b in backbones + pretrained]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise DivergentError(f"zoo models share names: {dups}",
                             "give backbones/pretrained entries distinct names: {model = \"SPEC\", name = \"NAME\"}")
    base = cfg.base.model or (recipes[0]["name"] if recipes else "")
    if not base:
        raise DivergentError("no base model", "set base.model, or give zoo.recipes (the first recipe is the base)")
    if base not in names:
        from ..errors import unknown

        raise unknown("base model (config key 'base.model')", base, names)
    hb = cfg.base.high_accuracy
    if hb and hb not in names:
        from ..errors import unknown

        raise unknown("high-accuracy base (config key 'base.high_accuracy')", hb, names)
    return ZooPlan(recipes, backbones, pretrained, base)


def zoo_names(zp: ZooPlan) -> list[str]:
    return sorted([r["name"] for r in zp.recipes] + [b["name"] for b in zp.backbones + zp.pretrained])


def prune_store(store_path: Path, keep: list[str], log) -> list[str]:
    """Remove models of an earlier zoo from the study store (the runner is its one writer)."""
    from ..store import Store

    if not (Path(store_path) / "manifest.json").exists():
        return []
    st = Store.open(store_path)
    extra = [m for m in st.models if m not in set(keep)]
    if extra:
        with st.writer(command="divergent study run (prune)") as w:
            for m in extra:
                w.remove(m)
        log.info("removed %d model(s) no longer in the zoo: %s", len(extra), extra)
    return extra


def plan(cfg: StudyConfig) -> Graph:
    """The unit graph of a study."""
    zp = zoo_plan(cfg)
    d, a, seed = cfg.data, cfg.analysis, cfg.study.seed
    g = Graph()
    g.add(Unit("data", "data", S.data_unit, dict(dataset=d.dataset, train_subset=d.train_subset, seed=seed,
                                                 options=d.options), cost=0.5))
    models = []
    names = {r["name"] for r in zp.recipes}
    for r in zp.recipes:
        deps = ["data"] + ([f"train:{r['teacher']}"] if r.get("teacher") in names else [])
        g.add(Unit(f"train:{r['name']}", "train", S.train_unit, dict(recipe=r), deps=tuple(deps),
                   cost=2.0 + r.get("epochs", 1)))
        g.add(Unit(f"predict:{r['name']}", "extract", S.predict_unit,
                   dict(model=r["name"], dataset=d.dataset, options=d.options),
                   deps=("data", f"train:{r['name']}"), cost=0.5))
        models.append(f"predict:{r['name']}")
    for b in zp.backbones:
        g.add(Unit(f"extract:{b['name']}", "extract", S.extract_unit,
                   dict(model=b["spec"], dataset=d.dataset, options=d.options, head="features",
                        input_size=b["input_size"], **_store_name(b)), deps=("data",), cost=4.0))
        g.add(Unit(f"head:{b['name']}", "head", S.head_unit, dict(model=b["name"], grid=a.probe_grid, seed=seed),
                   deps=("data", f"extract:{b['name']}"), cost=1.0))
        models.append(f"head:{b['name']}")
    for p in zp.pretrained:
        g.add(Unit(f"extract:{p['name']}", "extract", S.extract_unit,
                   dict(model=p["spec"], dataset=d.dataset, options=d.options, head="logits",
                        input_size=p["input_size"], **_store_name(p)), deps=("data",), cost=4.0))
        models.append(f"extract:{p['name']}")
    names = zoo_names(zp)
    shifted = SH.add_model_units(g, cfg, zp)   # analysis.shifts: every model on the shifted splits, before calibration
    g.add(Unit("calibrate", "calibrate", S.calibrate_unit, dict(fit_on=d.fit_on, models=names),
               deps=(*models, *shifted), main=True, cost=0.5,
               optional=(*(m for m in models if zp.base not in m), *shifted)))
    _add_pairs(g, zp.base, d.split, a.n_boot, seed, names, cfg.run.pairs_block)
    g.add(Unit("angles", "analyses", A.angles_unit,
               dict(split=d.split, groups=a.groups, n_boot=a.n_boot, seed=seed), deps=("pairs",), cost=0.5))
    g.add(Unit("greedy", "analyses", A.greedy_unit,
               dict(high_accuracy=cfg.base.high_accuracy, max_size=a.greedy_max_size), deps=("pairs",), cost=0.5))
    feats = []
    if a.features:
        for cat in FEATURE_CATEGORIES:
            u = g.add(Unit(f"features:{cat}", "analyses", A.features_unit,
                           dict(category=cat, fractions=a.feature_fractions, seeds=a.feature_seeds,
                                dims_steps=a.dims_steps, grid=a.probe_grid), deps=("pairs",), cost=1.5))
            feats.append(u.id)
    tr = []
    if a.transfer:
        kinds = {r["name"]: {"kind": "recipe"} for r in zp.recipes}
        kinds.update({b["name"]: {"kind": "backbone", "spec": b["spec"], "input_size": b["input_size"]}
                      for b in zp.backbones})
        u = g.add(Unit("transfer", "analyses", A.transfer_unit, dict(tasks=a.transfer, grid=a.probe_grid,
                                                                    kinds=kinds),
                       deps=("pairs", *[f"train:{r['name']}" for r in zp.recipes]), cost=3.0,
                       optional=tuple(f"train:{r['name']}" for r in zp.recipes if r["name"] != zp.base)))
        tr.append(u.id)
    g.add(Unit("findings", "analyses", A.findings_unit,
               dict(split=d.split, n_boot=a.n_boot, seed=seed, max_size=a.greedy_max_size,
                    high_accuracy=cfg.base.high_accuracy),
               deps=("pairs", "greedy", *feats, *tr), cost=0.5))
    gal = []
    if a.gallery > 0:
        gal.append(g.add(Unit("gallery", "analyses", G.gallery_unit,
                              dict(dataset=d.dataset, options=d.options, split=d.split, groups=a.groups,
                                   per_group=a.gallery, max_classes=MAX_CLASSES), deps=("pairs",), cost=0.5)).id)
    shift = SH.add_analysis_units(g, cfg, zp, shifted)   # pairs under shift, lines, CKA
    g.add(Unit("report", "report", A.report_unit, dict(title=cfg.study.description),
               deps=("pairs", "angles", "greedy", *feats, *tr, *gal, *shift, "findings"), cost=1.0,
               optional=(*gal, *shift)))
    return g


def pairs_blocks(base: str, names: list[str], block: int) -> list[list[str]]:
    """The models of each block of the pairs stage: the zoo's models but the base, in order, cut
    into runs of `block` (one empty block for a zoo of the base alone)."""
    others = [m for m in names if m != base]
    return [others[i : i + block] for i in range(0, len(others), block)] or [[]]


def _add_pairs(g: Graph, base: str, split: str, n_boot: int, seed: int, names: list[str], block: int) -> None:
    """The pairs stage: `pairs-base` (the base's engine summaries, computed once, after
    `pairs-inputs:base`: the base's content hash and temperature); per block k of `run.pairs_block`
    models, `pairs-inputs:<k>` (in the runner's process: the block's content hashes, temperatures
    and cards from the store's manifest) and `pairs-block:<k>` (the base against the block's models:
    code counts and model-table rows, with the base's summaries), then `pairs` merging them (the
    bootstrap over every pair at once). A changed model changes the output of its block's inputs
    unit only, so the other blocks stay cached."""
    blocks = pairs_blocks(base, names, block)
    # every inputs unit before the blocks: a unit in the runner's process waits until no unit is
    # running, so inputs units between the blocks would run the blocks one at a time
    g.add(Unit("pairs-inputs:base", "pairs", S.pairs_inputs_unit, dict(base=base, split=split, models=[]),
               deps=("calibrate",), main=True, cost=0.02))
    for k, models in enumerate(blocks):
        g.add(Unit(f"pairs-inputs:{k}", "pairs", S.pairs_inputs_unit, dict(base=base, split=split, models=models),
                   deps=("calibrate",), main=True, cost=0.02))
    g.add(Unit("pairs-base", "pairs", S.pairs_base_unit, dict(base=base, split=split), deps=("pairs-inputs:base",),
               cost=0.4 / (len(names) or 1)))
    ids = [g.add(Unit(f"pairs-block:{k}", "pairs", S.pairs_block_unit, dict(base=base, split=split, models=models),
                      deps=(f"pairs-inputs:{k}", "pairs-base"), cost=0.4 / len(blocks))).id
           for k, models in enumerate(blocks)]
    g.add(Unit("pairs", "pairs", S.pairs_merge_unit, dict(base=base, split=split, n_boot=n_boot, seed=seed),
               deps=tuple(ids), cost=0.1))


def run_study(spec=None, out="divergent-study", *, overrides: dict | None = None, executor: str | None = None,
              workers: int | None = None, progress: bool | None = None, force: tuple[str, ...] = (),
              echo=print, download: bool = False):
    """Run (or resume) a study: returns the runner's RunSummary; OUT/report.html is the report.

    download: fetch a named dataset the study reads (data.dataset, analysis.transfer) that is found
    nowhere on this machine (divergent.data.locate); without it a missing one stops the study here."""
    from .executors import make_executor
    from .progress import setup_logging
    from .runner import run_graph

    cfg = C.load(spec, overrides)
    from ..data.locate import find_sources

    find_sources([cfg.data.dataset, *cfg.analysis.transfer], download=download)  # before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "study.resolved.toml", C.dumps(cfg))
    log = setup_logging(out)
    from .environment import write as write_environment

    write_environment(out)   # the machine this run computes on (the report's footer)
    graph = plan(cfg)
    run = cfg.run
    ex = make_executor(executor or run.executor, workers or run.workers, address=run.address or None,
                       shared_fs=run.shared_fs, echo=echo)
    log.info("config %s -> %s; %d units in stages %s", cfg.origin, out, len(graph), graph.stages())
    prune_store(out / "store", zoo_names(zoo_plan(cfg)), log)
    t0 = time.monotonic()
    summary = run_graph(graph, out, config=cfg, executor=ex, progress=progress, torch_threads=run.torch_threads,
                        device=run.device, force=force, log=log)
    lines = [f"study '{cfg.study.name}' finished in {time.monotonic() - t0:.0f}s: "
             f"{len(summary.ran)} units ran, {len(summary.cached)} cached, {len(summary.failed)} failed, "
             f"{len(summary.skipped)} skipped"]
    for uid, err in summary.failed.items():
        lines.append(f"  FAILED {uid}: {err.splitlines()[0][:200]}")
    rep = out / "report.html"
    if rep.exists() and "report" in summary.results:
        lines.append(f"report: {rep.resolve()}")
        lines.append(f"tables: {(out / 'tables').resolve()}  figures: {(out / 'figures').resolve()}")
    lines.append(f"log: {(out / 'study.log').resolve()}; resolved config: {(out / 'study.resolved.toml').resolve()}")
    for ln in lines:
        log.info(ln)
        if echo:
            echo(ln)
    (out / ".study").mkdir(exist_ok=True)
    atomic_write_text(out / ".study" / "summary.json", json.dumps(
        {"ran": summary.ran, "cached": summary.cached, "failed": summary.failed, "skipped": summary.skipped,
         "seconds": summary.seconds}, indent=1))
    return summary
