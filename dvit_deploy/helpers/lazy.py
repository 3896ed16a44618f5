"""One lazy-import mechanism (in the spirit of Polygraphy's ``mod.lazy_import``).

``lazy_import("dvit_deploy.jobs.validate")`` returns a stand-in that imports the module on first
attribute access. The CLI uses it so ``dvit --help``, ``dvit flops``, ``dvit doctor`` and
``dvit verify`` start without importing torch, timm or the exporter. ``lazy_exports`` gives a
package ``__init__`` the same behaviour for the names it re-exports (PEP 562 ``__getattr__``).

Optional packages (TensorRT, OpenVINO, onnxruntime-gpu, matplotlib, pytriton) go through the same
module at the backend boundary: ``available(module)`` asks whether one is installed without
importing it; ``require(module, extra, purpose)`` imports it or raises ``MissingDependency``,
whose one line names the extra to install.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import signal
import threading
import types
from typing import Any, Callable, Iterator, Mapping

from .errors import MissingDependency  # stdlib-only, like this module


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C/SIGTERM back while heavy modules import, then deliver them.

    A KeyboardInterrupt raised inside a C extension's initialisation (torch, onnx) can abort the
    interpreter ("terminate called after throwing pybind11::error_already_set") instead of
    unwinding. So during an import a signal is only noted, and re-raised once the import is done,
    where the normal handlers turn it into one line and exit 130/143.
    """
    held = (signal.SIGINT, signal.SIGTERM)
    # Off the main thread signals cannot be handled; and a handler installed from C (Triton's Python backend
    # stub) reads back as None and could not be put back, so there the import runs unguarded.
    if threading.current_thread() is not threading.main_thread() or any(signal.getsignal(s) is None for s in held):
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in held}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for sig in dict.fromkeys(received):
        signal.raise_signal(sig)


class LazyModule(types.ModuleType):
    """A module stand-in; the real module is imported when an attribute is first read."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = name
        self.__dict__["_lazy_module"] = None

    def _load(self) -> types.ModuleType:
        module = self.__dict__["_lazy_module"]
        if module is None:
            with signals_held():
                module = importlib.import_module(self.__dict__["_lazy_target"])
            self.__dict__["_lazy_module"] = module
        return module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __dir__(self) -> list[str]:
        return dir(self._load())


def lazy_import(name: str) -> Any:
    """A stand-in for module ``name``, imported on first use (typed Any: it behaves as the module)."""
    return LazyModule(name)


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving ``name -> "submodule"`` re-exports on first access."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__


def available(module: str) -> bool:
    """Whether ``module`` is installed, without importing it (importing TensorRT takes seconds)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing or broken
        return False


def require(module: str, extra: str, purpose: str) -> Any:
    """Import optional ``module`` now, or raise MissingDependency naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # a broken install counts as missing, with its reason kept
        raise MissingDependency(module.split(".")[0], extra, purpose) from exc
