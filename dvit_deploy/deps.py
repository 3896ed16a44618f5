"""Optional dependencies, asked about without importing them (bottom layer: stdlib only).

``runtime``, ``engines`` and ``ship`` all need to know whether TensorRT (or another optional
package) is installed; asking here keeps ``engines`` from importing ``runtime`` for it.
"""

from __future__ import annotations

import importlib.util


def package_present(package: str) -> bool:
    """Whether ``package`` is installed, without importing it (importing TensorRT is slow)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


__all__ = ["package_present"]
