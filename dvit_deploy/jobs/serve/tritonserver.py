"""The Triton Inference Server that ``nvidia-pytriton`` ships, and how to start it here.

The ``nvidia-pytriton`` wheel (``[serve]`` extra) carries a real ``tritonserver`` (2.51 in
0.7.0) with only the Python backend, plus one backend *stub* per Python version. We use its
binary and backend directly rather than PyTriton's ``Triton().bind`` proxy: the proxy answers
every failure of a batch with one INTERNAL error carrying a traceback, whereas a Python-backend
model of our own answers each request on its own, with ``INVALID_ARG`` for a bad one.

Two facts make the stub start (measured on Python 3.11/3.12 pyenv builds):

* the stub links ``libpython3.X.so.1.0``; unless ``LD_LIBRARY_PATH`` holds *this* interpreter's
  ``LIBDIR`` it may load another one and fail model load with ``'_thread.RLock' object has no
  attribute '_recursion_count'``;
* the stub must be the one built for this interpreter's version; it is copied into a private
  backend directory, next to links to the backend library, as PyTriton does.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ...helpers.lazy import available
from ...helpers.errors import MissingDependency

SERVE_EXTRA = "serve"


@dataclass(frozen=True)
class TritonDist:
    binary: Path
    python_backend: Path  # folder with libtriton_python.so and triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for this Python version
    libs: Path | None  # the wheel's bundled shared libraries


def find_tritonserver() -> TritonDist:
    """The bundled server, or MissingDependency naming the ``[serve]`` extra."""
    if not available("pytriton"):
        raise MissingDependency("nvidia-pytriton", SERVE_EXTRA, "dvit serve (Triton Inference Server)")
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    root = Path(next(iter(spec.submodule_search_locations or []), "")) if spec else Path()
    dist = root / "tritonserver"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    found = TritonDist(binary=dist / "bin" / "tritonserver", python_backend=dist / "backends" / "python",
                       stub=dist / "python_backend_stubs" / version / "triton_python_backend_stub",
                       libs=(root.parent / "nvidia_pytriton.libs") if (root.parent / "nvidia_pytriton.libs").is_dir()
                       else None)
    missing = [p for p in (found.binary, found.python_backend / "libtriton_python.so") if not p.is_file()]
    if missing:
        raise MissingDependency("nvidia-pytriton", SERVE_EXTRA,
                                f"dvit serve (this nvidia-pytriton has no {missing[0].name})")
    if not found.stub.is_file():
        raise MissingDependency("nvidia-pytriton", SERVE_EXTRA,
                                f"dvit serve on Python {version} (nvidia-pytriton ships no backend stub for it)")
    return found


def libpython_dir() -> Path | None:
    """The folder holding this interpreter's ``libpython3.X.so.1.0`` (None for a static build)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    name = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
    if libdir and name and (Path(libdir) / str(name)).exists():
        return Path(libdir)
    return None


def prepare_backends(dist: TritonDist, workspace: Path) -> Path:
    """A private backend directory: links to the Python backend, and the stub for this Python."""
    python = workspace / "backends" / "python"
    python.mkdir(parents=True)
    for item in dist.python_backend.iterdir():
        if item.is_file():
            os.symlink(item, python / item.name)
    shutil.copy2(dist.stub, python / "triton_python_backend_stub")
    return workspace / "backends"


def server_env(dist: TritonDist, *, threads: int | None = None) -> dict[str, str]:
    """The environment ``tritonserver`` and its stub run with (this interpreter's libpython and packages)."""
    env = dict(os.environ)
    libs = [str(p) for p in (libpython_dir(), dist.libs) if p is not None]
    env["LD_LIBRARY_PATH"] = ":".join(libs + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
    # The stub finds its interpreter's prefix through PATH, and our packages through PYTHONPATH.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    import dvit_deploy

    package_root = str(Path(dvit_deploy.__file__).resolve().parent.parent)
    paths = [package_root] + [p for p in sys.path if p and Path(p).is_dir() and p != package_root]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["DVIT_SERVE_PACKAGE_ROOT"] = package_root  # the stub ignores PYTHONPATH; model.py reads this (serve.server)
    if threads:
        env["DVIT_SERVE_THREADS"] = str(threads)
    return env
