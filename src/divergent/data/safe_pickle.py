"""The one restricted unpickler: numpy arrays, lists, dicts, strings and numbers, nothing else.

Pickles from other projects (CIFAR-10's python batches, imagenet-testbed's ``image_paths.pkl``)
are read with it: no global outside a short allow-list of numpy's array reconstructors is ever
looked up, so no code runs while loading.
"""
from __future__ import annotations

import io
import pickle

import numpy as np

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
}


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers (lists, tuples, dicts, strings, numbers) only."""

    what = "this file"

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"{self.what} may not contain {module}.{name}")
        if name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module == "_codecs":
            import codecs

            return codecs.encode
        try:
            import numpy._core.multiarray as ma
        except ImportError:  # numpy < 2
            import numpy.core.multiarray as ma
        return getattr(ma, name)


def restricted_loads(data: bytes, *, what: str = "this file", encoding: str = "ASCII"):
    """Unpickle `data` with :class:`ArrayUnpickler`; any refused global or malformed pickle raises
    (pickle.UnpicklingError or the parser's own error): the caller turns it into a DivergentError."""
    u = ArrayUnpickler(io.BytesIO(data), encoding=encoding)
    u.what = what
    return u.load()
