"""`dvit --help`, `flops`, `doctor` and `verify` start without torch (issue 10: a CLI that starts fast).

Each runs in a fresh interpreter in which importing torch or timm fails, as on a machine where
they are not installed; the commands must still work and must not have tried to import them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dvit_deploy.jobs.ship import make_bundle

REPO = Path(__file__).resolve().parents[1]

_RUN_WITHOUT_TORCH = """
import json, sys
sys.modules["torch"] = None   # `import torch` now raises ImportError, as if it were not installed
sys.modules["timm"] = None
from typer.testing import CliRunner
from dvit_deploy.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
heavy = sorted(m for m in ("torch", "timm", "torchvision") if sys.modules.get(m) is not None)
print(json.dumps({"exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr,
                  "exception": None if result.exception is None or isinstance(result.exception, SystemExit)
                  else repr(result.exception), "heavy": heavy}))
"""


def _without_torch(args: list[str], cwd: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "160"}
    done = subprocess.run([sys.executable, "-c", _RUN_WITHOUT_TORCH, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def shipped(tiny_export, tmp_path, monkeypatch):
    """./export with the tiny export, and a bundle of it, in a fresh folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "export").mkdir()
    for f in (tiny_export.path, tiny_export.manifest_path):
        shutil.copy2(f, tmp_path / "export" / f.name)
    make_bundle([tmp_path / "export" / tiny_export.path.name], "jetson-orin", output=tmp_path / "bundle")
    return tmp_path


@pytest.mark.parametrize("args, expected", [
    (["--help"], "export"),
    (["flops", "--model", "deit-s", "--json"], "deit-s"),
    (["doctor", "--target", "trt-10.3"], "ready for trt-10.3"),
    (["verify", "bundle"], "bundle verified"),
])
def test_command_runs_without_torch(shipped, args, expected):
    result = _without_torch(args, shipped)
    assert result["exception"] is None and result["exit_code"] == 0, result
    assert expected in result["stdout"]
    assert result["heavy"] == [], f"{args} imported {result['heavy']}"


def test_signals_held_leaves_a_handler_installed_from_c_alone(monkeypatch):
    """In Triton's Python backend stub the SIGINT/SIGTERM handlers are C-level: ``getsignal`` reads None and
    could not be put back (signal.signal(sig, None) raises), so imports there run unguarded."""
    import signal

    from dvit_deploy.helpers.lazy import signals_held

    installed = []
    monkeypatch.setattr(signal, "getsignal", lambda sig: None)
    monkeypatch.setattr(signal, "signal", lambda sig, handler: installed.append(sig))
    with signals_held():
        pass
    assert installed == []
