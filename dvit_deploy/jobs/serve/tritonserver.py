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

import contextlib
import json
import os
import re
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def server_env(dist: TritonDist) -> dict[str, str]:
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
    return env


# -- the server process's lifetime ------------------------------------------------------------
# ``tritonserver`` must not outlive ``dvit serve``, however that ends (SIGKILL, the OOM killer, a
# container's kill): it gets SIGKILL from the kernel when its parent dies (``PR_SET_PDEATHSIG``).
# What a killed server leaves (its workspace, the backend's shared memory, the Python backend's
# ``/tmp/python_env_*``) is removed by the next ``dvit serve``, and only where the workspace's
# owner record says a ``dvit serve`` that is no longer running made it.

WORKSPACE_PREFIX = "dvit-serve-"
OWNER_FILE = "owner.json"
SHM_DIR = Path("/dev/shm")
SHM_NAME = re.compile(r"^dvit(\d+)x[0-9a-f]{6}_")  # serve.server's shm-region prefix: dvit<pid>x<hex>_
PYTHON_ENV_DIR = Path("/tmp")  # the Python backend's mkdtemp("/tmp/python_env_XXXXXX"), not $TMPDIR


_DIE_WITH_PARENT = ("import ctypes, os, signal, sys\n"
                    "ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))\n"  # PR_SET_PDEATHSIG
                    "if os.getppid() != int(sys.argv[1]):\n"  # the parent died before prctl
                    "    os._exit(1)\n"
                    "os.execv(sys.argv[2], sys.argv[2:])\n")


def dies_with_parent(command: list[str]) -> list[str]:
    """``command`` run so that the kernel SIGKILLs it when this process dies (Linux; unchanged elsewhere).

    A tiny interpreter sets ``PR_SET_PDEATHSIG`` and ``exec``s the command (same pid; the setting survives
    ``exec``). Not a ``preexec_fn``: Python code between fork and exec is unsafe in a process with threads
    (seen: gRPC's poller aborting the child). The signal follows the *thread* that starts the process, so
    start it from the thread that lives as long as the server (``serve``'s)."""
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-E", "-S", "-c", _DIE_WITH_PARENT, str(os.getpid()), *command]


def process_start(pid: int) -> str | None:
    """The start time of ``pid`` (clock ticks since boot, /proc/<pid>/stat field 22), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def new_workspace(shm_prefix: str) -> Path:
    """``$TMPDIR/dvit-serve-<pid>-*`` with the owner record a later ``dvit serve`` reads."""
    workspace = Path(tempfile.mkdtemp(prefix=f"{WORKSPACE_PREFIX}{os.getpid()}-"))
    record_owner(workspace, pid=os.getpid(), start=process_start(os.getpid()), shm_prefix=shm_prefix,
                 python_env=None)
    return workspace


def record_owner(workspace: Path, **fields: Any) -> None:
    path = workspace / OWNER_FILE
    try:
        owner = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        owner = {}
    owner.update(fields)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(owner))
    os.replace(tmp, path)


def python_envs() -> set[str]:
    try:
        return {p.name for p in PYTHON_ENV_DIR.glob("python_env_*")}
    except OSError:
        return set()


def new_python_env(before: set[str], since: float) -> tuple[Path | None, bool]:
    """(the Python backend's env folder our server made, decided): the one folder that appeared since
    ``since`` (wall clock) and is ours; undecided while none did, decided without one when several did
    (another server started at the same moment: never guess)."""
    found = []
    for name in python_envs() - before:
        with contextlib.suppress(OSError):
            info = (PYTHON_ENV_DIR / name).stat()
            if info.st_uid == os.getuid() and info.st_mtime >= since - 1:
                found.append(PYTHON_ENV_DIR / name)
    return (found[0] if len(found) == 1 else None), bool(found)


def remove_python_env(path: Path | None) -> None:
    """The env folder of a server that is gone: Triton leaves it empty (nothing is unpacked for our model)."""
    if path is not None:
        with contextlib.suppress(OSError):
            path.rmdir()


def remove_shm(prefix: str) -> list[str]:
    removed = []
    for region in SHM_DIR.glob(f"{prefix}*") if prefix and SHM_DIR.is_dir() else []:
        with contextlib.suppress(OSError):
            region.unlink()
            removed.append(region.name)
    return removed


def clean_stale() -> list[str]:
    """Remove what a ``dvit serve`` that is no longer running left: its workspace (with the env folder and
    shared memory it records) and shared-memory regions named after its pid. One line per thing removed."""
    notes = []
    for workspace in Path(tempfile.gettempdir()).glob(f"{WORKSPACE_PREFIX}*"):
        try:
            owner = json.loads((workspace / OWNER_FILE).read_text())
            pid, start = int(owner["pid"]), owner.get("start")
        except (OSError, ValueError, KeyError, TypeError):
            continue  # no owner record: not provably a dvit serve's
        if process_start(pid) is not None and process_start(pid) == start:
            continue  # its dvit serve still runs
        remove_shm(str(owner.get("shm_prefix") or ""))
        remove_python_env(Path(owner["python_env"]) if owner.get("python_env") else None)
        shutil.rmtree(workspace, ignore_errors=True)
        notes.append(f"removed {workspace.name}, left by a dvit serve (pid {pid}) that is no longer running")
    for region in sorted(SHM_DIR.iterdir()) if SHM_DIR.is_dir() else []:
        match = SHM_NAME.match(region.name)
        if match and process_start(int(match.group(1))) is None:
            with contextlib.suppress(OSError):
                region.unlink()
                notes.append(f"removed shared memory {region.name}, left by a dvit serve that is no longer running")
    return notes
