"""Shipping: device bundles (the folder and the same folder as ``.tar.gz``), written atomically.

A bundle holds the ONNX model, any engines, their manifests, a device README,
``build_on_device.sh`` (the ``trtexec`` commands that build the engine on the device itself: an x86
host cannot build a Jetson engine; see ``trtexec.py``), an optional Triton repository
(``triton.py``) and ``SHA256SUMS`` in ``sha256sum -c`` format. ``bundle.json`` describes the bundle
for ``dvit verify`` (``verify.py``), whose checks every new bundle passes before it is moved into
place. Device targets are rows of the TensorRT target table (``engines.targets``).
"""

from __future__ import annotations

import glob
import os
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from ... import __version__
from ...artifact.manifest import OnnxManifest, check_manifest
from ...artifact.store import Artifact, open_artifact
from ...helpers.defaults import DEFAULT_OPSET
from ...engines.targets import DEVICE_TARGETS, DeviceTarget, get_device_target, same_tensorrt_release
from ...helpers.errors import BadInput, CheckFailed
from ...helpers.fileio import (current_umask, is_same_or_parent_of_cwd, manifest_path, read_json, temp_prefix,
                      write_json_atomic)
from ...helpers.lazy import signals_held
from .layout import (BUNDLE_MANIFEST, BUNDLE_SCHEMA, CHECKSUMS, DEFAULT_BUNDLES_DIR, DEFAULT_PROFILE, ENGINE_SUFFIXES,
                     EngineItem, OnnxItem, _str, engine_facts, graph_problems, write_checksums)
from .triton import _write_triton
from .readme import _device_readme, item_precision, shipped_precision
from .trtexec import _batch_profile, build_script
from .rtx import RUN_SCRIPT, check_rtx_artifacts, run_script
from .verify import _verify_folder

if TYPE_CHECKING:
    from ...artifact.context import RunContext

# The device targets are the TensorRT target table's (engines/targets.py); the old names stay.
Target = DeviceTarget
TARGETS = DEVICE_TARGETS
get_target = get_device_target


# --------------------------------------------------------------------------------------------
# Artifacts going into a bundle


def _resolve_near(base: Path, name: Any) -> Path | None:
    if not isinstance(name, str):
        return None
    path = Path(name)
    candidates = [path] if path.is_absolute() else [base / path, base / path.name, Path.cwd() / path]
    return next((c for c in candidates if c.is_file()), None)


def _open_path(path: Path, what: str, refuse: Callable[[Artifact], None] | None = None,
               context: "RunContext | None" = None) -> Artifact:
    """A path opened once: read, checked and typed, ``refuse`` may turn it away, and only then is its
    sha256 checked."""
    if not path.is_file():
        raise BadInput(f"{what} {path} not found")
    opened = open_artifact(path, context=context, verify=False)  # verified below, once refuse has spoken
    if refuse is not None:
        refuse(opened)
    return opened.verified()


def _refuse_foreign_kind(opened: Artifact) -> None:
    if opened.onnx.kind != "onnx":
        raise BadInput(f"{manifest_path(opened.path)} is not an ONNX manifest (kind {opened.onnx.kind!r})")


def open_artifacts(paths: Iterable[str | Path], context: "RunContext | None" = None) -> list[Artifact]:
    """The ONNX models and engines ``dvit package`` was given, opened as it opens them (a foreign manifest
    ``kind`` is refused before the sha256 is checked); the CLI calls it, the job takes what it returns."""
    opened = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.suffix == ".onnx":
            opened.append(_open_path(path, "ONNX model", _refuse_foreign_kind, context))
        elif path.suffix in ENGINE_SUFFIXES:
            opened.append(_open_path(path, "engine", context=context))
        elif not path.exists():
            raise BadInput(f"artifact {path} not found")
        else:
            raise BadInput(f"{path.name} is neither an ONNX model (.onnx) nor a TensorRT engine (.engine/.plan)")
    return opened


def _load_onnx(opened: Artifact) -> OnnxItem:
    """The ONNX to ship, checked against its manifest (a foreign ``kind`` is refused)."""
    _refuse_foreign_kind(opened)
    for name in opened.onnx.external_data:
        if not (opened.path.parent / name).is_file():
            raise BadInput(f"external weights {name} of {opened.name} not found beside it")
    problems = graph_problems(opened.path, opened.onnx)
    if problems:
        raise BadInput(f"{opened.name} does not do what its manifest says ({manifest_path(opened.path).name}: "
                       f"{'; '.join(problems[:2])}); re-export it rather than editing the manifest")
    return OnnxItem(opened)


def _load_engine(opened: Artifact, context: "RunContext | None" = None) -> EngineItem:
    """The engine to ship and the ONNX it was built from (found beside it, opened and checked once)."""
    engine = opened.engine
    folder = opened.path.parent
    source = None
    onnx_manifest = _resolve_near(folder, engine.onnx_manifest)
    onnx_path = _resolve_near(folder, engine.onnx_path)
    if onnx_path is None and onnx_manifest is not None:
        linked = read_json(onnx_manifest, what="linked ONNX manifest")
        check_manifest(linked, onnx_manifest)
        onnx_path = _resolve_near(onnx_manifest.parent, OnnxManifest.from_json(linked).artifact)
    if onnx_path is not None and onnx_path.suffix == ".onnx":
        source = _load_onnx(_open_path(onnx_path, "ONNX model", _refuse_foreign_kind, context))
    return EngineItem(opened, source)


def collect_artifacts(artifacts: Iterable[Artifact],
                      context: "RunContext | None" = None) -> tuple[list[OnnxItem], list[EngineItem]]:
    """ONNX models and engines to ship (opened: ``open_artifacts``); an engine brings the ONNX it was built from."""
    onnx_items: dict[Path, OnnxItem] = {}
    engines: list[EngineItem] = []
    for opened in artifacts:
        path = opened.path
        if path.suffix == ".onnx":
            onnx_items.setdefault(path.resolve(), _load_onnx(opened))
        elif path.suffix in ENGINE_SUFFIXES:
            engine = _load_engine(opened, context)
            engines.append(engine)
            if engine.source is not None:
                onnx_items.setdefault(engine.source.path.resolve(), engine.source)
        else:
            raise BadInput(f"{path.name} is neither an ONNX model (.onnx) nor a TensorRT engine (.engine/.plan)")
    if not onnx_items and not engines:
        raise BadInput("nothing to package: give an ONNX model or an engine")
    return list(onnx_items.values()), engines


def check_target(target: DeviceTarget, onnx_items: list[OnnxItem], engines: list[EngineItem]) -> list[str]:
    """Refuse what cannot work on the target; return notes for what merely needs care."""
    notes = []
    for item in onnx_items:
        opset = item.manifest.opset
        if opset is not None and opset > target.max_opset:
            raise BadInput(f"{item.path.name} uses ONNX opset {opset}, but TensorRT {target.tensorrt} on {target.name} "
                           f"parses opsets up to {target.max_opset}: re-export with --opset {min(DEFAULT_OPSET, target.max_opset)}")
    for engine in engines:
        built = engine.manifest
        version = built.tensorrt
        if version is None:
            notes.append(f"{engine.path.name}: its manifest does not record the TensorRT version; "
                         f"the device rebuilds it if it does not load")
        elif not same_tensorrt_release(version, target.tensorrt):
            raise BadInput(f"{engine.path.name} was built with TensorRT {version}, but {target.name} runs TensorRT "
                           f"{target.tensorrt}: ship the ONNX and build on the device (build_on_device.sh)")
        if built.platform and built.platform != target.arch:
            raise BadInput(f"{engine.path.name} was built on {built.platform}, but {target.name} is {target.arch}: engines "
                           "do not move between platforms; ship the ONNX and build on the device")
        cc = built.compute_capability
        if target.compute_capability and cc and cc != target.compute_capability:
            raise BadInput(f"{engine.path.name} was built for compute capability {cc} ({built.gpu or 'unknown GPU'}), "
                           f"but {target.name} has {target.compute_capability}: engines are specific to the GPU; "
                           f"ship the ONNX and build on the device")
    return notes


# --------------------------------------------------------------------------------------------
# Bundles


@dataclass
class BundleResult:
    folder: Path
    archive: Path | None
    target: str
    files: list[str]
    triton_models: list[str]
    build_commands: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["folder"] = str(self.folder)
        data["archive"] = None if self.archive is None else str(self.archive)
        return data


def default_bundle_dir(onnx_items: list[OnnxItem], engines: list[EngineItem], target: DeviceTarget) -> Path:
    stem = onnx_items[0].path.stem if onnx_items else engines[0].path.stem
    return Path.cwd() / DEFAULT_BUNDLES_DIR / f"{stem}-{target.name}"


@dataclass(frozen=True)
class PackageOptions:
    """``dvit package``'s flags: the device ``target``, the bundle folder (``output``; None:
    ``./bundles/<model>-<target>``), a Triton repository (``triton``, with ``triton_python`` also the CPU
    Python-backend model), the device build's ``precision`` and batch ``profile`` (min, opt, max),
    ``archive`` (also ``<folder>.tar.gz``) and ``force`` (replace a previous bundle only).

    Checked when made, in the order the command always checked them."""

    target: str
    output: Path | None = None
    triton: bool = False
    triton_python: bool = False
    precision: str = "fp16"
    profile: tuple[int, int, int] = DEFAULT_PROFILE
    archive: bool = True
    force: bool = False

    def __post_init__(self) -> None:
        if self.triton_python and not self.triton:
            raise BadInput("--triton-python adds a model to the Triton repository: use it with --triton")
        get_target(self.target)
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise BadInput(f"--precision must be fp32, fp16 or bf16, got '{self.precision}'")
        object.__setattr__(self, "profile", tuple(self.profile))
        if self.output is not None:
            object.__setattr__(self, "output", Path(self.output).expanduser())


def make_bundle(paths: Iterable[str | Path], target: str, *, on_phase: Callable[[str], None] | None = None,
                **options: Any) -> BundleResult:
    """``dvit package`` from paths: ``PackageOptions(target, **options)``, the paths opened as the command
    opens them (``open_artifacts``), then ``run_package`` with a fresh ``RunContext``."""
    from ...artifact.context import RunContext

    package_options, context = PackageOptions(target, **options), RunContext()
    return run_package(package_options, context, open_artifacts(paths, context), on_phase=on_phase)


def run_package(options: PackageOptions, context: "RunContext", artifacts: Sequence[Artifact], *,
                on_phase: Callable[[str], None] | None = None) -> BundleResult:
    """Write the bundle folder (and ``<folder>.tar.gz``) atomically: built in a temp dir, then renamed.

    ``artifacts``: the opened ONNX models and engines (``open_artifacts``); an engine brings the ONNX it
    was built from. What cannot work on the target is refused before anything is written."""
    phase = on_phase or (lambda name: None)
    artifacts = [a.in_context(context) for a in artifacts]  # an engine's source ONNX opens in this run
    target = get_target(options.target)
    phase("collect")
    onnx_items, engines = collect_artifacts(artifacts, context)  # an engine's source ONNX is opened there
    if target.flavour == "rtx":
        check_rtx_artifacts(target, onnx_items, engines)
        if options.triton:
            raise BadInput("--triton: Triton's TensorRT backend runs TensorRT engines, not TensorRT-RTX ones; "
                           "package a TensorRT target for Triton")
    notes = check_target(target, onnx_items, engines)
    for item in onnx_items:
        _batch_profile(item.model, options.profile)  # validates the profile early
    folder = _bundle_folder(options, onnx_items, engines, target)
    tar_path = folder.with_name(folder.name + ".tar.gz")
    check_bundle_outputs(folder, tar_path if options.archive else None, force=options.force)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot create {folder.parent}: {exc.strerror}") from None
    contents = _Contents(target, onnx_items, engines, options)
    files, triton_names = _write_bundle(contents, folder, tar_path if options.archive else None, phase)
    return BundleResult(folder, tar_path if options.archive else None, target.name, files, triton_names,
                        build_commands=0 if target.flavour == "rtx" else len(onnx_items), notes=notes)


def _bundle_folder(options: PackageOptions, onnx_items: list[OnnxItem], engines: list[EngineItem],
                   target: DeviceTarget) -> Path:
    """The bundle folder (``--output`` or the default), refused where a bundle must not go."""
    folder = (options.output or default_bundle_dir(onnx_items, engines, target)).absolute()
    if is_same_or_parent_of_cwd(folder):
        raise BadInput(f"refusing to use {folder} as the bundle folder: it is the current folder or one of its "
                       "parents, which the bundle would replace; give a new folder with --output")
    outer = next((parent for parent in folder.parents if is_bundle_folder(parent)), None)
    if outer is not None:
        raise BadInput(f"refusing to write a bundle inside the bundle {outer}: the outer bundle's {CHECKSUMS} would "
                       "not cover it (dvit verify reports it unlisted); give a folder outside it with --output")
    return folder


@dataclass(frozen=True)
class _Contents:
    """What goes into one bundle: the target, the collected artifacts and the options."""

    target: DeviceTarget
    onnx_items: list[OnnxItem]
    engines: list[EngineItem]
    options: PackageOptions


def _write_bundle(contents: _Contents, folder: Path, tar_path: Path | None,
                  phase: Callable[[str], None]) -> tuple[list[str], list[str]]:
    """Fill a temp folder, check it, archive it, and swap folder and archive into place together.

    Returns the bundle's files and its Triton models."""
    tmp: Path | None = Path(tempfile.mkdtemp(prefix=temp_prefix(folder.name), dir=folder.parent))
    tmp_tar: Path | None = None
    try:
        triton_names = _fill(tmp, contents, phase)
        phase("checksums")
        files = write_checksums(tmp)
        # Never ship what `dvit verify` would reject (a file changed while it was copied, a bug of ours).
        own_check = _verify_folder(tmp, check_engines=False)
        if not own_check.passed:
            failed = own_check.failures[0]
            raise CheckFailed(f"the new bundle fails its own verification ({failed.name}: {failed.detail}); "
                              "nothing was written")
        # The archive is made from the finished temp folder, then folder and archive replace the old pair
        # together (or, on any failure or signal, not at all): never a new folder beside an old .tar.gz.
        os.chmod(tmp, 0o777 & ~current_umask())
        if tar_path is not None:
            phase("archive")
            tmp_tar = _archive(tmp, folder, tar_path)
        _swap_into_place(tmp, folder, tmp_tar, tar_path)
        tmp = tmp_tar = None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if tmp_tar is not None:
            tmp_tar.unlink(missing_ok=True)
    return files, triton_names


def _archive(tmp: Path, folder: Path, tar_path: Path) -> Path:
    """``tmp`` as a .tar.gz beside ``tar_path`` (a temp name until the swap), rooted at the folder's name."""
    fd, name = tempfile.mkstemp(prefix=temp_prefix(tar_path.name), suffix=".tmp", dir=folder.parent)
    os.close(fd)
    tmp_tar = Path(name)
    try:
        with tarfile.open(tmp_tar, "w:gz") as tar:
            tar.add(tmp, arcname=folder.name)
        os.chmod(tmp_tar, 0o666 & ~current_umask())
    except BaseException:
        tmp_tar.unlink(missing_ok=True)
        raise
    return tmp_tar


def _fill(tmp: Path, contents: _Contents, phase: Callable[[str], None]) -> list[str]:
    """The bundle's files in ``tmp``: model/, engines/, triton/, README.md, the device script, bundle.json."""
    target, onnx_items, engines, options = contents.target, contents.onnx_items, contents.engines, contents.options
    precision, profile = options.precision, options.profile
    phase("copy")
    (tmp / "model").mkdir()
    for item in onnx_items:
        for f in item.files:
            shutil.copy2(f, tmp / "model" / f.name)
    if engines:
        (tmp / "engines").mkdir()
        for engine in engines:
            for f in engine.files:
                shutil.copy2(f, tmp / "engines" / f.name)
    triton_names: list[str] = []
    pending: dict[str, str] = {}
    if options.triton:
        phase("triton")
        triton_names, pending = _write_triton(tmp, onnx_items, engines, profile, python=options.triton_python)
    phase("device files")
    (tmp / "README.md").write_text(_device_readme(target, onnx_items, engines, precision, profile, triton_names))
    if target.flavour == "rtx":  # engines ship as built: a run script, no device build
        script = tmp / RUN_SCRIPT
        script.write_text(run_script(engines, target, profile))
    else:
        script = tmp / "build_on_device.sh"
        script.write_text(build_script(onnx_items, target, precision=precision, profile=profile,
                                       triton_models=pending))
    script.chmod(0o755)
    write_json_atomic(tmp / BUNDLE_MANIFEST, _bundle_json(contents, triton_names))
    return triton_names


def _bundle_json(contents: _Contents, triton_names: list[str]) -> dict[str, Any]:
    """bundle.json (dvit-deploy/bundle/1), not an artifact manifest."""
    target, onnx_items, engines = contents.target, contents.onnx_items, contents.engines
    precision = contents.options.precision
    return {
        "schema": BUNDLE_SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dvit_deploy": __version__,
        "target": asdict(target),
        # What the device build produces (an int8 Q/DQ model builds int8 whatever --precision says);
        # the requested --precision is kept beside it (for int8: the fallback outside the Q/DQ pairs).
        "precision": shipped_precision(target, onnx_items, engines, precision),
        "requested_precision": precision,
        "batch_profile": list(contents.options.profile),
        "models": [{"onnx": f"model/{i.path.name}", "manifest": f"model/{manifest_path(i.path).name}",
                    "variant": i.model.variant, "keep_counts": list(i.model.keep_counts),
                    **dict(zip(("precision", "precision_detail"), item_precision(i, target, engines, precision)))}
                   for i in onnx_items],
        "engines": [{"engine": f"engines/{e.path.name}", "manifest": f"engines/{manifest_path(e.path).name}",
                     "source_onnx": None if e.source is None else f"model/{e.source.path.name}",
                     **{k: _str(v) for k, v in engine_facts(e.manifest).items() if k in ("tensorrt", "gpu",
                                                                                         "compute_capability",
                                                                                         "precision")},
                     **({"flavour": "rtx", "compute_capabilities": list(e.manifest.rtx_compute_capabilities)}
                        if e.manifest.is_rtx else {})}
                    for e in engines],
        **({"run_script": RUN_SCRIPT} if target.flavour == "rtx" else {}),
        "triton_models": triton_names,
    }


def is_bundle_folder(folder: Path) -> bool:
    """A folder written by ``dvit package``: it holds our ``bundle.json``."""
    bundle_json = folder / BUNDLE_MANIFEST
    if not bundle_json.is_file():
        return False
    try:
        return read_json(bundle_json, what="bundle manifest").get("schema") == BUNDLE_SCHEMA
    except BadInput:
        return False


def check_bundle_outputs(folder: Path, tar_path: Path | None, *, force: bool) -> None:
    """What ``--force`` may replace: a previous bundle folder (it holds our bundle.json) and its archive.

    Anything else — a folder that is not a bundle, a file where the folder goes — is refused, with or
    without ``--force`` (the current folder, its parents and ``/`` are refused before this).
    """
    if folder.exists() or folder.is_symlink():
        if not force:
            raise BadInput(f"output {folder} already exists; pass --force to replace it")
        if folder.is_symlink() or not folder.is_dir():
            raise BadInput(f"refusing to replace {folder}: it is not a folder; --force replaces only a previous "
                           f"bundle folder (one holding {BUNDLE_MANIFEST})")
        if not is_bundle_folder(folder):
            raise BadInput(f"refusing to replace {folder}: it is not a dvit bundle (no {BUNDLE_MANIFEST}); "
                           "--force replaces only a previous bundle folder")
    if tar_path is not None and (tar_path.exists() or tar_path.is_symlink()):
        if not force:
            raise BadInput(f"output {tar_path} already exists; pass --force to replace it")
        if tar_path.is_symlink() or not tar_path.is_file() or not tarfile.is_tarfile(tar_path):
            raise BadInput(f"refusing to replace {tar_path}: it is not a bundle archive; --force replaces only a "
                           "previous .tar.gz bundle")


def _swap_into_place(tmp: Path, folder: Path, tmp_tar: Path | None = None, tar_path: Path | None = None) -> None:
    """Rename the finished temp folder (and its archive) into place: both or neither.

    Old ones are parked as ``.<name>.old-<pid>`` for the instant of the swap, with Ctrl-C/SIGTERM held
    back (``lazy.signals_held``), and put back if any rename fails; they are removed afterwards, and parked
    ones left by a killed (SIGKILL) process are removed next time.
    """
    pairs = [(tmp, folder)] + ([(tmp_tar, tar_path)] if tmp_tar is not None and tar_path is not None else [])
    for _, dst in pairs:
        for stale in dst.parent.glob(f".{glob.escape(dst.name)}.old-*"):
            if stale.is_dir() and is_bundle_folder(stale):
                shutil.rmtree(stale, ignore_errors=True)
            elif stale.is_file() and dst.name.endswith(".tar.gz"):
                stale.unlink(missing_ok=True)
    parked: list[tuple[Path, Path]] = []  # (parked name, real name)
    placed: list[Path] = []
    try:
        with signals_held():  # a signal now is delivered once the pair is consistent again
            try:
                for _, dst in pairs:
                    if dst.exists():
                        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
                        os.replace(dst, old)
                        parked.append((old, dst))
                for src, dst in pairs:
                    os.replace(src, dst)
                    placed.append(dst)
            except BaseException:
                for dst in placed:  # undo: the new ones out, the old ones back
                    _remove(dst)
                for old, dst in parked:
                    os.replace(old, dst)
                parked.clear()
                raise
    finally:
        for old, _ in parked:
            _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
