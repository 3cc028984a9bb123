"""Write ``cupy_names.json``: the names and signatures that real CuPy exposes.

Run with a Python that has the real ``cupy-cuda12x`` wheel (it imports without a GPU)::

    python3 -m venv /tmp/venv_cupy && /tmp/venv_cupy/bin/pip install cupy-cuda12x numpy
    /tmp/venv_cupy/bin/python tests/strict_cupy/make_names.py      # rewrites tests/strict_cupy/cupy_names.json

The strict stand-in (:mod:`strict_cupy`) exposes only names listed here and binds calls
against the signatures recorded here; ``tests/test_strict_cupy.py`` regenerates the
table with :func:`describe` and compares when real CuPy is importable.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import sys
import types
from pathlib import Path

OUT = Path(__file__).with_name("cupy_names.json")

# the namespaces the stand-in imitates: dotted path below ``cupy`` -> how to list it
NAMESPACES = ("", "cuda", "cuda.runtime", "cuda.Stream", "cuda.Device", "cuda.Event", "ndarray", "ufunc")


def _doc_signature(obj) -> list | None:
    """The signature on a Cython method's first docstring line (``_ndarray_base.get(self, stream=None, ...)``)."""
    first = (getattr(obj, "__doc__", None) or "").strip().splitlines()[:1]
    match = re.match(r"^[\w.]+\((.*)\)", first[0]) if first else None
    if not match:
        return None
    try:
        args = ast.parse(f"def f({match.group(1)}): pass").body[0].args
    except SyntaxError:
        return None
    params = [[a.arg, "POSITIONAL_ONLY", False] for a in args.posonlyargs]
    params += [[a.arg, "POSITIONAL_OR_KEYWORD", False] for a in args.args]
    for entry, _ in zip(reversed(params), reversed(args.defaults)):
        entry[2] = True
    if args.vararg:
        params.append([args.vararg.arg, "VAR_POSITIONAL", False])
    params += [[a.arg, "KEYWORD_ONLY", d is not None] for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    if args.kwarg:
        params.append([args.kwarg.arg, "VAR_KEYWORD", False])
    return [p for p in params if p[0] != "self"]


def _signature(obj) -> list | None:
    """[[name, kind, has_default], ...] of ``obj``'s signature (``self`` left out), or None where
    neither inspect nor the docstring tells it."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return _doc_signature(obj)
    return [[p.name, p.kind.name, p.default is not inspect.Parameter.empty] for p in sig.parameters.values()
            if p.name != "self"]


def _kind(obj) -> str:
    if isinstance(obj, types.ModuleType):
        return "module"
    if isinstance(obj, type):
        return "class"
    if type(obj).__name__ in ("ufunc", "_GUFunc"):
        return "ufunc"
    if callable(obj):
        return "function"
    return "constant"


def _resolve(cupy, path: str):
    obj = cupy
    for part in filter(None, path.split(".")):
        obj = getattr(obj, part)
    return obj


def describe(cupy, numpy) -> dict:
    """The table: version and, per namespace, ``{name: {"kind", "signature", "numpy"}}``.

    ``"numpy": true`` marks an object that *is* NumPy's (dtypes, ``finfo``, ...);
    ``ufunc`` lists the attributes of ``cupy.add`` (a ufunc's methods).
    """
    table = {"cupy_version": cupy.__version__, "namespaces": {}}
    for path in NAMESPACES:
        ns = cupy.add if path == "ufunc" else _resolve(cupy, path)
        entries = {}
        for name in sorted(dir(ns)):
            if name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
                continue
            try:
                obj = getattr(ns, name)
            except AttributeError:  # a property of the class, read on the class
                continue
            entry = {"kind": _kind(obj)}
            if entry["kind"] in ("function", "class") and not name.startswith("__"):
                entry["signature"] = _signature(obj)
            if path == "" and getattr(numpy, name, None) is obj and not isinstance(obj, (int, float, str)):
                entry["numpy"] = True
            if isinstance(ns, type):  # a class: properties are data descriptors, not methods
                raw = inspect.getattr_static(ns, name, None)
                if raw is not None and not callable(raw) and hasattr(raw, "__get__"):
                    entry["kind"] = "property"
            entries[name] = entry
        table["namespaces"][path] = entries
    return table


def main() -> int:
    import cupy  # noqa: PLC0415
    import numpy  # noqa: PLC0415

    table = describe(cupy, numpy)
    OUT.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT.name}: CuPy {cupy.__version__}, {sum(len(v) for v in table['namespaces'].values())} names")
    return 0


if __name__ == "__main__":
    sys.exit(main())
