"""Project-defined architectures that ``torch:`` specs may name without trusting any module.

An architecture is a ``torch.nn.Module`` class or a factory function returning one, taking
``num_classes=``. It is registered by decorating it with :func:`register` in a module of this
package listed in :data:`MODULES`; a spec names it ``torch:<module>:<name>@<checkpoint>``, short
(``torch:cifar_resnet:resnet20@w.th``) or with the full module path
(``torch:divergent.sources.archs.cifar_resnet:resnet20@w.th``). Only the modules in
``MODULES`` are ever imported for a registered name, and only decorated objects are called.
"""
from __future__ import annotations

import importlib
from typing import Callable

from ...errors import DivergentError

#: the modules of this package that hold registered architectures (plain data: read without importing)
MODULES: tuple[str, ...] = ("cifar_resnet",)

#: "<module>:<name>" -> the class or factory, filled by @register when a module above is imported
_REGISTRY: dict[str, Callable] = {}


def register(obj: Callable) -> Callable:
    """Decorator: make a class or factory of a module in ``MODULES`` nameable by ``torch:`` specs."""
    mod = getattr(obj, "__module__", "")
    short = mod[len(__name__) + 1:] if mod.startswith(__name__ + ".") else ""
    if short not in MODULES:
        raise RuntimeError(f"{mod}.{obj.__name__}: architectures are registered only in {__name__}.{{{', '.join(MODULES)}}}")
    _REGISTRY[f"{short}:{obj.__name__}"] = obj
    return obj


def arch_module(module: str) -> str | None:
    """The short name when ``module`` (``cifar_resnet`` or its full path) is an architecture module."""
    short = module[len(__name__) + 1:] if module.startswith(__name__ + ".") else module
    return short if short in MODULES else None


def get(short_module: str, name: str) -> Callable:
    """The registered class or factory ``<short_module>:<name>`` (imports only that project module)."""
    if short_module not in MODULES:
        raise DivergentError(f"{short_module!r} is not an architecture module", f"use one of {', '.join(MODULES)}")
    importlib.import_module(f"{__name__}.{short_module}")
    key = f"{short_module}:{name}"
    if key not in _REGISTRY:
        here = sorted(k for k in _REGISTRY if k.startswith(short_module + ":"))
        raise DivergentError(f"{key!r} is not a registered architecture",
                             f"registered in {short_module}: {', '.join(here) or '(none)'}")
    return _REGISTRY[key]


def names() -> list[str]:
    """Every registered ``<module>:<name>`` (imports the architecture modules)."""
    for m in MODULES:
        importlib.import_module(f"{__name__}.{m}")
    return sorted(_REGISTRY)
