#!/usr/bin/env python3
"""Write a compact JSON snapshot of a TensorRT Python module's API surface (names and signatures only).

    python tools/tensorrt_api_snapshot.py [--module tensorrt|tensorrt_bindings] -o tests/data/tensorrt-api-10.3.json

The module is the real ``tensorrt`` where TensorRT is installed, or NVIDIA's bindings wheel made
importable without TensorRT's libraries (``tensorrt-bindings.sh``, see docs/tensorrt.md)::

    LD_LIBRARY_PATH=.trt-bindings/lib10 PYTHONPATH=.trt-bindings/10.3.0 \\
        python3.11 tools/tensorrt_api_snapshot.py -o tests/data/tensorrt-api-10.3.json

What is recorded (no docstrings):

* ``classes``: every class of the module (nested classes such as ``ILogger.Severity`` under their
  dotted name) with ``bases``; ``init`` and ``methods`` as lists of overloads, each overload
  ``{"params": [[name, type, has_default], ...], "returns": type}`` parsed from the pybind11
  signature in ``__doc__`` (``self`` dropped; ``static`` marks static methods); ``properties``
  ``{name: {"type": type, "settable": bool}}``; ``members`` ``{name: int}`` for enums;
  ``attributes`` ``{name: type}`` for class-level values (e.g. ``Logger.WARNING``);
  ``implicit_from``: Python values the type converts from implicitly (probed, e.g. Dims <- tuple).
* ``functions``: module-level functions (pybind11 or Python), same overload format.
* ``constants``: module-level enum values as ``[type, member]`` (``trt.int32`` -> ``["DataType", "INT32"]``).
* ``version``.

Types are the pybind11 type strings with the module prefix removed (``ITimingCache``,
``ILogger.Severity``, ``int``, ``typing.SupportsInt``, ``List[int]`` ...).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import re
import sys
from typing import Any

_PREFIXES = ("tensorrt_rtx_bindings.tensorrt_rtx.", "tensorrt_rtx_bindings.", "tensorrt_rtx.", "tensorrt_bindings.tensorrt.",
             "tensorrt_bindings.", "tensorrt.tensorrt.", "tensorrt.")
_PAIRS = {"(": ")", "[": "]", "<": ">", "{": "}"}


def clean_type(text: str) -> str:
    text = text.strip()
    for prefix in _PREFIXES:
        text = text.replace(prefix, "")
    return text


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets and quotes (pybind11 defaults may contain commas)."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in _PAIRS:
            depth += 1
        elif ch in _PAIRS.values() and depth:
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _match_paren(text: str, open_at: int) -> int:
    depth, quote = 0, None
    for i in range(open_at, len(text)):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced signature: {text[:120]}")


def parse_signature(line: str, name: str) -> dict[str, Any] | None:
    """``name(self: X, a: int, b: bool = False) -> R`` -> overload record; None if not a signature."""
    line = line.strip()
    if not line.startswith(name + "("):
        return None
    close = _match_paren(line, len(name))
    inner = line[len(name) + 1:close]
    rest = line[close + 1:].strip()
    returns = clean_type(rest[2:]) if rest.startswith("->") else "None"
    params, static = [], True
    for index, part in enumerate(_split_top(inner)):
        if part in ("*", "/"):
            params.append([part, "", False])
            continue
        pname, colon, annotated = part.partition(":")
        ptype, eq, _ = (annotated if colon else pname).partition(" = ")
        if not colon:
            pname, ptype = ptype, ""
        has_default = bool(eq)
        pname = pname.strip()
        if index == 0 and pname == "self":
            static = False
            continue
        params.append([pname, clean_type(ptype), has_default])
    return {"params": params, "returns": returns, **({"static": True} if static else {})}


def overloads_from_doc(doc: str | None, name: str) -> list[dict[str, Any]]:
    if not doc:
        return []
    lines = doc.splitlines()
    first = lines[0].strip() if lines else ""
    if first.startswith(f"{name}(*args, **kwargs)") and len(lines) > 1 and lines[1].strip() == "Overloaded function.":
        found = []
        for line in lines[2:]:
            m = re.match(r"\s*\d+\.\s+(.*)$", line)
            if m:
                sig = parse_signature(m.group(1), name)
                if sig is not None:
                    found.append(sig)
        return found
    sig = parse_signature(first, name)
    return [sig] if sig is not None else []


def python_overloads(func: Any) -> list[dict[str, Any]]:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return []
    params = []
    for i, p in enumerate(sig.parameters.values()):
        if i == 0 and p.name in ("self", "this"):
            continue
        if p.kind is p.VAR_POSITIONAL:
            params.append(["*" + p.name, "", True])
        elif p.kind is p.VAR_KEYWORD:
            params.append(["**" + p.name, "", True])
        else:
            params.append([p.name, "", p.default is not p.empty])
    return [{"params": params, "returns": "", "python": True}]


def _is_enum(cls: type) -> bool:
    return isinstance(getattr(cls, "__members__", None), dict)


def describe_class(cls: type, qualname: str, module: Any, classes: dict[str, Any]) -> None:
    record: dict[str, Any] = {"bases": [clean_type(f"{b.__module__}.{b.__qualname__}") for b in cls.__bases__
                                        if b.__module__.startswith(module.__name__)]}
    if _is_enum(cls):
        record["members"] = {k: int(v) for k, v in cls.__members__.items()}
    methods: dict[str, list] = {}
    properties: dict[str, Any] = {}
    attributes: dict[str, str] = {}
    for name, value in sorted(vars(cls).items()):
        if name in ("__doc__", "__module__", "__dict__", "__weakref__", "_pybind11_conduit_v1_", "__members__",
                    "__entries", "__slotnames__") or name.startswith("__pybind11"):
            continue
        if inspect.isclass(value):
            if value.__qualname__.endswith("." + name) or value.__qualname__ == name:
                describe_class(value, f"{qualname}.{name}", module, classes)
                attributes[name] = "type"
            continue
        if isinstance(value, property):
            getter = overloads_from_doc(getattr(value.fget, "__doc__", None) and
                                        "fget" + (value.fget.__doc__ or "").strip(), "fget")
            ptype = getter[0]["returns"] if getter else ""
            properties[name] = {"type": ptype, "settable": value.fset is not None}
            continue
        if isinstance(value, (staticmethod, classmethod)):
            func = value.__func__
            overloads = overloads_from_doc(func.__doc__, name) or python_overloads(func)
            for o in overloads:
                o["static"] = True
            methods[name] = overloads
            continue
        if inspect.isfunction(value):  # Python-level (e.g. __enter__ added by __init__.py)
            methods[name] = python_overloads(value)
            continue
        if callable(value):
            overloads = overloads_from_doc(getattr(value, "__doc__", None), name)
            if overloads:
                methods[name] = overloads
            elif name == "__init__":
                pass  # pybind11's "No constructor defined!": the class has no Python constructor
            elif name not in ("__new__",):
                methods[name] = [{"params": [["*args", "", True]], "returns": "", "opaque": True}]
            continue
        if _is_enum(type(value)):
            attributes[name] = clean_type(f"{type(value).__module__}.{type(value).__qualname__}")
        elif isinstance(value, (int, float, str, bool)):
            attributes[name] = type(value).__name__
    if "__init__" in methods:
        record["init"] = methods.pop("__init__")
    if _is_enum(cls):  # pybind11 enum boilerplate: keep only what code may touch
        for boring in ("__getstate__", "__setstate__", "__repr__", "__str__", "__ne__", "__eq__", "__hash__",
                       "__index__", "__int__", "name", "value"):
            methods.pop(boring, None)
            properties.pop(boring, None)
        for member in record["members"]:
            attributes.pop(member, None)
    if methods:
        record["methods"] = methods
    if properties:
        record["properties"] = properties
    if attributes:
        record["attributes"] = attributes
    classes[qualname] = record


def probe_implicit(module: Any, classes: dict[str, Any]) -> None:
    """Which plain Python values convert implicitly to a class (pybind11 implicitly_convertible).

    Probed by assigning to a settable property of that type on a default-constructible struct
    (e.g. ``PluginTensorDesc().dims = (1, 2)``); nothing else can be called without TensorRT.
    """
    samples = {"tuple of int": (1, 2), "list of int": [1, 2], "int": 1, "str": "x", "float": 1.0}
    for target in classes:
        carriers = [(q, p) for q, rec in classes.items() for p, prop in rec.get("properties", {}).items()
                    if prop["type"] == target and prop["settable"]]
        for qualname, prop in carriers:
            cls = module
            for part in qualname.split("."):
                cls = getattr(cls, part)
            try:
                obj = cls()
            except Exception:
                continue
            works = []
            for label, value in samples.items():
                try:
                    setattr(obj, prop, value)
                    works.append(label)
                except Exception:
                    pass
            if works:
                classes[target]["implicit_from"] = works
            break


def snapshot(module: Any) -> dict[str, Any]:
    classes: dict[str, Any] = {}
    functions: dict[str, Any] = {}
    constants: dict[str, str] = {}
    for name in sorted(dir(module)):
        if name.startswith("_"):
            continue
        value = getattr(module, name)
        if inspect.ismodule(value):
            continue
        if inspect.isclass(value):
            if getattr(value, "__module__", "").startswith(module.__name__):
                describe_class(value, name, module, classes)
            continue
        if inspect.isfunction(value):
            if getattr(value, "__module__", "").startswith(module.__name__):
                functions[name] = python_overloads(value)
            continue
        if callable(value) and not inspect.isclass(value):
            overloads = overloads_from_doc(getattr(value, "__doc__", None), name)
            if overloads:
                functions[name] = overloads
            continue
        if _is_enum(type(value)):
            constants[name] = [clean_type(f"{type(value).__module__}.{type(value).__qualname__}"), value.name]
    probe_implicit(module, classes)
    return {"schema": "dvit-deploy/tensorrt-api/1", "module": module.__name__,
            "version": str(module.__version__), "classes": classes, "functions": functions,
            "constants": constants}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", default=None, help="module to import [default: tensorrt, else tensorrt_bindings]")
    parser.add_argument("-o", "--output", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    names = [args.module] if args.module else ["tensorrt", "tensorrt_bindings"]
    module = None
    for name in names:
        try:
            module = importlib.import_module(name)
            break
        except ImportError as exc:
            error = exc
    if module is None:
        print(f"cannot import {' or '.join(names)}: {error}", file=sys.stderr)
        return 2
    data = snapshot(module)
    with open(args.output, "w") as fh:
        json.dump(data, fh, sort_keys=True, separators=(",", ":"))
        fh.write("\n")
    print(f"{args.output}: TensorRT {data['version']} ({module.__name__}), {len(data['classes'])} classes, "
          f"{sum(len(c.get('methods', {})) for c in data['classes'].values())} methods, "
          f"{len(data['functions'])} functions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
