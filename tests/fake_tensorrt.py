"""A fake ``tensorrt`` module built only from an API snapshot (``tests/data/tensorrt-api-*.json``).

The snapshots are written by ``tools/tensorrt_api_snapshot.py`` from NVIDIA's real Python bindings
(see docs/tensorrt.md). The fake knows nothing else about TensorRT:

* a name the snapshot lacks (module attribute, class attribute, method, property, enum member)
  raises ``AttributeError``, as the real pybind11 module does;
* every call is bound against the recorded overloads (positional + keyword, defaults, no extras)
  and its arguments are checked against the recorded parameter types; no overload fits ->
  ``TypeError("...: incompatible function arguments")``, as pybind11 raises;
* a property set on a read-only property raises ``AttributeError``; a set value is type-checked;
* a class without a recorded constructor raises ``TypeError("...: No constructor defined!")``;
* a call returns an object of the recorded return type (a fake instance of that class), so chained
  calls keep being checked. Values configured by a test are checked against the return type too.

SCAFFOLDING, not TensorRT behaviour: nothing executes, so where the project's code needs a value
the fake supplies a behaviour-free one -- ``bool`` returns True, ``int`` 0, ``str`` "" -- unless a
test configures one with ``fake.behave("Class.method", fn)`` (``fn(self, *args, **kwargs)``) or
``fake.behave("Class.property", fn)``. Enum and ``Dims`` returns have no neutral value and must be
configured (``install_engine`` does it for engine I/O). ``IHostMemory`` objects carry a payload so
``bytes(host_memory)`` works (the real class exposes the buffer protocol, which a snapshot cannot
record); ``Dims`` keeps the values it was constructed with for ``len``/indexing. Type strings that
pybind11 printed as C++ names (``nvonnxparser::IParserError``) are mapped to the Python class of that
name (``ParserError``), see ``FakeTensorRT._type``.
"""

from __future__ import annotations

import importlib.machinery
import json
import re
import types
from pathlib import Path
from typing import Any, Callable

DATA = Path(__file__).parent / "data"
VERSIONS = {"10.3": "tensorrt-api-10.3.json", "10.13": "tensorrt-api-10.13.json", "11.4": "tensorrt-api-11.4.json",
            # TensorRT-RTX: recorded from the real tensorrt_rtx 1.7.1.116 (module "tensorrt_rtx"); the
            # real module is installed by [dev], so tests/test_tensorrt_api.py also checks it is unchanged.
            "rtx-1.7": "tensorrt-api-rtx-1.7.json"}

_INT_TYPES = {"int", "typing.SupportsInt", "SupportsInt", "typing.SupportsIndex"}
_FLOAT_TYPES = {"float", "typing.SupportsFloat"}
_BUFFER_TYPES = {"buffer", "typing_extensions.Buffer", "collections.abc.Buffer", "bytes"}
_SEQ_OF_INT = re.compile(r"^(?:typing\.)?(?:List|list|collections\.abc\.Sequence|Sequence)\[(?:typing\.)?"
                         r"(?:int|SupportsInt)\]$")


_NOT_GENERATED = {"__del__", "__repr__", "__str__", "__hash__", "__eq__", "__ne__", "__getstate__", "__setstate__",
                  "__int__", "__index__"}


class FakeAPIError(AssertionError):
    """Scaffolding was asked for a value it cannot invent (configure one with ``behave``)."""


def load_snapshot(version: str) -> dict[str, Any]:
    return json.loads((DATA / VERSIONS[version]).read_text())


def _is_int(value: Any) -> bool:
    return (isinstance(value, int) or hasattr(value, "__index__")) and not isinstance(value, (float, str, bytes))


class FakeObject:
    """Base of every fake class: no instance ``__dict__``, so unknown attributes cannot be set."""

    __slots__ = ("_state",)
    _api: "FakeTensorRT"
    _qualname = "object"

    def __repr__(self) -> str:
        return f"<fake tensorrt.{self._qualname} object>"


class FakeEnum(FakeObject):
    __slots__ = ("_name", "_value")
    _members: dict[str, "FakeEnum"] = {}

    def __int__(self) -> int:
        return self._value

    def __index__(self) -> int:
        return self._value

    def __eq__(self, other: Any) -> bool:
        return type(other) is type(self) and other._value == self._value

    def __hash__(self) -> int:
        return hash((self._qualname, self._value))

    def __str__(self) -> str:
        return f"{self._qualname.split('.')[-1]}.{self._name}"

    def __repr__(self) -> str:
        return f"<{self}: {self._value}>"

    @property
    def name(self) -> str:
        return self._name

    @property
    def value(self) -> int:
        return self._value


class _FakeModuleType(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"module '{self.__name__}' has no attribute '{name}'")


class FakeTensorRT(_FakeModuleType):
    """``import tensorrt`` for one snapshot version. ``calls`` logs every checked call and set."""

    def __init__(self, version: str) -> None:
        snap = load_snapshot(version)
        super().__init__(snap.get("module", "tensorrt"))
        object.__setattr__(self, "_snap", snap)
        object.__setattr__(self, "_classes", {})
        object.__setattr__(self, "calls", [])
        object.__setattr__(self, "_behaviour", {})
        self.__version__ = snap["version"]
        self.__spec__ = importlib.machinery.ModuleSpec(self.__name__, None)
        for qualname in sorted(snap["classes"], key=lambda q: q.count(".")):
            self._class(qualname)
        for qualname, cls in self._classes.items():
            for attr, kind in snap["classes"][qualname].get("attributes", {}).items():
                if kind in self._classes and issubclass(self._classes[kind], FakeEnum):
                    member = self._classes[kind]._members.get(attr)
                    if member is not None:
                        setattr(cls, attr, member)
        for name, overloads in snap["functions"].items():
            setattr(self, name, self._function(name, overloads))
        for name, (kind, member) in snap["constants"].items():
            setattr(self, name, self._classes[kind]._members[member])

    # -- configuration (scaffolding) ---------------------------------------------------------------
    def behave(self, target: str, fn: Callable[..., Any]) -> None:
        """Configure the value returned by ``Class.method`` / ``Class.property`` (checked against its type)."""
        qualname, _, member = target.rpartition(".")
        record = self._snap["classes"].get(qualname)
        if record is None or (member not in record.get("methods", {}) and member not in record.get("properties", {})):
            raise FakeAPIError(f"scaffolding for {target}, which TensorRT {self.__version__} does not have")
        self._behaviour[target] = fn

    def called(self, target: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == target]

    # -- classes -------------------------------------------------------------------------------------
    def _class(self, qualname: str) -> type:
        if qualname in self._classes:
            return self._classes[qualname]
        record = self._snap["classes"][qualname]
        enum = "members" in record
        bases = tuple(self._class(b) for b in record.get("bases", []) if b in self._snap["classes"])
        bases = bases or ((FakeEnum,) if enum else (FakeObject,))
        namespace: dict[str, Any] = {"__slots__": (), "_api": self, "_qualname": qualname,
                                     "__module__": "tensorrt", "__qualname__": qualname}
        namespace["__init__"] = self._init(qualname, record.get("init"))
        for name, overloads in record.get("methods", {}).items():
            if name in _NOT_GENERATED:
                continue
            namespace[name] = self._method(qualname, name, overloads)
        for name, prop in record.get("properties", {}).items():
            namespace[name] = self._property(qualname, name, prop)
        cls = type(qualname.split(".")[-1], bases, namespace)
        self._classes[qualname] = cls
        if enum:
            cls._members = {}
            for member, value in record["members"].items():
                obj = object.__new__(cls)
                object.__setattr__(obj, "_name", member)
                object.__setattr__(obj, "_value", value)
                cls._members[member] = obj
                setattr(cls, member, obj)
            cls.__members__ = dict(cls._members)
        parent, _, leaf = qualname.rpartition(".")
        if parent:
            setattr(self._classes[parent], leaf, cls)
        else:
            setattr(self, qualname, cls)
        return cls

    def new(self, qualname: str, **state: Any) -> FakeObject:
        """An instance as TensorRT would hand it out (no constructor call)."""
        obj = object.__new__(self._classes[qualname])
        object.__setattr__(obj, "_state", dict(state))
        return obj

    def _init(self, qualname: str, overloads: list[dict] | None) -> Callable:
        api = self

        def __init__(obj, *args, **kwargs):
            if overloads is None:
                raise TypeError(f"tensorrt.{qualname}: No constructor defined!")
            bound = api._bind(f"{qualname}.__init__", overloads, args, kwargs)
            object.__setattr__(obj, "_state", {"init": bound})
            if qualname.startswith("Dims"):  # scaffolding: Dims keeps its values
                values = next(iter(bound.values()), ())
                obj._state["values"] = tuple(int(v) for v in values)
            api.calls.append((f"{qualname}.__init__", args, kwargs))

        return __init__

    def _method(self, qualname: str, name: str, overloads: list[dict]) -> Callable:
        api = self
        static = bool(overloads and overloads[0].get("static"))

        def method(*args, **kwargs):
            obj = None if static else args[0]
            call_args = args if static else args[1:]
            target = f"{qualname}.{name}"
            if any(o.get("opaque") or o.get("python") for o in overloads):
                raise FakeAPIError(f"{target} is a Python-level/opaque callable; the fake does not run it")
            overload, bound = api._resolve(target, overloads, call_args, kwargs)
            api.calls.append((target, call_args, kwargs))
            return api._result(obj, qualname, name, overload["returns"], call_args, kwargs)

        method.__name__ = name
        return staticmethod(method) if static else method

    def _property(self, qualname: str, name: str, prop: dict) -> property:
        api = self
        target = f"{qualname}.{name}"

        def fget(obj):
            state = obj._state
            if name in state.get("props", {}):
                return state["props"][name]
            return api._result(obj, qualname, name, prop["type"], (), {}, prop=True)

        def fset(obj, value):
            if not prop["settable"]:
                raise AttributeError(f"property '{name}' of 'tensorrt.{qualname}' object has no setter")
            if not api._conforms(value, prop["type"]):
                raise TypeError(f"(): incompatible function arguments: {target} = {value!r} (expects {prop['type']})")
            obj._state.setdefault("props", {})[name] = value
            api.calls.append((f"{target}=", (value,), {}))

        return property(fget, fset)

    def _function(self, name: str, overloads: list[dict]) -> Callable:
        api = self

        def function(*args, **kwargs):
            if any(o.get("python") for o in overloads):
                raise FakeAPIError(f"tensorrt.{name} is a Python-level helper; the fake does not run it")
            overload, _ = api._resolve(name, overloads, args, kwargs)
            api.calls.append((name, args, kwargs))
            return api._result(None, "", name, overload["returns"], args, kwargs)

        function.__name__ = name
        return function

    # -- binding and type checks ----------------------------------------------------------------------
    def _type(self, name: str) -> str:
        """The snapshot's class for a type string. pybind11 prints the C++ name when a type was bound
        after the function using it (``nvonnxparser::IParserError``, ``nvinfer1::TensorLocation``);
        those map to the Python class of the same name without namespace (and without the C++ ``I``
        prefix where the Python class drops it: IParserError -> ParserError, IBuilder -> Builder)."""
        if name in self._classes or "::" not in name:
            return name
        bare = name.rsplit("::", 1)[-1]
        if bare in self._classes:
            return bare
        if bare.startswith("I") and bare[1:] in self._classes:
            return bare[1:]
        return name

    def _bind(self, target: str, overloads: list[dict], args: tuple, kwargs: dict) -> dict[str, Any]:
        return self._resolve(target, overloads, args, kwargs)[1]

    def _resolve(self, target: str, overloads: list[dict], args: tuple, kwargs: dict) -> tuple[dict, dict]:
        for overload in overloads:
            bound = self._try_bind(overload, args, kwargs)
            if bound is not None:
                return overload, bound
        sigs = "\n".join(f"    {i + 1}. ({', '.join(f'{p[0]}: {p[1]}' + (' = ...' if p[2] else '') for p in o['params'])})"
                         f" -> {o['returns']}" for i, o in enumerate(overloads))
        raise TypeError(f"{target.split('.')[-1]}(): incompatible function arguments. The following argument types "
                        f"are supported:\n{sigs}\n\nInvoked with: {args!r}, {kwargs!r}")

    def _try_bind(self, overload: dict, args: tuple, kwargs: dict) -> dict[str, Any] | None:
        raw = overload["params"]
        names = [p[0] for p in raw]
        positional_only = set(names[:names.index("/")]) if "/" in names else set()
        keyword_only = set(names[names.index("*") + 1:]) if "*" in names else set()
        params = [p for p in raw if p[0] not in ("*", "/")]
        positional = [p for p in params if p[0] not in keyword_only]
        if len(args) > len(positional):
            return None
        bound: dict[str, Any] = {}
        for (pname, _, _), value in zip(positional, args):
            bound[pname] = value
        for key, value in kwargs.items():
            if key in bound or key in positional_only or key not in {p[0] for p in params}:
                return None
            bound[key] = value
        for pname, ptype, has_default in params:
            if pname not in bound:
                if not has_default:
                    return None
                continue
            if not self._conforms(bound[pname], ptype):
                return None
        return bound

    def _conforms(self, value: Any, ptype: str) -> bool:
        ptype = self._type(ptype.strip())
        if ptype.startswith("Optional[") or ptype.startswith("typing.Optional["):
            return value is None or self._conforms(value, ptype[ptype.index("[") + 1:-1])
        if not ptype or ptype in ("object", "typing.Any", "Any"):
            return True
        if ptype in _INT_TYPES:
            return _is_int(value)
        if ptype in _FLOAT_TYPES:
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if ptype == "bool":
            return isinstance(value, bool) or type(value).__name__ == "bool_"
        if ptype == "str":
            return isinstance(value, str)
        if ptype == "tuple":
            return isinstance(value, tuple)
        if ptype == "list":
            return isinstance(value, list)
        if ptype in _BUFFER_TYPES:
            try:
                memoryview(value)
                return True
            except TypeError:
                return False
        if _SEQ_OF_INT.match(ptype):
            return (isinstance(value, (list, tuple)) or type(value).__name__ == "ndarray") and all(
                _is_int(v) for v in value)
        cls = self._classes.get(ptype)
        if cls is not None:
            if isinstance(value, cls):
                return True
            if issubclass(cls, FakeEnum):
                return False
            implicit = self._snap["classes"][ptype].get("implicit_from", [])
            if isinstance(value, tuple) and "tuple of int" in implicit and all(_is_int(v) for v in value):
                return True
            if isinstance(value, list) and "list of int" in implicit and all(_is_int(v) for v in value):
                return True
            return value is None  # pybind11 passes None as a null pointer to class arguments
        return True  # a type the snapshot spells in a way we do not model (numpy arrays, callables ...)

    def _result(self, obj: Any, qualname: str, name: str, rtype: str, args: tuple, kwargs: dict,
                prop: bool = False) -> Any:
        target = f"{qualname}.{name}" if qualname else name
        rtype = self._type(rtype)
        fn = None
        for klass in (type(obj).__mro__ if obj is not None else ()):
            q = getattr(klass, "_qualname", None)
            if q and f"{q}.{name}" in self._behaviour:
                fn = self._behaviour[f"{q}.{name}"]
                break
        if fn is not None:
            value = fn(obj, *args, **kwargs)
            if value is None and rtype in self._classes and not issubclass(self._classes[rtype], FakeEnum):
                return value
            if rtype == "None":
                if value is not None:
                    raise FakeAPIError(f"scaffolding for {target} returned {value!r}; TensorRT returns None")
                return None
            if not self._conforms(value, rtype) or (rtype in self._classes and value is None):
                raise FakeAPIError(f"scaffolding for {target} returned {value!r}, not a {rtype}")
            return value
        # Behaviour-free defaults (SCAFFOLDING, see the module docstring).
        if rtype == "None":
            return None
        if rtype == "bool":
            return True
        if rtype in _INT_TYPES:
            return 0
        if rtype in _FLOAT_TYPES:
            return 0.0
        if rtype == "str":
            return ""
        cls = self._classes.get(rtype)
        if cls is not None and not issubclass(cls, FakeEnum) and not rtype.startswith("Dims"):
            state = {"payload": b"fake " + target.encode()} if rtype == "IHostMemory" else {}
            return self.new(rtype, **state)
        raise FakeAPIError(f"{target} returns {rtype!r}: the test must configure a value (fake.behave)")


def _dims_len(self) -> int:
    return len(self._state.get("values", ()))


def _dims_getitem(self, index):
    return self._state.get("values", ())[index]


def _host_memory_bytes(self) -> bytes:
    return bytes(self._state.get("payload", b""))


def make_fake(version: str) -> FakeTensorRT:
    fake = FakeTensorRT(version)
    # SCAFFOLDING: value semantics for Dims (len/indexing, both recorded in the snapshot) and the
    # buffer protocol of IHostMemory (bytes(...)), which a snapshot cannot see.
    for qualname, cls in fake._classes.items():
        if qualname.startswith("Dims"):
            cls.__len__ = _dims_len
            cls.__getitem__ = _dims_getitem
            assert "__len__" in fake._snap["classes"]["Dims"]["methods"]
    fake._classes["IHostMemory"].__bytes__ = _host_memory_bytes
    return fake


def install_engine(fake: FakeTensorRT, io: list[dict[str, Any]]) -> None:
    """SCAFFOLDING: answer ``ICudaEngine``/``IExecutionContext`` questions from an I/O description.

    ``io``: ``[{"name", "mode": "INPUT"|"OUTPUT", "dtype": DataType member, "shape": [...],
    "shape_tensor": bool, "location": "DEVICE"|"HOST"}]``. Every answer is built with the fake's
    own (checked) enums and ``Dims``. ``IExecutionContext.get_tensor_shape`` fills -1 dims of an
    output with the batch last set by ``set_input_shape``.
    """
    trt = fake
    by_name = {t["name"]: t for t in io}

    def tensor(name: str) -> dict[str, Any]:
        if name not in by_name:
            raise AssertionError(f"the code asked about tensor '{name}', which the engine does not have")
        return by_name[name]

    fake.behave("ICudaEngine.num_io_tensors", lambda self: len(io))
    fake.behave("ICudaEngine.get_tensor_name", lambda self, i: io[i]["name"])
    fake.behave("ICudaEngine.get_tensor_mode", lambda self, n: getattr(trt.TensorIOMode, tensor(n)["mode"]))
    fake.behave("ICudaEngine.get_tensor_dtype", lambda self, n: getattr(trt.DataType, tensor(n)["dtype"]))
    fake.behave("ICudaEngine.get_tensor_shape", lambda self, n: trt.Dims(list(tensor(n)["shape"])))
    fake.behave("ICudaEngine.is_shape_inference_io", lambda self, n: bool(tensor(n).get("shape_tensor")))
    fake.behave("ICudaEngine.get_tensor_location",
                lambda self, n: getattr(trt.TensorLocation, tensor(n).get("location", "DEVICE")))

    def context_shape(self, name):
        shape = list(tensor(name)["shape"])
        batch = self._state.get("batch")
        return trt.Dims([batch if d == -1 and batch is not None else d for d in shape])

    def set_input_shape(self, name, shape):
        self._state["batch"] = int(tuple(shape)[0])
        return True

    fake.behave("IExecutionContext.get_tensor_shape", context_shape)
    fake.behave("IExecutionContext.set_input_shape", set_input_shape)
