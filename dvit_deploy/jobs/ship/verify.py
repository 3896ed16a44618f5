"""``dvit verify``: is a bundle intact, do its manifests describe its files, and (with TensorRT)
may its engines run on this machine? ``run_package`` runs the same checks on every new bundle.

Malformed bundles are bad input (exit 2); tampered or missing files are failed checks (exit 1).

What "intact" means, proved for every file: each file ``bundle.json`` names (models, manifests, external
weights, engines, Triton configs) and each line of ``SHA256SUMS`` is a path inside the bundle, reached
without following a symbolic link, ending at a regular file; each is listed in ``SHA256SUMS`` exactly
once, with a matching sum. Files present but unlisted are reported and never vouched for.
"""

from __future__ import annotations

import importlib
import os
import re
import stat
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ...artifact.manifest import AnyManifest, EngineManifest, OnnxManifest, check_manifest
from ...helpers.lazy import available
from ...engines.targets import compatibility_problem, engine_compute_capability_problem, rtx_compatibility_problem
from ...helpers.errors import BadInput
from ...helpers.fileio import read_json, sha256_file
from .layout import BUNDLE_MANIFEST, BUNDLE_SCHEMA, CHECKSUMS, _bundle_files, graph_problems

if TYPE_CHECKING:
    from ...artifact.context import RunContext


@dataclass
class VerifyCheck:
    name: str
    status: str  # "ok", "failed", "skipped", "warning"
    detail: str = ""


@dataclass
class VerifyReport:
    bundle: str
    checks: list[VerifyCheck] = field(default_factory=list)

    @property
    def failures(self) -> list[VerifyCheck]:
        return [c for c in self.checks if c.status == "failed"]

    @property
    def passed(self) -> bool:
        return not self.failures

    def add(self, name: str, status: str, detail: str = "") -> None:
        self.checks.append(VerifyCheck(name, status, detail))

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "passed": self.passed, "checks": [asdict(c) for c in self.checks]}


@dataclass(frozen=True)
class VerifyOptions:
    """``dvit verify``'s input: the ``bundle`` folder or ``.tar.gz``; ``check_engines``: also ask the installed
    TensorRT whether the bundle's engines load here (where it is present)."""

    bundle: Path
    check_engines: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "bundle", Path(self.bundle).expanduser())


def run_verify(options: VerifyOptions, context: "RunContext") -> VerifyReport:
    """``dvit verify``: checksums, manifest consistency and (with TensorRT) engine compatibility of a bundle.

    A bundle is no artifact (its manifests are checked as files it holds), so there is none to open first;
    ``context`` is taken for the one seam every command has."""
    return verify_bundle(options.bundle, check_engines=options.check_engines)


def verify_bundle(path: Path, *, check_engines: bool = True) -> VerifyReport:
    """Checksums, manifest consistency and (with TensorRT) engine compatibility of a bundle.

    Malformed bundles (no SHA256SUMS/bundle.json, unreadable archive) raise BadInput (exit 2);
    tampered or missing files are failed checks in the report (exit 1 from the CLI).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise BadInput(f"bundle {path} not found")
    if path.is_file():
        if not tarfile.is_tarfile(path):
            raise BadInput(f"{path} is neither a bundle folder nor a .tar.gz bundle")
        with tempfile.TemporaryDirectory(prefix="dvit-verify-") as tmp:
            root = _extract(path, Path(tmp))
            report = _verify_folder(root, check_engines)
            report.bundle = str(path)
            return report
    return _verify_folder(path, check_engines)


def _extract(archive: Path, dest: Path) -> Path:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                if m.name.startswith("/") or ".." in Path(m.name).parts or not (m.isfile() or m.isdir()):
                    raise BadInput(f"{archive} holds an unsafe entry '{m.name}'; refusing to extract it")
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BadInput(f"cannot read bundle archive {archive}: {exc}") from None
    tops = [p for p in dest.iterdir()]
    return tops[0] if len(tops) == 1 and tops[0].is_dir() else dest


def read_checksums(root: Path) -> dict[str, str]:
    """``SHA256SUMS`` as ``{path: sha256}``; a path listed twice is refused (which line would count?)."""
    entries, duplicates = _checksum_lines(root)
    if duplicates:
        rel, count = next(iter(duplicates.items()))
        raise BadInput(f"{root / CHECKSUMS} lists {rel} {count} times")
    return entries


def _checksum_lines(root: Path) -> tuple[dict[str, str], dict[str, int]]:
    sums = root / CHECKSUMS
    if sums.is_symlink() or not sums.is_file():
        raise BadInput(f"{root} is not a dvit bundle: {CHECKSUMS} is missing" if not sums.is_symlink()
                       else f"{sums} is a symbolic link, not the bundle's own file")
    entries: dict[str, str] = {}
    counts: dict[str, int] = {}
    for lineno, line in enumerate(sums.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line)
        if not match:
            raise BadInput(f"{sums}:{lineno} is not a 'sha256  path' line")
        rel = match.group(2)
        if _outside(rel):
            raise BadInput(f"{sums}:{lineno} names a path outside the bundle: {rel}")
        rel = Path(rel).as_posix()  # "./model//x" and "model/x" are the same file
        counts[rel] = counts.get(rel, 0) + 1
        entries.setdefault(rel, match.group(1).lower())
    return entries, {rel: n for rel, n in counts.items() if n > 1}


def _outside(rel: str) -> bool:
    return not rel or rel.startswith("/") or Path(rel).is_absolute() or ".." in Path(rel).parts


def file_problem(root: Path, rel: Any) -> str | None:
    """Why ``rel`` is not a regular file inside ``root`` reached without links (None when it is)."""
    if not isinstance(rel, str) or _outside(rel):
        return f"{rel} is outside the bundle"
    current = root
    parts = Path(rel).parts
    for i, part in enumerate(parts):
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return f"{rel} is missing"
        except OSError as exc:
            return f"{rel} cannot be read ({exc.strerror})"
        if stat.S_ISLNK(mode):
            return f"{Path(*parts[:i + 1]).as_posix()} is a symbolic link, not a file of the bundle"
        if i < len(parts) - 1 and not stat.S_ISDIR(mode):
            return f"{rel} is missing"
    if not stat.S_ISREG(mode):
        return f"{rel} is not a regular file"
    return None


def _verify_folder(root: Path, check_engines: bool) -> VerifyReport:
    report = VerifyReport(str(root))
    if root.is_symlink() or not root.is_dir():
        raise BadInput(f"bundle {root} is not a folder")
    sums, duplicates = _checksum_lines(root)
    problem = file_problem(root, BUNDLE_MANIFEST)
    if problem is not None and "missing" not in problem:
        raise BadInput(f"{root} is not a dvit bundle: {problem}")
    bundle = read_json(root / BUNDLE_MANIFEST, what="bundle manifest")
    if bundle.get("schema") != BUNDLE_SCHEMA:
        raise BadInput(f"{root / BUNDLE_MANIFEST} has schema {bundle.get('schema')!r}, expected {BUNDLE_SCHEMA}")

    # 1. Every listed file: inside, a regular file, listed once, matching. Unlisted files are reported, never
    #    vouched for (a device build adds engines); a file bundle.json names must be listed (step 2).
    if duplicates:
        report.add("checksums listed once", "failed",
                   "; ".join(f"{rel} is listed {n} times in {CHECKSUMS}" for rel, n in duplicates.items()))
    bad, missing, not_files = [], [], []
    for rel, expected in sums.items():
        problem = file_problem(root, rel)
        if problem is not None and problem.endswith("is missing"):
            missing.append(rel)
        elif problem is not None:
            not_files.append(problem)
        if problem is not None:
            continue
        if sha256_file(root / rel) != expected:
            bad.append(rel)
    if not_files:
        report.add("regular files", "failed", "; ".join(not_files))
    if bad:
        report.add("checksums", "failed", "modified: " + ", ".join(bad))
    if missing:
        report.add("files present", "failed", "missing: " + ", ".join(missing))
    if not bad and not missing and not not_files and not duplicates:
        report.add("checksums", "ok", f"{len(sums)} files match {CHECKSUMS}")
    unlisted = [rel for rel in _bundle_files(root) if rel not in sums]
    if unlisted:
        report.add("unlisted files", "warning", "not covered by the checksums, not trusted: " + ", ".join(unlisted[:5])
                   + (" ..." if len(unlisted) > 5 else ""))

    # 2. Every file bundle.json names is a listed regular file inside the bundle.
    named = _named_files(root, bundle)
    named_problems = []
    for rel in named:
        problem = file_problem(root, rel)
        if problem is not None:
            named_problems.append(f"bundle.json names {rel}: {problem}")
        elif Path(rel).as_posix() not in sums:
            named_problems.append(f"bundle.json names {rel}, which {CHECKSUMS} does not list")
    if named_problems:
        report.add("files bundle.json names", "failed", "; ".join(named_problems))
        return report  # the per-manifest checks below would read files that are not the bundle's

    # 3. Manifests agree with the files they describe.
    for entry in bundle.get("models", []):
        _verify_onnx_entry(root, entry, report)
    engines: dict[Path, EngineManifest] = {}  # each shipped engine with its manifest, read and checked once
    for entry in bundle.get("engines", []):
        engines.update(_verify_engine_entry(root, entry, report))
    engine_files = list(engines)
    _verify_triton(root, bundle.get("triton_models", []), report)
    rtx = (bundle.get("target") or {}).get("flavour") == "rtx"
    if rtx:
        _verify_rtx(root, bundle, engine_files, report)

    # 4. Engines against this machine's TensorRT.
    if engine_files and check_engines:
        _engine_compatibility(engines, report, rtx=rtx)
    elif engine_files:
        report.add("engine compatibility", "skipped", "not requested")
    return report


def _named_files(root: Path, bundle: Mapping[str, Any]) -> list[str]:
    """Every file ``bundle.json`` points at, directly or through the ONNX manifests it names (in order, once)."""
    named: list[str] = [BUNDLE_MANIFEST]
    for key, fields in (("models", ("onnx", "manifest")), ("engines", ("engine", "manifest", "source_onnx"))):
        entries = bundle.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
            raise BadInput(f"{BUNDLE_MANIFEST}: '{key}' is not a list of entries")
        for entry in entries:
            for f in fields:
                value = entry.get(f)
                if f == "source_onnx" and value is None:
                    continue
                if not isinstance(value, str):
                    raise BadInput(f"{BUNDLE_MANIFEST} has a {key[:-1]} entry whose '{f}' is not a path")
                named.append(value)
    for entry in bundle.get("models", []):
        rel_onnx, rel_manifest = entry.get("onnx"), entry.get("manifest")
        if not isinstance(rel_onnx, str) or not isinstance(rel_manifest, str) or _outside(rel_onnx):
            continue
        if file_problem(root, rel_manifest) is None:
            try:
                # Raw on purpose: every name the shipped manifest lists, as written (a non-string is reported as a
                # path that is not in the bundle, not typed away); the manifest itself is checked in step 3.
                record = read_json(root / rel_manifest).get("onnx") or {}
            except BadInput:
                continue
            parent = Path(rel_onnx).parent
            external = record.get("external_data", []) if isinstance(record, Mapping) else []
            named.extend((parent / n).as_posix() if isinstance(n, str) else repr(n) for n in external or [])
    triton = bundle.get("triton_models", [])
    if not isinstance(triton, list):
        raise BadInput(f"{BUNDLE_MANIFEST}: 'triton_models' is not a list")
    named.extend(f"triton/{n}/config.pbtxt" if isinstance(n, str) and "/" not in n and n not in ("", ".", "..")
                 else f"triton/{n}" for n in triton)
    return list(dict.fromkeys(named))


def _shipped_manifest(path: Path, kind: type[AnyManifest]) -> AnyManifest:
    """A manifest in the bundle, read as every command reads it (schema and field types checked, typed):
    what it promises about its file is what dvit will believe. BadInput names what is wrong with it."""
    data = read_json(path)
    check_manifest(data, path)
    try:
        return kind.from_json(data)
    except (TypeError, ValueError) as exc:  # a field check_manifest does not type, holding the wrong type
        raise BadInput(f"{path} cannot be read: {exc}") from None


def _verify_onnx_entry(root: Path, entry: Mapping[str, Any], report: VerifyReport) -> None:
    """An ONNX entry of bundle.json: its manifest describes the shipped file (name, sha256, size, external
    weights) and the keep counts bundle.json gives."""
    rel_onnx, rel_manifest = entry.get("onnx"), entry.get("manifest")
    if not isinstance(rel_onnx, str) or not isinstance(rel_manifest, str):
        raise BadInput(f"{BUNDLE_MANIFEST} has a model entry without onnx/manifest paths")
    onnx_file, manifest_file = root / rel_onnx, root / rel_manifest
    if not onnx_file.is_file() or not manifest_file.is_file():
        report.add(f"manifest {rel_manifest}", "failed", f"{rel_onnx if not onnx_file.is_file() else rel_manifest} missing")
        return
    try:
        manifest = _shipped_manifest(manifest_file, OnnxManifest)
    except BadInput as exc:
        report.add(f"manifest {rel_manifest}", "failed", str(exc))
        return
    problems = []
    if manifest.artifact not in (None, onnx_file.name):
        problems.append(f"describes {manifest.artifact}, not {onnx_file.name}")
    if manifest.sha256 and manifest.sha256 != sha256_file(onnx_file):
        problems.append(f"sha256 of {rel_onnx} differs from the manifest")
    if manifest.bytes is not None and manifest.bytes != onnx_file.stat().st_size:
        problems.append(f"size of {rel_onnx} differs from the manifest")
    for name, digest in manifest.external_data_sha256.items():
        data = onnx_file.parent / name
        if not data.is_file():
            problems.append(f"external weights {name} missing")
        elif sha256_file(data) != digest:
            problems.append(f"sha256 of {name} differs from the manifest")
    shipped_counts = entry.get("keep_counts")  # bundle.json's record of the model, as written
    if shipped_counts is not None and list(manifest.model.keep_counts) != shipped_counts:
        problems.append("keep counts differ between bundle.json and the manifest")
    if not problems:  # the graph does what the manifest says (the export's own structure check)
        problems.extend(f"the graph differs from the manifest: {p}" for p in graph_problems(onnx_file, manifest)[:2])
    report.add(f"manifest {rel_manifest}", "failed" if problems else "ok",
               "; ".join(problems) if problems else f"matches {rel_onnx}")


def _verify_engine_entry(root: Path, entry: Mapping[str, Any], report: VerifyReport) -> dict[Path, EngineManifest]:
    """An engine entry of bundle.json: its manifest describes the shipped engine and the ONNX it came from.
    Returns the engine with its typed manifest (empty when either is missing or unreadable)."""
    rel_engine, rel_manifest = entry.get("engine"), entry.get("manifest")
    if not isinstance(rel_engine, str) or not isinstance(rel_manifest, str):
        raise BadInput(f"{BUNDLE_MANIFEST} has an engine entry without engine/manifest paths")
    engine_file, manifest_file = root / rel_engine, root / rel_manifest
    if not engine_file.is_file() or not manifest_file.is_file():
        report.add(f"manifest {rel_manifest}", "failed", "engine or manifest missing")
        return {}
    try:
        manifest = _shipped_manifest(manifest_file, EngineManifest)
    except BadInput as exc:
        report.add(f"manifest {rel_manifest}", "failed", str(exc))
        return {}
    problems, unknown = [], []
    claim = engine_compute_capability_problem(manifest)
    if claim is not None:
        problems.append(claim)
    if manifest.sha256 is None:
        unknown.append("engine sha256")
    elif manifest.sha256 != sha256_file(engine_file):
        problems.append(f"sha256 of {rel_engine} differs from its manifest")
    source = entry.get("source_onnx")
    if isinstance(source, str) and (root / source).is_file():
        if manifest.onnx_sha256 is None:
            unknown.append("source ONNX sha256")
        elif manifest.onnx_sha256 != sha256_file(root / source):
            problems.append(f"engine was built from a different ONNX than {source}")
    detail = "; ".join(problems) if problems else f"matches {rel_engine}"
    if unknown and not problems:
        detail += f" (manifest lacks {', '.join(unknown)})"
    report.add(f"manifest {rel_manifest}", "failed" if problems else "ok", detail)
    return {engine_file: manifest}


def _verify_triton(root: Path, names: list[str], report: VerifyReport) -> None:
    for name in names:
        config = root / "triton" / name / "config.pbtxt"
        if not config.is_file():
            report.add(f"triton {name}", "failed", "config.pbtxt missing")
            continue
        text = config.read_text(errors="replace")
        platform = re.search(r'platform:\s*"([^"]+)"', text) or re.search(r'backend:\s*"(python)"', text)
        # The Python-backend flavour (--triton-python) runs dvit's model.py beside its spec.
        expected_file = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan", "python": "model.py"}.get(
            platform.group(1) if platform else "")
        problems = []
        if expected_file is None:
            problems.append("unknown or missing platform")
        elif file_problem(root, f"triton/{name}/1/{expected_file}") is not None:
            problems.append(f"1/{expected_file} missing for platform {platform.group(1)}")
        if f'name: "{name}"' not in text:
            problems.append("config name differs from its folder")
        report.add(f"triton {name}", "failed" if problems else "ok", "; ".join(problems) or platform.group(1))


def _engine_compatibility(engines: Mapping[Path, EngineManifest], report: VerifyReport, *, rtx: bool) -> None:
    """Ask the engines layer whether each engine may be deserialized on this machine's TensorRT (TensorRT-RTX
    for an rtx bundle) and GPU, from the manifests step 3 read and checked."""
    module, product = ("tensorrt_rtx", "TensorRT-RTX") if rtx else ("tensorrt", "TensorRT")
    if not available(module):
        report.add("engine compatibility", "skipped", f"engine compatibility not checked: {module} not installed")
        return
    try:
        runtime = importlib.import_module(module)

        from ...engines.trt_build import cuda_device  # asks torch for the GPU: imported only here

        device = cuda_device()
    except Exception as exc:  # no GPU (an RTX bundle's engines are checked on the RTX machine), broken install
        report.add("engine compatibility", "skipped",
                   f"engine compatibility not checked: {str(exc).splitlines()[0][:160]}")
        return
    version = runtime.__version__
    for engine_file, manifest in engines.items():
        if rtx:
            problem = rtx_compatibility_problem(manifest, rtx_version=version,
                                                compute_capability=device.compute_capability, gpu_name=device.name)
        else:
            problem = compatibility_problem(manifest, trt_version=version, device=device)
        report.add(f"engine {engine_file.name} on this device", "failed" if problem else "ok",
                   problem or f"{product} {version} on {device.name}")


def _verify_rtx(root: Path, bundle: Mapping[str, Any], engine_files: list[Path], report: VerifyReport) -> None:
    """An RTX bundle: TensorRT-RTX engines (their header), and a run script that runs each of them."""
    from ...engines.targets import RTX_ENGINE_MAGIC

    if not bundle.get("engines"):
        report.add("TensorRT-RTX engines", "failed", "an rtx bundle ships engines, and this one has none")
    for engine_file in engine_files:
        with open(engine_file, "rb") as fh:
            header = fh.read(len(RTX_ENGINE_MAGIC))
        report.add(f"engine {engine_file.name} format", "ok" if header == RTX_ENGINE_MAGIC else "failed",
                   "TensorRT-RTX engine header" if header == RTX_ENGINE_MAGIC else
                   f"starts with {header!r}, not TensorRT-RTX's {RTX_ENGINE_MAGIC!r}")
    script = root / str(bundle.get("run_script") or "run_on_device.sh")
    if not script.is_file():
        report.add("run script", "failed", f"{script.name} missing")
        return
    text = script.read_text(errors="replace")
    missing = [f.name for f in engine_files if f"--loadEngine=engines/{f.name}" not in text]
    problems = (["does not call tensorrt_rtx"] if "TENSORRT_RTX" not in text else []) + \
               ([f"does not run {', '.join(missing)}"] if missing else [])
    report.add("run script", "failed" if problems else "ok",
               "; ".join(problems) or f"{script.name} runs {len(engine_files)} engine(s) with tensorrt_rtx --loadEngine")
