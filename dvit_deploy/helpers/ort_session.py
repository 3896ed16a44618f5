"""The one place an ONNX Runtime ``InferenceSession`` is created.

The ONNX Runtime runner, the post-export and ``--dynamic-keep`` checks, the fp16 check and the int8
check all open their sessions here, with the same quiet logging and the same one-line refusal when
ONNX Runtime cannot load a graph. ``onnxruntime`` is imported on first use (``helpers.lazy``), so
this module is importable from every layer (export sits below runtime).
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from .errors import CheckFailed
from .lazy import lazy_import

ort = lazy_import("onnxruntime")

CPU = "CPUExecutionProvider"
GRAPH_OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


@dataclass(frozen=True)
class SessionSettings:
    """How a session runs: ``SessionOptions`` fields, session config entries and providers.

    ``providers``: names, or ``(name, provider options)`` pairs, in priority order.
    ``optimized_model_path``: where ORT writes the graph it really runs (after its fusions).
    ``profile_prefix``: turns ORT's profiler on, writing under this prefix."""

    providers: Sequence[Any] = (CPU,)
    config: Mapping[str, str] = field(default_factory=dict)
    graph_optimization: str | None = None  # a GRAPH_OPTIMIZATION_LEVELS key; None: ORT's default
    parallel: bool = False
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    profile_prefix: str | None = None
    optimized_model_path: str | None = None

    def session_options(self) -> Any:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        for key, value in self.config.items():
            options.add_session_config_entry(key, value)
        if self.graph_optimization is not None:
            level = GRAPH_OPTIMIZATION_LEVELS[self.graph_optimization]
            options.graph_optimization_level = ort.GraphOptimizationLevel.__members__[level]
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL if self.parallel else ort.ExecutionMode.ORT_SEQUENTIAL
        if self.intra_op_threads is not None:
            options.intra_op_num_threads = self.intra_op_threads
        if self.inter_op_threads is not None:
            options.inter_op_num_threads = self.inter_op_threads
        if self.profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = self.profile_prefix
        if self.optimized_model_path is not None:
            options.optimized_model_filepath = self.optimized_model_path
        return options


def first_line(exc: BaseException) -> str:
    """The first line of an ONNX Runtime error, at most 200 characters (the checks' wording)."""
    return str(exc).splitlines()[0][:200]


def create_session(source: Any, settings: SessionSettings = SessionSettings(), *, what: str,
                   error: Callable[[str], Exception] = CheckFailed,
                   cause: Callable[[BaseException], str] = first_line) -> Any:
    """An ``InferenceSession`` on ``source`` (a path, serialized bytes or an ``onnx.ModelProto``).

    When ONNX Runtime cannot load it: ``error("ONNX Runtime cannot load {what}: {cause(exc)}")``, one
    line (CheckFailed, exit 1, for a graph dvit made; the runner passes BadInput for a user's file)."""
    if hasattr(source, "SerializeToString"):
        source = source.SerializeToString()
    elif isinstance(source, Path):
        source = str(source)
    try:
        return ort.InferenceSession(source, settings.session_options(), providers=list(settings.providers))
    except Exception as exc:  # ORT raises its own exception types
        raise error(f"ONNX Runtime cannot load {what}: {cause(exc)}") from None


@contextmanager
def optimized_graph_folder(wanted: bool = True) -> Iterator[Path | None]:
    """A temporary folder for ``SessionSettings.optimized_model_path`` (read back, then removed)."""
    if not wanted:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="dvit-ort-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def cpu_session(model: Any, what: str = "the exported graph", config: Mapping[str, str] | None = None) -> Any:
    """A CPU session on a graph dvit made; CheckFailed (exit 1) when ONNX Runtime cannot load it."""
    return create_session(model, SessionSettings(config=dict(config or {})), what=what)


__all__ = ["CPU", "GRAPH_OPTIMIZATION_LEVELS", "SessionSettings", "cpu_session", "create_session", "first_line",
           "optimized_graph_folder"]
