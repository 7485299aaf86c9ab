"""Study configuration: the TOML schema as frozen per-section dataclasses (each key's default and
check in one place), validation with errors naming the key and allowed values, built-in presets,
and the resolved config saved next to the outputs."""
from __future__ import annotations

import copy
import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..conventions import HOLDOUT, N_BOOT, TEST
from ..errors import DivergentError, suggest

PRESETS = ("fashion-mnist", "fashion-mnist-quick", "cifar10")
DEFAULT_PRESET = "fashion-mnist"
EXECUTORS = ("local", "inline", "ray")
#: downstream tasks: single-label (top-1 accuracy) and multi-label 2x2 mosaics (VOC 2007 11-point mAP)
TRANSFER_TASKS = ("digits", "fashion-mnist", "digits-mosaic", "fashion-mnist-mosaic")
GROUPS = ("builtin", "none")

_ANY = object()


def _key(default, check) -> Any:
    """A config key: its one default and its check (a type, a tuple of allowed values, or _ANY)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"check": check})
    return field(default=default, metadata={"check": check})


@dataclass(frozen=True)
class StudySection:
    name: str = _key("study", str)
    description: str = _key("", str)
    seed: int = _key(0, int)


@dataclass(frozen=True)
class DataSection:
    dataset: str = _key("fashion-mnist", str)          # a divergent.data.open_dataset source
    split: str = _key(TEST, (TEST,))
    fit_on: str = _key(HOLDOUT, (HOLDOUT,))
    train_subset: int = _key(5000, int)                # train images whose embeddings feed heads and probes
    options: dict = _key({}, dict)                     # extra open_dataset options


@dataclass(frozen=True)
class ZooSection:
    recipes: str | list = _key("fashion-mnist", _ANY)  # a train.zoo name, or a list of recipe names / tables
    only: list = _key([], list)                        # keep only these recipe names (short or full)
    backbones: list = _key([], list)                   # frozen models: extract embeddings, fit a linear head
    pretrained: list = _key([], list)                  # models whose own head fits the label space
    input_size: int = _key(0, int)                     # frozen backbones' input resolution (0: the model's own)
    epochs_scale: float = _key(1.0, float)            # every recipe's epochs times this (rounded, at least 1)
    seed: int = _key(0, int)                           # zoo seed: another draw of the same zoo (plan.ZOO_SEED_STRIDE)


@dataclass(frozen=True)
class BaseSection:
    model: str = _key("", str)                         # store name of the base model ('' = the zoo's base recipe)
    high_accuracy: str = _key("", str)                 # base of the greedy experiment ('' = the base)


@dataclass(frozen=True)
class AnalysisSection:
    acc_band: str | list = _key("auto", _ANY)          # 'auto' (base accuracy +- band_halfwidth) or [lo, hi]
    band_halfwidth: float = _key(0.05, float)
    n_boot: int = _key(N_BOOT, int)
    groups: str = _key("builtin", _ANY)                # 'builtin', 'none' or a path to a group file
    greedy_max_size: int = _key(6, int)
    features: bool = _key(True, bool)
    feature_fractions: list = _key([0.0, 0.25, 0.5, 0.75, 1.0], list)
    feature_seeds: list = _key([0, 1], list)
    dims_steps: list = _key([8, 16, 32, 64, 128], list)
    dims_target: str | float = _key("auto", _ANY)
    probe_grid: list = _key([1e-5, 1e-4, 1e-3, 1e-2], list)
    transfer: list = _key(["digits"], list)
    gallery: int = _key(6, int)                        # thumbnails per side and class group per pair (0: none)
    shifts: list = _key([], list)                      # shifted copies of the split, e.g. ["gaussian_noise:3"] (docs/shift.md)


@dataclass(frozen=True)
class RunSection:
    executor: str = _key("local", EXECUTORS)
    workers: int = _key(2, int)
    device: str = _key("cpu", ("cpu", "auto", "cuda"))
    torch_threads: int = _key(1, int)
    trusted_modules: list = _key([], list)             # modules torch: specs need; each must be confirmed by the user
    address: str = _key("", str)                       # ray: the cluster to join ('' = --address, else RAY_ADDRESS, else a local Ray)
    shared_fs: bool = _key(False, bool)                # ray: every node sees the output directory under the same path
    pairs_block: int = _key(64, int)                   # the pairs stage: the base + up to this many models per unit


@dataclass(frozen=True)
class StudyConfig:
    """A validated study config: one frozen dataclass per TOML section (``cfg.analysis.n_boot``)."""

    study: StudySection = field(default_factory=StudySection)
    data: DataSection = field(default_factory=DataSection)
    zoo: ZooSection = field(default_factory=ZooSection)
    base: BaseSection = field(default_factory=BaseSection)
    analysis: AnalysisSection = field(default_factory=AnalysisSection)
    run: RunSection = field(default_factory=RunSection)
    #: where it came from (a path, a preset's file, or "dict"); not part of the config's value
    origin: str = field(default="", compare=False)


#: TOML section -> its dataclass, in the order of the resolved file
SECTIONS: dict[str, type] = {k: t for k, t in typing.get_type_hints(StudyConfig).items() if k != "origin"}


def keys(section: str) -> dict[str, dataclasses.Field]:
    """The keys of a section, in order."""
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _bad(key: str, value, allowed: str) -> DivergentError:
    return DivergentError(f"config key {key!r} has invalid value {value!r}", f"allowed: {allowed}")


def _check_value(key: str, value, check) -> Any:
    if check is _ANY:
        return value
    if isinstance(check, tuple):
        if value not in check:
            raise DivergentError(f"config key {key!r} has invalid value {value!r}",
                                 f"allowed values: {', '.join(map(repr, check))} ({suggest(str(value), map(str, check), 'value')})")
        return value
    if check is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if check is int and isinstance(value, bool) or not isinstance(value, check):
        raise _bad(key, value, f"a {check.__name__}")
    return value


def validate(raw: dict) -> StudyConfig:
    """Fill defaults and check every key; errors name the bad key and the allowed keys or values."""
    if not isinstance(raw, dict):
        raise DivergentError("a study config must be a TOML table")
    out: dict[str, dict] = {}
    bad_sections = sorted(set(raw) - set(SECTIONS))
    if bad_sections:
        s = bad_sections[0]
        raise DivergentError(f"unknown config section [{s}]",
                             f"allowed sections: {', '.join(SECTIONS)} ({suggest(s, SECTIONS, 'section')})")
    for section in SECTIONS:
        known = keys(section)
        given = raw.get(section, {})
        if not isinstance(given, dict):
            raise DivergentError(f"config section [{section}] must be a table, not {type(given).__name__}")
        bad = sorted(set(given) - set(known))
        if bad:
            k = bad[0]
            raise DivergentError(f"unknown config key '{section}.{k}'",
                                 f"allowed keys in [{section}]: {', '.join(known)} ({suggest(k, known, 'key')})")
        out[section] = {k: _check_value(f"{section}.{k}", given[k], f.metadata["check"]) if k in given else _default(f)
                        for k, f in known.items()}
    _cross_checks(out)
    return StudyConfig(**{section: SECTIONS[section](**values) for section, values in out.items()})


def _cross_checks(c: dict) -> None:
    a = c["analysis"]
    band = a["acc_band"]
    if band != "auto":
        if not (isinstance(band, list) and len(band) == 2 and all(isinstance(v, (int, float)) for v in band)):
            raise _bad("analysis.acc_band", band, "'auto' or [LO, HI] (fractions, e.g. [0.85, 0.92], or percents)")
        lo, hi = (float(v) / 100 if max(band) > 1 else float(v) for v in band)
        if not 0 <= lo < hi <= 1:
            raise _bad("analysis.acc_band", band, "LO < HI within [0, 1] (or [0, 100] as percents)")
        a["acc_band"] = [lo, hi]
    if not 0 < a["band_halfwidth"] < 1:
        raise _bad("analysis.band_halfwidth", a["band_halfwidth"], "a fraction in (0, 1), e.g. 0.05")
    if a["n_boot"] < 0:
        raise _bad("analysis.n_boot", a["n_boot"], f"an integer >= 0 ({N_BOOT} recommended)")
    if a["groups"] not in GROUPS and not isinstance(a["groups"], str):
        raise _bad("analysis.groups", a["groups"], "'builtin', 'none' or a path to a group file")
    for t in a["transfer"]:
        if t not in TRANSFER_TASKS:
            raise _bad("analysis.transfer", t, ", ".join(TRANSFER_TASKS))
    for f in a["feature_fractions"]:
        if not isinstance(f, (int, float)) or not 0 <= f <= 1:
            raise _bad("analysis.feature_fractions", f, "fractions in [0, 1]")
    if a["dims_target"] != "auto" and not (isinstance(a["dims_target"], (int, float)) and 0 < a["dims_target"] <= 1):
        raise _bad("analysis.dims_target", a["dims_target"], "'auto' or an accuracy in (0, 1]")
    if a["gallery"] < 0:
        raise _bad("analysis.gallery", a["gallery"], "an integer >= 0 (thumbnails per side and class group; 0: no gallery)")
    if a["shifts"]:
        from ..data.shift import parse_shifts

        try:
            parse_shifts(a["shifts"])
        except DivergentError as exc:
            raise DivergentError(f"config key 'analysis.shifts': {exc.problem}", exc.fix) from None
    if a["greedy_max_size"] < 1:
        raise _bad("analysis.greedy_max_size", a["greedy_max_size"], "an integer >= 1")
    if c["run"]["workers"] < 1:
        raise _bad("run.workers", c["run"]["workers"], "an integer >= 1")
    if c["run"]["pairs_block"] < 1:
        raise _bad("run.pairs_block", c["run"]["pairs_block"], "an integer >= 1 (models per pairs unit, besides the base)")
    if c["data"]["train_subset"] < 10:
        raise _bad("data.train_subset", c["data"]["train_subset"], "an integer >= 10")
    r = c["zoo"]["recipes"]
    if not isinstance(r, (str, list)):
        raise _bad("zoo.recipes", r, "a zoo name (fashion-mnist, fashion-mnist-quick, cifar10) or a list of recipes")
    for k in ("backbones", "pretrained"):
        for m in c["zoo"][k]:
            if not isinstance(m, (str, dict)):
                raise _bad(f"zoo.{k}", m, "model names (strings) or tables with a 'model' key")
    _check_trust(c["run"]["trusted_modules"])


def _check_trust(asked: list) -> None:
    """A study file may say which modules its ``torch:`` specs need, but cannot grant that trust:
    whoever runs the study confirms each one (``--trust-module`` / ``DIVERGENT_TRUST_MODULES``)."""
    from ..sources.registry import check_module_name, is_trusted

    for m in asked:
        check_module_name(m, "config key 'run.trusted_modules': entry")
    unconfirmed = [m for m in asked if not is_trusted(m)]
    if unconfirmed:
        flags = " ".join(f"--trust-module {m}" for m in unconfirmed)
        raise DivergentError(
            f"the study config asks to trust the Python module(s) {unconfirmed} (config key 'run.trusted_modules'); "
            "a study file cannot grant that itself, since importing a module runs its code",
            f"if you trust that code, rerun with {flags} (or set DIVERGENT_TRUST_MODULES={','.join(unconfirmed)}); "
            "otherwise remove the models that need it")


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise DivergentError(f"unknown study preset {name!r}",
                             f"presets: {', '.join(PRESETS)} ({suggest(name, PRESETS, 'preset')}); or pass a .toml file")
    return Path(str(resources.files("divergent") / "presets" / f"{name}.toml"))


def load(spec: str | Path | dict | None = None, overrides: dict | None = None) -> StudyConfig:
    """A validated config from a preset name, a TOML path, or a dict (None: the default preset)."""
    if isinstance(spec, dict):
        raw = copy.deepcopy(spec)
        origin = "dict"
    else:
        spec = DEFAULT_PRESET if spec is None else str(spec)
        p = Path(spec)
        if spec in PRESETS and not p.exists():
            p = preset_path(spec)
        elif not p.exists():
            if p.suffix == ".toml":
                raise DivergentError(f"config file {spec!r} does not exist", "check the path")
            preset_path(spec)  # raises with the preset list
        if not p.is_file():
            raise DivergentError(f"config {spec!r} is not a file", "pass a preset name or a .toml file")
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise DivergentError(f"config {p} is not valid TOML: {exc}", "fix the syntax at the line shown") from exc
        except OSError as exc:
            raise DivergentError(f"cannot read config {p}: {exc}", "check the path and its permissions") from exc
        origin = str(p)
    for dotted, v in (overrides or {}).items():
        sec, _, key = dotted.partition(".")
        table = raw.setdefault(sec, {})
        if not isinstance(table, dict) or not key:
            raise DivergentError(f"cannot override {dotted!r}", "write SECTION.KEY=VALUE, e.g. analysis.n_boot=200, "
                                 f"where [{sec}] is a table")
        table[key] = v
    return dataclasses.replace(validate(raw), origin=origin)


def dumps(cfg: StudyConfig) -> str:
    """The resolved config as TOML (written to OUT/study.resolved.toml)."""
    lines = [f"# resolved study config (from {cfg.origin or '?'})"]
    for sec in SECTIONS:
        lines.append(f"\n[{sec}]")
        values = getattr(cfg, sec)
        for k in keys(sec):
            lines.append(f"{k} = {_toml(getattr(values, k))}")
    return "\n".join(lines) + "\n"


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + "}"
    if v is None:
        return '""'
    return _toml(str(v))
