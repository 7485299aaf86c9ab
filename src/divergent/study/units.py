"""The study's unit registry: every unit function is registered by name, with a version.

A unit function is ``fn(ctx, **params) -> dict`` (see executors.UnitContext), registered with::

    @unit(name="pairs", version=1, depends=("divergent.analyses.pairs", "divergent.engine"),
          resources=Resources(memory_mb=2048))
    def pairs_unit(ctx, *, base, split, ...): ...

``resources`` is what one run needs (CPUs, a GPU when the study's device is cuda, a memory
estimate, what it reads from the study's directory): plain data an executor turns into its own
terms (the Ray executor: task options).

The plan names a unit by its function (or its registered name), checked when the unit is added
to the graph; workers receive the name and find the function in their own registry, which they
fill by importing the modules listed in :data:`MODULES` (plain data, sent with every call).

A unit's version is part of its cache key. Its scope is the unit's own code (the function and
the module-level names of its module it uses, transitively) and the modules and packages it
declares in ``depends``: when any of them changes, bump the version, so that cached results of
the old code are not reused. ``tests/study/unit_versions.json`` holds a normalised-AST hash of
each unit's scope (docstrings, comments and formatting do not count) and a test fails when a hash
changes while the version does not. Regenerate the table with::

    python scripts/unit_versions.py --update-table tests/study/unit_versions.json
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .._files import atomic_write_text, sha256_bytes
from ..errors import DivergentError, suggest

#: the modules that register the study's units; workers import these to fill their registry
MODULES: tuple[str, ...] = ("divergent.study.stages", "divergent.study.analysis_stages",
                            "divergent.study.gallery_stages", "divergent.study.shift_stages")
#: the command that rewrites the checked-in table of unit-scope hashes
UPDATE_COMMAND = "python scripts/unit_versions.py --update-table tests/study/unit_versions.json"


#: what a unit may read from the study's output directory besides its dependencies' outputs:
#: "store" (the committed prediction store), "store-models" (the part of it that some models'
#: reads need: see :func:`store_reads`) and "records" (the finished units' records)
READS = ("store", "store-models", "records")
#: the parameters that name the models a "store-models" unit reads: a name each, or a list of names
MODEL_PARAMS = ("model", "base", "models")
#: the parameter that names the one split whose arrays a "store-models" unit reads
SPLIT_PARAM = "split"


def store_reads(params: dict) -> tuple[list[str], str | None]:
    """What a unit with ``reads=("store-models",)`` reads of the store, from its parameters:
    (the models named by its `model`, `base` (a name each) and `models` (a list of names)
    parameters, in that order; the split named by its `split` parameter, None when it has none).

    Such a unit reads the store's metadata (its manifest: cards, calibration, every split's class
    names; every split's labels and ids) and the arrays of those models only: on that split, or
    on every split when it has no `split` parameter. On a node without the driver's disk it is
    shipped exactly that; reading another model's arrays there is an error naming the model."""
    names: list[str] = []
    for key in MODEL_PARAMS:
        v = params.get(key)
        for m in ([] if v is None else list(v) if isinstance(v, (list, tuple)) else [v]):
            if not isinstance(m, str):
                raise DivergentError(f"unit parameter {key}={v!r} does not name models",
                                     "give a model name, or a list of model names")
            if m not in names:
                names.append(m)
    split = params.get(SPLIT_PARAM)
    if split is not None and not isinstance(split, str):
        raise DivergentError(f"unit parameter {SPLIT_PARAM}={split!r} does not name a split", "give a split name")
    return names, split


@dataclass(frozen=True)
class Resources:
    """What one run of a unit needs, as plain data (an executor turns it into its own terms; the
    Ray executor into task options, so a GPU unit is only placed on a node with a GPU).

    ``gpu`` means the unit computes on the study's device: it asks for one GPU when that device is
    ``cuda``, none otherwise. ``memory_mb`` is an estimate of its peak memory (Ray reserves it on the
    node it picks). ``reads`` names what it opens under the study's output directory besides its
    dependencies' outputs (:data:`READS`); a unit on a node without the driver's disk gets exactly
    that shipped to it. A unit that reads a few models of the store declares "store-models" instead
    of "store": it then gets the store's metadata and the arrays of the models its parameters name
    (:func:`store_reads`), not the whole store."""

    cpus: float = 1.0
    gpu: bool = False
    memory_mb: int = 1024
    reads: tuple[str, ...] = ("store",)

    def __post_init__(self):
        if not (isinstance(self.cpus, (int, float)) and self.cpus > 0):
            raise DivergentError(f"unit resources: cpus={self.cpus!r}", "give a number > 0")
        if not (isinstance(self.memory_mb, int) and self.memory_mb > 0):
            raise DivergentError(f"unit resources: memory_mb={self.memory_mb!r}", "give an integer > 0 (MiB)")
        bad = [r for r in self.reads if r not in READS]
        if bad:
            raise DivergentError(f"unit resources: reads={self.reads!r}", f"name only {', '.join(READS)}")
        if "store" in self.reads and "store-models" in self.reads:
            raise DivergentError(f"unit resources: reads={self.reads!r} names the whole store and some of its models",
                                 "keep one: \"store\" (every model) or \"store-models\" (the models its parameters name)")

    def gpus(self, device: str) -> int:
        """GPUs to reserve on the study's device."""
        return 1 if self.gpu and device == "cuda" else 0


@dataclass(frozen=True)
class UnitSpec:
    """A registered unit: its name, version, where its function lives, what its code depends on and
    what one run needs."""

    name: str
    version: int
    module: str                    # the module that defines (and registers) the function
    function: str                  # the function's name in that module
    depends: tuple[str, ...] = ()  # modules or packages whose code is part of the unit's scope
    resources: Resources = Resources()


#: registered name -> spec (plain data) and registered name -> function
REGISTRY: dict[str, UnitSpec] = {}
_FUNCTIONS: dict[str, Callable] = {}


def unit(*, name: str, version: int, depends: tuple[str, ...] = (), resources: Resources | None = None):
    """Register ``fn(ctx, **params) -> dict`` as the study unit `name` (the function is returned
    unchanged); `resources` says what one run needs (default: :class:`Resources`())."""
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DivergentError(f"unit {name!r} has version {version!r}", "give an integer version >= 1")
    depends = tuple(depends)
    resources = Resources() if resources is None else resources
    if not isinstance(resources, Resources):
        raise DivergentError(f"unit {name!r}: resources={resources!r}",
                             "give divergent.study.units.Resources(cpus=..., gpu=..., memory_mb=...)")

    def register(fn: Callable) -> Callable:
        if "store-models" in resources.reads:
            import inspect

            if not set(MODEL_PARAMS) & set(inspect.signature(fn).parameters):
                raise DivergentError(f"unit {name!r} reads \"store-models\" but has no parameter that names models",
                                     f"give it one of the parameters {', '.join(MODEL_PARAMS)}, or read \"store\"")
        spec = UnitSpec(name, version, fn.__module__, fn.__name__, depends, resources)
        old = REGISTRY.get(name)
        if old is not None and (old.module, old.function) != (spec.module, spec.function):
            raise DivergentError(f"unit name {name!r} is registered twice: {old.module}.{old.function} and "
                                 f"{spec.module}.{spec.function}", "give one of them another name")
        REGISTRY[name] = spec
        _FUNCTIONS[name] = fn
        fn.unit_name = name
        return fn

    return register


def modules() -> tuple[str, ...]:
    """The modules that register units (read at call time, so an added module is seen)."""
    return MODULES


def add_modules(*names: str) -> None:
    """Add modules that register units (e.g. a test's toy units) and import them now."""
    global MODULES
    MODULES = MODULES + tuple(n for n in names if n not in MODULES)
    load(names)


def load(names: tuple[str, ...] | list[str] | None = None) -> None:
    """Import the modules that register units (the default: :data:`MODULES`)."""
    for m in (MODULES if names is None else names):
        if m not in sys.modules:
            importlib.import_module(m)


def name_of(fn_or_name) -> str:
    """The registered name of a unit function, or the name itself."""
    if isinstance(fn_or_name, str):
        return fn_or_name
    name = getattr(fn_or_name, "unit_name", None)
    if name is None:
        what = getattr(fn_or_name, "__qualname__", repr(fn_or_name))
        raise DivergentError(f"{what} is not a registered study unit",
                             "decorate it with @divergent.study.units.unit(name=..., version=...)")
    return name


def spec(fn_or_name) -> UnitSpec:
    """The registered unit (a DivergentError naming close names when it is unknown, or when the
    module that registers it is not in MODULES, where workers would not find it)."""
    name = name_of(fn_or_name)
    if name not in REGISTRY:
        load()
    if name not in REGISTRY:
        raise DivergentError(f"unknown study unit {name!r}", suggest(name, REGISTRY, "unit"))
    s = REGISTRY[name]
    if s.module not in modules():
        raise DivergentError(f"study unit {name!r} is registered by module {s.module!r}, which is not in "
                             "divergent.study.units.MODULES (worker processes would not find it)",
                             f"add it: divergent.study.units.add_modules({s.module!r})")
    return s


def function(name: str, modules_: tuple[str, ...] | list[str] = ()) -> Callable:
    """The function of a registered unit, after importing the registering modules (in a worker)."""
    load(modules_ or None)
    if name not in _FUNCTIONS:
        raise DivergentError(f"unknown study unit {name!r}", suggest(name, _FUNCTIONS, "unit"))
    return _FUNCTIONS[name]


# ------------------------------------------------------------------ code hashes (the version table)

def _normal(node) -> str:
    """A dump of an AST node that ignores positions and empty fields (stable across Python versions)."""
    if isinstance(node, ast.AST):
        parts = []
        for f in node._fields:
            v = getattr(node, f, None)
            if v is None or v == [] or f == "type_comment":
                continue
            parts.append(f"{f}={_normal(v)}")
        return f"{type(node).__name__}({','.join(parts)})"
    if isinstance(node, list):
        return "[" + ",".join(_normal(x) for x in node) + "]"
    return repr(node)


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for n in ast.walk(tree):
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body:
            first = n.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                n.body = n.body[1:] or [ast.Pass()]
    return tree


def _source_files(module: str) -> dict[str, Path]:
    """module name -> file, for a module or every module of a package (found without importing it)."""
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.origin:
        raise DivergentError(f"unit dependency {module!r} is not an importable module",
                             "name a module or package in the unit's depends=(...)")
    if not found.submodule_search_locations:
        return {module: Path(found.origin)}
    out = {}
    for root in found.submodule_search_locations:
        for p in sorted(Path(root).rglob("*.py")):
            rel = p.relative_to(root).with_suffix("")
            parts = [x for x in rel.parts if x != "__init__"]
            out[".".join([module, *parts])] = p
    return out


def module_hash(path: Path) -> str:
    """sha256 of the module's normalised AST (without docstrings; comments and layout never count)."""
    return sha256_bytes(_normal(_strip_docstrings(ast.parse(Path(path).read_text(encoding="utf-8")))).encode())


def _top_level(tree: ast.Module) -> dict[str, list[ast.AST]]:
    names: dict[str, list[ast.AST]] = {}
    for n in tree.body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.setdefault(n.name, []).append(n)
        elif isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = n.targets if isinstance(n, ast.Assign) else [n.target]
            for t in targets:
                for x in ast.walk(t):
                    if isinstance(x, ast.Name):
                        names.setdefault(x.id, []).append(n)
    return names


def function_hash(path: Path, function: str) -> str:
    """sha256 of a unit function (without its decorators and docstrings) and of the module-level
    functions, classes and constants of its module that it uses, transitively."""
    tree = _strip_docstrings(ast.parse(Path(path).read_text(encoding="utf-8")))
    top = _top_level(tree)
    if function not in top:
        raise DivergentError(f"function {function!r} not found in {path}")
    seen, todo, parts = set(), [function], []
    while todo:
        name = todo.pop()
        if name in seen or name not in top:
            continue
        seen.add(name)
        for node in top[name]:
            if name == function and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                node.decorator_list = []   # the version and depends are recorded beside the hash
            parts.append(f"{name}:{_normal(node)}")
            todo.extend(x.id for x in ast.walk(node) if isinstance(x, ast.Name))
    return sha256_bytes("\n".join(sorted(parts)).encode())


def scope_hashes(s: UnitSpec) -> dict[str, str]:
    """The unit's scope: its own code and every module of its declared dependencies, each hashed."""
    own = _source_files(s.module)[s.module]
    out = {f"{s.module}.{s.function}": function_hash(own, s.function)}
    for dep in s.depends:
        for mod, path in _source_files(dep).items():
            out[mod] = module_hash(path)
    return dict(sorted(out.items()))


def version_table() -> dict[str, dict]:
    """unit name -> {version, code: {scope entry: hash}} for every unit the study's modules register."""
    load()
    return {name: {"version": s.version, "code": scope_hashes(s)}
            for name, s in sorted(REGISTRY.items()) if s.module in MODULES}


def check_table(path: Path) -> list[str]:
    """What differs between the registered units and the checked-in table (empty: nothing)."""
    path = Path(path)
    regen = f"regenerate the table: {UPDATE_COMMAND}"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return [f"cannot read the unit version table {path}: {exc}; {regen}"]
    now = version_table()
    problems = []
    for name in sorted(set(now) | set(saved)):
        if name not in saved:
            problems.append(f"unit {name!r} is not in the table; {regen}")
            continue
        if name not in now:
            problems.append(f"the table lists unit {name!r}, which is no longer registered; {regen}")
            continue
        a, b = saved[name], now[name]
        changed = sorted(k for k in set(a["code"]) | set(b["code"]) if a["code"].get(k) != b["code"].get(k))
        if changed and a["version"] == b["version"]:
            s = REGISTRY[name]
            problems.append(f"the code of unit {name!r} changed ({', '.join(changed)}) but its version is still "
                            f"{b['version']}: cached results of the old code would be reused. Bump version= in "
                            f"@unit(name={name!r}, ...) ({s.module}.{s.function}) and {regen}")
        elif changed or a["version"] != b["version"]:
            problems.append(f"unit {name!r}: version {a['version']} -> {b['version']} is not in the table; {regen}")
    return problems


def write_table(path: Path) -> None:
    atomic_write_text(Path(path), json.dumps(version_table(), indent=1, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="scripts/unit_versions.py",
                                 description="Check or rewrite the table of unit versions and code hashes.")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--update-table", metavar="JSON", help="rewrite the table from the code")
    g.add_argument("--check", metavar="JSON", help="list the units whose code changed without a version bump")
    args = ap.parse_args(argv)
    if args.update_table:
        write_table(Path(args.update_table))
        print(f"wrote {args.update_table} ({len(version_table())} units)")
        return 0
    problems = check_table(Path(args.check))
    for p in problems:
        print(p)
    return 1 if problems else 0

