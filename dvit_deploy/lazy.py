"""One lazy-import mechanism (in the spirit of Polygraphy's ``mod.lazy_import``).

``lazy_import("dvit_deploy.validate")`` returns a stand-in that imports the module on first
attribute access. The CLI uses it so ``dvit --help``, ``dvit flops``, ``dvit doctor`` and
``dvit verify`` start without importing torch, timm or the exporter. ``lazy_exports`` gives a
package ``__init__`` the same behaviour for the names it re-exports (PEP 562 ``__getattr__``).
"""

from __future__ import annotations

import importlib
import types
from typing import Any, Callable, Mapping


class LazyModule(types.ModuleType):
    """A module stand-in; the real module is imported when an attribute is first read."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = name
        self.__dict__["_lazy_module"] = None

    def _load(self) -> types.ModuleType:
        module = self.__dict__["_lazy_module"]
        if module is None:
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
