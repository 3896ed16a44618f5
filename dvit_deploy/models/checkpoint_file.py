"""Reading checkpoint files safely: official DynamicViT files, bare state dicts, safetensors.

``read_checkpoint`` reads the file with ``weights_only=True`` (allowing the ``argparse.Namespace``
that official training checkpoints carry) and picks the state dict; every user-caused problem
(missing, empty, not a checkpoint, truncated, pickled objects beyond tensors) becomes a ``BadInput``
with one readable line. Building a model from it is ``checkpoint.load_model``.
"""

from __future__ import annotations

import argparse
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from ..helpers.errors import BadInput
from ..helpers.fileio import sha256_file
from .detect import _list

# Entries that wrap the model weights, in the order official and common tools use them.
STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict", "module", "net")
STRIPPED_PREFIXES = ("module.", "_orig_mod.")

_MAGIC = MappingProxyType({
    b"\xff\xd8\xff": "a JPEG image",
    b"\x89PNG": "a PNG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF document",
    b"\x1f\x8b": "a gzip archive",
    b"\x08": "an ONNX/protobuf file",
})


@dataclass
class Checkpoint:
    path: Path
    state_dict: dict[str, torch.Tensor]
    source_key: str  # which entry held the weights ("model", "model_ema", "<root>", ...)
    sha256: str
    train_args: dict[str, Any] = field(default_factory=dict)
    trusted: bool = False


def read_checkpoint(path: str | Path, *, use_ema: bool = False, trust: bool = False) -> Checkpoint:
    path = Path(path).expanduser()
    if not path.exists():
        raise BadInput(f"checkpoint {path} not found")
    if path.is_dir():
        raise BadInput(f"{path} is a directory, not a checkpoint file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise BadInput(f"cannot read checkpoint {path}: {exc.strerror}") from None
    if size == 0:
        raise BadInput(f"checkpoint {path} is empty")

    if path.suffix == ".safetensors" or _looks_like_safetensors(head, size):
        obj, train_args = _read_safetensors(path), {}
    else:
        for magic, what in _MAGIC.items():
            if head.startswith(magic):
                raise BadInput(f"{path} is {what}, not a PyTorch checkpoint")
        obj = _torch_load(path, head, trust)
        train_args = _train_args(obj)
    state_dict, source_key = _select_state_dict(obj, path, use_ema)
    return Checkpoint(path, state_dict, source_key, sha256_file(path), train_args, trust)


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
    return 0 < header_len < size and head[8:9] == b"{"


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BadInput(f"{path} is not a readable safetensors file ({_first_line(exc)})") from None


def _safe_globals() -> list[Any]:
    """Types that official checkpoints legitimately hold besides tensors and containers."""
    import numpy as np

    allowed: list[Any] = [argparse.Namespace, np.dtype]
    core = getattr(np, "_core", None) or getattr(np, "core", None)
    scalar = getattr(getattr(core, "multiarray", None), "scalar", None)
    if scalar is not None:
        allowed.append(scalar)
    allowed.extend(type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool"))
    return allowed


def _torch_load(path: Path, head: bytes, trust: bool) -> Any:
    if trust:
        warnings.warn(
            f"loading {path} with weights_only=False: it can run arbitrary code; "
            "do this only for files from a source you trust",
            stacklevel=2,
        )
    # torch warns about pickle protocols and the like while it reads: that is noise next to our
    # one-line verdict, so its warnings are held here and never reach the user's terminal raw.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if trust:
                return torch.load(path, map_location="cpu", weights_only=False)
            with torch.serialization.safe_globals(_safe_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            blocked = _blocked_global(str(exc))
            if blocked is not None:
                raise BadInput(
                    f"{path} holds Python objects beyond tensors ({blocked}); "
                    "pass --trust-checkpoint only if you trust where it came from"
                ) from None
            raise BadInput(f"{path} is {_unreadable(head)}") from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError, ImportError,
                ModuleNotFoundError, KeyError, IndexError, TypeError, MemoryError, OverflowError,
                UnicodeDecodeError) as exc:
            detail = f" ({_first_line(exc)})" if _is_container(head) else ""
            raise BadInput(f"{path} is {_unreadable(head)}{detail}") from None


def _blocked_global(text: str) -> str | None:
    """The ``module.name`` a real pickle asked for that the weights-only allow-list refused, if any.

    Only such a file deserves the --trust-checkpoint hint: random or corrupt bytes fail the
    weights-only unpickler too, with messages about opcodes, not globals.
    """
    found = re.search(r"GLOBAL ([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)+)", text)
    return found.group(1) if found else None


def _is_container(head: bytes) -> bool:
    """A zip (torch.save's format) or a pickle stream: a real checkpoint that is damaged."""
    return head.startswith(b"PK") or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))


def _unreadable(head: bytes) -> str:
    return "truncated or corrupt: not a readable PyTorch checkpoint" if _is_container(head) else \
        "not a PyTorch checkpoint (unrecognised format)"


def _first_line(exc: BaseException, limit: int = 160) -> str:
    """The library's reason: its first line, in whole sentences up to ``limit`` characters (a first
    sentence longer than that is cut at a word, with "…"), never cut mid-sentence."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    line = lines[0].strip()
    if len(line) <= limit:
        return line
    kept = ""
    for sentence in re.findall(r"[^.!?]*[.!?]+(?=\s|$)|[^.!?]+$", line):
        if len(kept + sentence) > limit:
            break
        kept += sentence
    if kept.strip():
        return kept.strip()
    return line[:limit].rsplit(" ", 1)[0].rstrip(" ,;:") + "…"


def _train_args(obj: Any) -> dict[str, Any]:
    args = obj.get("args") if isinstance(obj, Mapping) else None
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    if not isinstance(args, Mapping):
        return {}
    keep = ("model", "base_rate", "input_size", "nb_classes")
    return {k: args[k] for k in keep if k in args and isinstance(args[k], (str, int, float))}


def _select_state_dict(obj: Any, path: Path, use_ema: bool) -> tuple[dict[str, torch.Tensor], str]:
    if not isinstance(obj, Mapping):
        raise BadInput(f"{path} holds a {type(obj).__name__}, not a state dict or a checkpoint dict")
    if use_ema:
        if not isinstance(obj.get("model_ema"), Mapping):
            raise BadInput(f"--use-ema given but {path} has no 'model_ema' entry (it has: {_list(obj)})")
        candidate, source = obj["model_ema"], "model_ema"
    else:
        source = next((k for k in STATE_DICT_KEYS if isinstance(obj.get(k), Mapping)), "<root>")
        candidate = obj if source == "<root>" else obj[source]
    tensors = {k: v for k, v in candidate.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise BadInput(f"{path} has no model weights (top-level entries: {_list(obj)})")
    return _strip_prefixes(tensors), source


def _strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in STRIPPED_PREFIXES:
        if all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict
