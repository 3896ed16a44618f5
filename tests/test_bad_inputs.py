"""Every command against bad input: one table, one rule.

Each case runs a real `dvit` command (in-process through the Typer app, or through the
executable's top-level handler) in an empty folder prepared by its setup, and asserts:

- the exit code (0 ok / 1 check failed / 2 bad input / 130 interrupted / 143 terminated);
- exactly one stderr line reporting the failure (``error:``, ``check failed:``, ``interrupted``,
  ``terminated``), holding the expected words; every other stderr line is progress or the
  "using <artifact>" line, never a traceback or a raw library warning;
- no file created, changed or removed anywhere outside the case's declared output (the working
  folder and its parent are compared before and after).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dvit_deploy.cli import app

from .conftest import make_official_checkpoint

runner = CliRunner()

FAILURE = re.compile(r"^(error:|check failed:|internal error:|interrupted$|terminated$)")
# Lines a command may print to stderr besides its one failure line: the artifact it picked, notes,
# and progress (one line per phase when stderr is not a terminal, as here).
INFO = re.compile(r"^(using |• |warning: .*--no-verify|(export|build|validate|profile|package|predict|eval|quantize|tradeoff)[: ])")


@dataclass
class Case:
    id: str
    args: list[str]
    exit_code: int
    words: list[str]
    setup: Callable[[Path, pytest.MonkeyPatch], None] = lambda d, mp: None
    output: list[str] = field(default_factory=list)  # paths (relative to the work folder) it may change
    absent: list[str] = field(default_factory=list)  # words that must NOT be in the failure line
    via_entry: bool = False  # run through dvit_deploy.entry.main (the installed executable's path)


# --------------------------------------------------------------------------------------------
# Setups


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """A tiny export and a bundle of it, made once and copied into each case's folder."""
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model
    from dvit_deploy.jobs.ship import make_bundle

    folder = tmp_path_factory.mktemp("bad_inputs_src")
    export_onnx(load_model(model_name="tiny-deit", keep_ratio=0.7), folder / "export" / "tiny.onnx",
                token_outputs=True)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        make_bundle([folder / "export" / "tiny.onnx"], "x86-trt10", output=folder / "bundle", archive=True)
    finally:
        os.chdir(cwd)
    # An export from a checkpoint that then moved: the manifest records moved-away.pth, now at kept.pth.
    make_official_checkpoint(folder / "moved-away.pth", "tiny-deit")
    export_onnx(load_model(folder / "moved-away.pth"), folder / "from_ckpt" / "c.onnx", token_outputs=True)
    (folder / "moved-away.pth").rename(folder / "kept.pth")
    make_official_checkpoint(folder / "other.pth", "tiny-deit", seed=1)
    return folder


def _export(d: Path, mp) -> None:
    shutil.copytree(_SOURCE / "export", d / "export")


def _manifest_edited(**changes) -> Callable[[Path, pytest.MonkeyPatch], None]:
    """The tiny export with its manifest's top-level fields changed (None: the field removed)."""
    def setup(d: Path, mp) -> None:
        _export(d, mp)
        path = d / "export" / "tiny.onnx.json"
        manifest = json.loads(path.read_text())
        for key, value in changes.items():
            if value is None:
                manifest.pop(key, None)
            else:
                manifest[key] = value
        path.write_text(json.dumps(manifest))
    return setup


def _tampered(d: Path, mp) -> None:
    _export(d, mp)
    with open(d / "export" / "tiny.onnx", "ab") as f:  # a byte appended after export
        f.write(b"\0")


def _bundle(d: Path, mp) -> None:
    shutil.copytree(_SOURCE / "bundle", d / "bundle")
    shutil.copy2(_SOURCE / "bundle.tar.gz", d / "bundle.tar.gz")


def _image(d: Path, name: str, data: bytes | None = None) -> None:
    if data is None:
        Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(d / name, format="PNG")
    else:
        (d / name).write_bytes(data)


def _foreign_onnx(d: Path, mp) -> None:
    """An ONNX someone else made (no manifest): dvit must not guess what it is."""
    shutil.copy2(_SOURCE / "export" / "tiny.onnx", d / "foreign.onnx")


def _write(name: str, data: bytes | str) -> Callable[[Path, pytest.MonkeyPatch], None]:
    def setup(d: Path, mp) -> None:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            (d / name).write_text(data)
        else:
            (d / name).write_bytes(data)
    return setup


def _both(*setups):
    def setup(d: Path, mp) -> None:
        for s in setups:
            s(d, mp)
    return setup


def _no_space_while_copying(d: Path, mp) -> None:
    _export(d, mp)

    def full_disk(src, dst, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    mp.setattr("dvit_deploy.jobs.ship.bundle.shutil.copy2", full_disk)


def _ctrl_c_while_importing(d: Path, mp) -> None:
    import dvit_deploy.cli as cli_package

    def interrupted(name):
        raise KeyboardInterrupt

    mp.setattr(cli_package, "__getattr__", interrupted)


def _sigterm_during_export(d: Path, mp) -> None:
    """What the SIGTERM handler raises, at the moment the ONNX is being written to its temp folder."""
    from dvit_deploy.cli.failures import Terminated

    def terminated(*a, **k):
        assert list(d.glob("export/.tiny-deit-r0.7.*")), "the export's temp folder should exist by now"
        raise Terminated()

    mp.setattr("dvit_deploy.export.onnx_export.check_export", terminated)


def _real_pickle(global_name: str) -> bytes:
    module, name = global_name.split(".")
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\nq\x00."


def _dense_checkpoint(d: Path, mp) -> None:
    make_official_checkpoint(d / "dense.pth", "tiny-deit", dense=True)


def _not_a_bundle_folder(d: Path, mp) -> None:
    _export(d, mp)
    (d / "mywork").mkdir()
    (d / "mywork" / "thesis.tex").write_text("months of work")


def _resum(bundle: Path, drop: tuple[str, ...] = ()) -> None:
    """Rewrite SHA256SUMS as a forger would: the sums of what is there now, without the ``drop`` prefixes."""
    import hashlib

    lines = []
    for line in (bundle / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split("  ", 1)
        if rel.startswith(drop):
            continue
        lines.append(f"{hashlib.sha256((bundle / rel).read_bytes()).hexdigest()}  {rel}")
    (bundle / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def _bundle_pointing_outside(d: Path, mp) -> None:
    """model/ deleted, bundle.json pointing at ../export (a real, intact model, but not the bundle's)."""
    _both(_export, _bundle)(d, mp)
    shutil.rmtree(d / "bundle" / "model")
    manifest = json.loads((d / "bundle" / "bundle.json").read_text())
    for model in manifest["models"]:
        model["onnx"] = "../export/" + Path(model["onnx"]).name
        model["manifest"] = "../export/" + Path(model["manifest"]).name
    (d / "bundle" / "bundle.json").write_text(json.dumps(manifest))
    _resum(d / "bundle", drop=("model/",))


def _bundle_with_a_link(d: Path, mp) -> None:
    """A listed file replaced by a link to a file outside, with its sum updated to match."""
    _bundle(d, mp)
    (d / "system.txt").write_text("root:x:0:0\n")
    (d / "bundle" / "README.md").unlink()
    (d / "bundle" / "README.md").symlink_to(d / "system.txt")
    _resum(d / "bundle")


def _bundle_with_a_linked_folder(d: Path, mp) -> None:
    _bundle(d, mp)
    shutil.move(d / "bundle" / "model", d / "elsewhere")
    (d / "bundle" / "model").symlink_to(d / "elsewhere", target_is_directory=True)


def _bundle_with_duplicate_sum(d: Path, mp) -> None:
    """A second, conflicting line for the model: which one counts? (the last one matches the file)."""
    _bundle(d, mp)
    sums = d / "bundle" / "SHA256SUMS"
    sums.write_text(f"{'0' * 64}  model/tiny.onnx\n" + sums.read_text())


def _bundle_with_unlisted_model(d: Path, mp) -> None:
    _bundle(d, mp)
    _resum(d / "bundle", drop=("model/tiny.onnx",))


def _bundle_with_edited_counts(d: Path, mp) -> None:
    """A forger's bundle: keep counts changed in the model manifest and in bundle.json alike, sums redone."""
    _bundle(d, mp)
    manifest = d / "bundle" / "model" / "tiny.onnx.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "keep_counts": [98, 49, 24]}))
    bundle = json.loads((d / "bundle" / "bundle.json").read_text())
    bundle["models"][0]["keep_counts"] = [98, 49, 24]
    (d / "bundle" / "bundle.json").write_text(json.dumps(bundle))
    _resum(d / "bundle")


def _manifest_edit(**fields) -> Callable[[Path, pytest.MonkeyPatch], None]:
    def setup(d: Path, mp) -> None:
        _export(d, mp)
        path = d / "export" / "tiny.onnx.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
    return setup


def _nested_manifest(d: Path, mp) -> None:
    _export(d, mp)
    (d / "export" / "tiny.onnx.json").write_text("[" * 100_000 + "]" * 100_000)


_BOMB: list[bytes] = []


def _bomb_png(d: Path, mp) -> None:
    """A 10000×10000 bilevel PNG: a few kB on disk, 100 Mpx decoded (past PIL's decompression-bomb limit)."""
    if not _BOMB:
        import io

        buffer = io.BytesIO()
        Image.new("1", (10_000, 10_000)).save(buffer, format="PNG")
        _BOMB.append(buffer.getvalue())
    (d / "bomb.png").write_bytes(_BOMB[0])


def _no_model_building(d: Path, mp) -> None:
    """Building the model takes seconds (8.5 s for DeiT-S): a refused output must be found before it."""
    def built(*a, **k):
        raise AssertionError("the model was built before the output was checked")

    mp.setattr("dvit_deploy.models.create_model", built)


def _default_export_exists(d: Path, mp) -> None:
    _write("export/tiny-deit-r0.7.onnx", b"old")(d, mp)
    _no_model_building(d, mp)


def _lost_the_race(d: Path, mp) -> None:
    """Another export writes m.onnx while this one is checking its graph: exactly one of them may win."""
    from dvit_deploy.export import onnx_export

    original = onnx_export.check_export

    def meanwhile(*a, **k):
        (d / "m.onnx").write_bytes(b"the other export's model")
        return original(*a, **k)

    mp.setattr(onnx_export, "check_export", meanwhile)


def _disk_full_in(target: str) -> Callable[[Path, pytest.MonkeyPatch], None]:
    """ENOSPC raised by what writes into a temporary name, naming that temporary name (as the OS does)."""
    def setup(d: Path, mp) -> None:
        if target == "export":
            def full(loaded, path, **k):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

            mp.setattr("dvit_deploy.export.onnx_export._export", full)
        else:
            _both(_export, lambda d, mp: _image(d, "cat.png"))(d, mp)

            def full(self, fname, *a, **k):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(fname))

            mp.setattr("matplotlib.figure.Figure.savefig", full)
    return setup


def _nameless_disk_full(target: str) -> Callable[[Path, pytest.MonkeyPatch], None]:
    """ENOSPC as a write to an open file raises it: no file name in the error (what a real full disk does)."""
    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def setup(d: Path, mp) -> None:
        if target == "export":
            mp.setattr("torch.onnx.ONNXProgram.save", full)  # the exporter's own write, wrapped by export
            return
        _export(d, mp)
        if target == "viz":
            _image(d, "cat.png")
            mp.setattr("matplotlib.figure.Figure.savefig", full)
        else:
            mp.setattr(Path, "write_bytes", full)
    return setup


def _interrupted_while_packaging(at: str) -> Callable[[Path, pytest.MonkeyPatch], None]:
    """`package --force` over a previous bundle, stopped while archiving or between the two renames."""
    def setup(d: Path, mp) -> None:
        from dvit_deploy.cli.failures import Terminated

        _both(_export, _bundle)(d, mp)
        if at == "archive":
            import tarfile

            real_open = tarfile.open

            def stopped(name=None, mode="r", *a, **k):
                if mode.startswith("w"):  # writing the new archive (reading one, as checks do, goes on)
                    raise Terminated()
                return real_open(name, mode, *a, **k)

            mp.setattr(tarfile, "open", stopped)
        else:
            real_replace = os.replace

            def replace(src, dst):
                if str(dst).endswith("bundle.tar.gz") and str(src).endswith(".tmp"):  # the new archive's rename
                    raise Terminated()  # the folder is already swapped: it must go back
                return real_replace(src, dst)

            mp.setattr("dvit_deploy.jobs.ship.bundle.os.replace", replace)
    return setup


def _export_of_a_moved_checkpoint(d: Path, mp) -> None:
    shutil.copytree(_SOURCE / "from_ckpt", d / "export")
    _image(d, "cat.png")


def _moved_checkpoint_and(name: str) -> Callable[[Path, pytest.MonkeyPatch], None]:
    def setup(d: Path, mp) -> None:
        _export_of_a_moved_checkpoint(d, mp)
        shutil.copy2(_SOURCE / name, d / "ckpt.pth")
    return setup


def _memory_of(gib: float) -> Callable[[Path, pytest.MonkeyPatch], None]:
    def setup(d: Path, mp) -> None:
        _export(d, mp)
        mp.setattr("dvit_deploy.runtime.memory.available_bytes", lambda: int(gib * (1 << 30)))
    return setup


LONG_PNG = "k" * 247 + ".png"  # 251 characters: a name the file system takes (255 at most)

_SOURCE: Path = Path()  # set by the fixture below for the setups

PNG_JUNK = b"\x89PNG\r\n\x1a\n" + b"\0" * 20

CASES = [
    # --- top level
    Case("unknown-command", ["nope"], 2, ["No such command", "nope"]),
    Case("unknown-option", ["export", "--bogus"], 2, ["No such option: --bogus"]),
    Case("ctrl-c-during-start-up", ["flops"], 130, ["interrupted"], _ctrl_c_while_importing, via_entry=True),
    # --- export
    Case("export-dense-with-keep-ratio", ["export", "--model", "tiny-deit", "--dense", "-r", "0.5"], 2,
         ["--dense exports the twin that keeps every token: --keep-ratio does not apply"]),
    Case("export-dense-with-stage-ratios", ["export", "--model", "tiny-deit", "--dense", "--stage-ratios", "0.7,0.5"],
         2, ["--stage-ratios does not apply"]),
    Case("export-missing-checkpoint", ["export", "missing.pth"], 2, ["checkpoint missing.pth not found"]),
    Case("export-directory-checkpoint", ["export", "ckpt_dir"], 2, ["is a directory"],
         lambda d, mp: (d / "ckpt_dir").mkdir()),
    Case("export-random-bytes", ["export", "rand.pth"], 2, ["not a PyTorch checkpoint (unrecognised format)"],
         _write("rand.pth", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))),
         absent=["--trust-checkpoint", "Python objects"]),
    Case("export-pickle-opcodes", ["export", "op.pth"], 2, ["not a readable PyTorch checkpoint"],
         _write("op.pth", b"\x80\x02K\x01\x94\x94."), absent=["--trust-checkpoint"]),
    Case("export-pickle-with-global", ["export", "evil.pth"], 2,
         ["holds Python objects beyond tensors (os.system)", "--trust-checkpoint"],
         _write("evil.pth", _real_pickle("os.system"))),
    Case("export-protocol-5-junk", ["export", "p5.pth"], 2, ["not a readable PyTorch checkpoint"],
         _write("p5.pth", b"\x80\x05\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8a\x01\x01\x93."),
         absent=["Detected pickle protocol"]),
    Case("export-jpeg", ["export", "photo.pth"], 2, ["is a JPEG image, not a PyTorch checkpoint"],
         _write("photo.pth", b"\xff\xd8\xff\xe0" + bytes(64))),
    Case("export-empty", ["export", "empty.pth"], 2, ["is empty"], _write("empty.pth", b"")),
    Case("export-dense-as-pruned", ["export", "dense.pth"], 2, ["export it with --dense"], _dense_checkpoint),
    Case("export-rho-zero", ["export", "--model", "tiny-deit", "--keep-ratio", "0"], 2, ["keep ratio must be in"]),
    Case("export-rho-above-one", ["export", "--model", "tiny-deit", "-r", "1.5"], 2, ["keep ratio must be in"]),
    Case("export-stage-ratios-text", ["export", "--model", "tiny-deit", "--stage-ratios", "a,b"], 2,
         ["--stage-ratios takes comma-separated numbers"]),
    Case("export-rho-nan", ["export", "--model", "tiny-deit", "-r", "nan"], 2, ["--keep-ratio", "finite"]),
    Case("export-stage-ratios-inf", ["export", "--model", "tiny-deit", "--stage-ratios", "0.7,inf"], 2,
         ["--stage-ratios takes finite numbers"]),
    Case("export-unknown-model", ["export", "--model", "nope"], 2, ["unknown model 'nope'"]),
    Case("export-convnext-rho-one", ["export", "--model", "tiny-convnext", "-r", "1"], 2,
         ["keep all 16 positions at predictor 1", "--dense"], _no_model_building),
    Case("export-swin-stage-ratio-one", ["export", "--model", "tiny-swin", "--stage-ratios", "1,0.8,0.6"], 2,
         ["keep all 16 positions at predictor 1"], _no_model_building),
    Case("export-convnext-dynamic-keep", ["export", "--model", "tiny-convnext", "--dynamic-keep"], 2,
         ["--dynamic-keep is not supported for convnext"], _no_model_building),
    Case("export-old-opset", ["export", "--model", "tiny-deit", "--opset", "12"], 2, ["--opset must be between"]),
    Case("export-output-under-a-file", ["export", "--model", "tiny-deit", "-o", "afile/m.onnx"], 2,
         ["afile is a file, not a folder"], _write("afile", "x")),
    Case("export-output-exists", ["export", "--model", "tiny-deit", "-o", "m.onnx"], 2,
         ["already exists; pass --force"], _write("m.onnx", b"old")),
    Case("export-force-on-foreign-kind", ["export", "--model", "tiny-deit", "-o", "notes.txt", "--force"], 2,
         ["refusing to replace notes.txt", "--force replaces only .onnx"], _write("notes.txt", "my notes")),
    Case("export-force-on-foreign-manifest", ["export", "--model", "tiny-deit", "-o", "m.onnx", "--force"], 2,
         ["refusing to overwrite m.onnx.json", "not a dvit manifest"], _write("m.onnx.json", '{"mine": true}')),
    Case("export-beside-a-users-m-json", ["export", "--model", "tiny-deit", "-o", "m.onnx"], 0, [],
         _write("m.json", '{"mine": true}'), output=["m.onnx", "m.onnx.json"]),
    Case("export-default-output-exists-no-model-built", ["export", "--model", "tiny-deit"], 2,
         ["tiny-deit-r0.7.onnx already exists; pass --force"], _default_export_exists),
    Case("export-race-to-one-output", ["export", "--model", "tiny-deit", "-o", "m.onnx"], 2,
         ["m.onnx already exists (written while this command ran)"], _lost_the_race, output=["m.onnx"]),
    Case("export-disk-full-names-the-output", ["export", "--model", "tiny-deit", "-o", "out/m.onnx"], 2,
         ["No space left on device", "out/m.onnx"], _disk_full_in("export"), output=["out"], absent=["/.m."]),
    Case("export-disk-full-while-the-exporter-writes", ["export", "--model", "tiny-deit", "-o", "outdir/m.onnx"], 2,
         ["No space left on device", "outdir"], _nameless_disk_full("export"), output=["outdir"],
         absent=["Errno", "OSError", "the output folder", "/.m."]),
    Case("export-output-is-folder", ["export", "--model", "tiny-deit", "-o", "out.onnx"], 2, ["is a directory"],
         lambda d, mp: (d / "out.onnx").mkdir()),
    Case("export-sigterm-cleans-temp", ["export", "--model", "tiny-deit"], 143, ["terminated"],
         _sigterm_during_export, output=["export"]),
    # --- doctor / build
    Case("build-batch-range-reversed", ["build", "--min-batch", "8", "--max-batch", "4"], 2,
         ["batch range must satisfy 1 <= min <= opt <= max"], _export, absent=["needs 'tensorrt'"]),
    Case("build-opt-level-out-of-range", ["build", "--opt-level", "9"], 2, ["--opt-level must be between 0 and 5"],
         _export, absent=["needs 'tensorrt'"]),
    Case("doctor-nothing-exported", ["doctor"], 2, ["no .onnx artifact with a manifest", "dvit export"]),
    Case("doctor-unknown-target", ["doctor", "export/tiny.onnx", "--target", "trt-7"], 2, ["trt-7"], _export),
    Case("doctor-foreign-onnx", ["doctor", "foreign.onnx", "--target", "trt-10"], 0, [], _foreign_onnx),
    Case("build-two-precisions", ["build", "--fp16", "--bf16"], 2, ["choose one of"], _export),
    Case("build-keep-range-one-value", ["build", "export/tiny.onnx", "--keep-range", "0.5"], 2,
         ["--keep-range takes two ratios"], _export),
    Case("build-keep-range-nan", ["build", "export/tiny.onnx", "--keep-range", "nan,0.7"], 2,
         ["--keep-range takes finite numbers"], _export),
    Case("build-tampered", ["build", "export/tiny.onnx", "--fp16", "--onnx-only"], 2,
         ["tiny.onnx does not match its manifest"], _tampered),
    Case("build-disk-full-names-the-output", ["build", "export/tiny.onnx", "--fp16", "--onnx-only", "-o", "half.onnx"],
         2, ["No space left on device", "half.onnx"], _nameless_disk_full("build"), absent=["the output folder", ".tmp"]),
    Case("quantize-disk-full-names-the-manifest", ["quantize", "export/tiny.onnx", "-o", "q.onnx", "--calib-samples", "2",
                                                   "--check-samples", "2"],
         2, ["No space left on device", "q.onnx.json"], _nameless_disk_full("quantize"), absent=["the output folder", ".tmp"]),
    Case("build-missing-onnx", ["build", "nothere.onnx"], 2, ["nothere.onnx not found"]),
    Case("build-output-is-its-source", ["build", "export/tiny.onnx", "--target", "rtx", "-o", "export/tiny.onnx",
                                        "--force"], 2, ["would replace the ONNX it is built from"], _export),
    Case("build-output-not-an-engine", ["build", "export/tiny.onnx", "--target", "rtx", "-o", "x.txt"], 2,
         ["--output x.txt", "writes an engine", ".engine or .plan"], _export),
    Case("build-output-onnx-suffix", ["build", "export/tiny.onnx", "--target", "rtx", "-o", "x.onnx"], 2,
         ["--output x.onnx", "writes an engine"], _export),
    Case("build-onnx-only-over-its-source", ["build", "export/tiny.onnx", "--fp16", "--onnx-only", "-o",
                                             "export/tiny.onnx", "--force"], 2,
         ["would replace the ONNX it is built from"], _export),
    Case("build-onnx-only-engine-suffix", ["build", "export/tiny.onnx", "--fp16", "--onnx-only", "-o", "x.engine"], 2,
         ["mixed-precision ONNX (--onnx-only)", ".onnx"], _export),
    Case("build-compute-capability-empty", ["build", "export/tiny.onnx", "--target", "rtx", "--compute-capability",
                                            ""], 2, ["names no compute capability", "default set"], _export),
    Case("build-compute-capability-commas", ["build", "export/tiny.onnx", "--target", "rtx", "--compute-capability",
                                             " , "], 2, ["names no compute capability"], _export),
    Case("build-fp16-graph-name-taken", ["build", "export/tiny.onnx", "--target", "rtx", "--fp16", "-o", "x.engine"],
         2, ["x-fp16mixed.onnx already exists"], _both(_export, _write("x-fp16mixed.onnx", b"someone's graph"))),
    # --- validate
    Case("validate-nothing-exported", ["validate"], 2, ["no .onnx/.engine/.plan artifact with a manifest"]),
    Case("validate-tampered", ["validate", "-n", "2"], 2, ["tiny.onnx does not match its manifest", "--no-verify"],
         _tampered),
    Case("validate-foreign-onnx", ["validate", "foreign.onnx"], 2, ["foreign.onnx has no dvit manifest"],
         _foreign_onnx),
    Case("validate-unknown-backend", ["validate", "--backend", "nope", "-n", "2"], 2, ["unknown backend 'nope'"],
         _export),
    Case("validate-samples-zero", ["validate", "-n", "0"], 2, ["--samples"], _export),
    Case("validate-bad-device", ["validate", "--device", "cuda:x", "-n", "2"], 2, ["cuda:x"], _export),
    Case("validate-images-missing", ["validate", "--images", "nowhere", "-n", "2"], 2, ["nowhere", "not found"],
         _export),
    Case("validate-images-empty", ["validate", "--images", "empty", "-n", "2"], 2, ["no image files"],
         _both(_export, lambda d, mp: (d / "empty").mkdir())),
    Case("validate-manifest-field-wrong-type", ["validate", "-n", "2"], 2,
         ["tiny.onnx.json: field 'keep_counts' must be a list", "'abc'"], _manifest_edit(keep_counts="abc")),
    Case("validate-manifest-counts-not-integers", ["validate", "-n", "2"], 2,
         ["field 'keep_counts' must be a list of token counts"], _manifest_edit(keep_counts=["a", 3])),
    Case("validate-manifest-nested-too-deeply", ["validate", "export/tiny.onnx", "-n", "2"], 2,
         ["nested too deeply"], _nested_manifest),
    Case("validate-unknown-schema", ["validate", "-n", "2"], 2,
         ["schema 'dvit-deploy/onnx-manifest/9'", "newer dvit-deploy"],
         _manifest_edit(schema="dvit-deploy/onnx-manifest/9")),
    Case("validate-foreign-schema", ["validate", "-n", "2"], 2, ["schema 'acme/model/1'", "does not read"],
         _manifest_edit(schema="acme/model/1"), absent=["newer"]),
    Case("validate-foreign-json-beside-the-onnx", ["validate", "foreign.onnx", "-n", "2"], 2,
         ["foreign.onnx.json is not a dvit manifest"],
         _both(_foreign_onnx, _write("foreign.onnx.json", '{"name": "swin", "framework": "onnx"}')), absent=["variant"]),
    Case("predict-foreign-json-under-the-old-manifest-name", ["predict", "cat.png", "--artifact", "foreign.onnx"], 2,
         ["foreign.onnx has no dvit manifest"],
         _both(_foreign_onnx, _write("foreign.json", '{"name": "swin", "framework": "onnx"}'),
               lambda d, mp: _image(d, "cat.png")), absent=["variant"]),
    Case("validate-checkpoint-moved", ["validate", "-n", "2"], 2,
         ["moved-away.pth, is not there (moved?)", "--checkpoint PATH"], _export_of_a_moved_checkpoint),
    Case("validate-checkpoint-given-is-another", ["validate", "-n", "2", "--checkpoint", "ckpt.pth"], 2,
         ["--checkpoint ckpt.pth is not the checkpoint this artifact was exported from"],
         _moved_checkpoint_and("other.pth")),
    Case("validate-checkpoint-given-missing", ["validate", "-n", "2", "--checkpoint", "nothere.pth"], 2,
         ["--checkpoint nothere.pth not found"], _export_of_a_moved_checkpoint),
    Case("validate-checkpoint-given-moved-one", ["validate", "-n", "2", "--checkpoint", "ckpt.pth"], 0, [],
         _moved_checkpoint_and("kept.pth")),
    # --- profile
    Case("profile-manifest-unknown-model", ["profile", "--iterations", "1"], 2, ["unknown model 'foo'; known:"],
         _manifest_edited(variant="foo", config=None)),
    Case("profile-manifest-without-model", ["profile", "--iterations", "1"], 2,
         ["the manifest records no model (no 'variant'): cannot count its MACs"],
         _manifest_edited(variant=None, config=None)),
    Case("profile-dense-baseline-and-no-baseline", ["profile", "--dense-baseline", "--no-baseline"], 2,
         ["--dense-baseline", "--no-baseline", "choose one"], _export),
    Case("profile-compile-on-onnxruntime", ["profile", "--compile"], 2, ["--compile is torch.compile", "--backend torch"],
         _export),
    Case("profile-providers-on-openvino", ["profile", "--backend", "openvino", "--providers", "cpu"], 2,
         ["--providers are ONNX Runtime's"], _export),
    Case("profile-no-engine-to-run", ["profile", "--backend", "tensorrt"], 2,
         ["no .engine/.plan artifact", "run 'dvit build' first"], _export),
    Case("profile-unknown-schema", ["profile", "--iterations", "1", "--batch", "1"], 2,
         ["schema 'dvit-deploy/onnx-manifest/2'"], _manifest_edit(schema="dvit-deploy/onnx-manifest/2")),
    Case("profile-manifest-batch-text", ["profile", "--iterations", "1", "--batch", "1"], 2,
         ["field 'batch' must be an integer"], _manifest_edit(batch="eight")),
    Case("profile-bad-batch", ["profile", "--batch", "x"], 2, ["--batch takes comma-separated integers"], _export),
    Case("profile-zero-batch", ["profile", "--batch", "0"], 2, ["--batch takes positive integers"], _export),
    Case("profile-nothing-exported", ["profile", "--iterations", "1"], 2, ["no .onnx/.engine/.plan artifact"]),
    Case("profile-foreign-onnx", ["profile", "foreign.onnx", "--iterations", "1"], 2,
         ["foreign.onnx has no dvit manifest"], _foreign_onnx, absent=["deit-s"]),
    Case("profile-tampered", ["profile", "--iterations", "1", "--batch", "1"], 2,
         ["tiny.onnx does not match its manifest"], _tampered),
    Case("profile-duration-nan", ["profile", "--duration", "nan"], 2, ["--duration", "must be a finite number"],
         _export),
    Case("profile-duration-inf", ["profile", "--duration", "inf"], 2, ["--duration", "must be a finite number"],
         _export),
    Case("profile-warmup-minus-inf", ["profile", "--warmup", "-inf"], 2, ["--warmup", "finite"], _export),
    Case("profile-batch-does-not-fit-in-memory", ["profile", "--batch", "1,4000", "--iterations", "1"], 2,
         ["profile --batch 4000 on onnxruntime needs about", "1.0 GB is available here", "use --batch"],
         _memory_of(1.0)),
    Case("profile-zero-rounds", ["profile", "--rounds", "0"], 2, ["rounds"], _export),
    Case("profile-plot-not-an-image", ["profile", "--plot", "out.txt", "--iterations", "1"], 2,
         ["--plot", ".png"], _export),
    # --- tradeoff
    Case("tradeoff-nothing-exported", ["tradeoff"], 2, ["no .onnx/.engine/.plan artifact"]),
    Case("tradeoff-keep-ratios-not-numbers", ["tradeoff", "--keep-ratios", "x"], 2,
         ["--keep-ratios takes comma-separated numbers"], _export),
    Case("tradeoff-keep-ratio-above-one", ["tradeoff", "--keep-ratios", "0.5,1.5"], 2, ["--keep-ratios are in (0, 1]"],
         _export),
    Case("tradeoff-no-fixed-export-at-that-ratio", ["tradeoff", "--keep-ratios", "0.5", "--iterations", "1"], 2,
         ["no fixed export at ρ=0.5", "exported: 0.7"], _export),
    Case("tradeoff-dense-baseline-and-no-baseline", ["tradeoff", "--dense-baseline", "--no-baseline"], 2,
         ["--dense-baseline", "--no-baseline", "choose one"], _export),
    Case("tradeoff-dense-reference-without-twin", ["tradeoff", "--reference", "dense", "--iterations", "1"], 2,
         ["--reference dense needs the dense twin of tiny.onnx", "--dense-baseline"], _export),
    Case("tradeoff-unknown-reference", ["tradeoff", "--reference", "best"], 2, ["--reference is dense or top"], _export),
    Case("tradeoff-zero-batch", ["tradeoff", "--batch", "0"], 2, ["--batch must be ≥ 1"], _export),
    Case("tradeoff-negative-max-drop", ["tradeoff", "--max-drop", "-1"], 2, ["--max-drop is in points"], _export),
    Case("tradeoff-plot-not-an-image", ["tradeoff", "--plot", "out.txt"], 2, ["--plot", ".png"], _export),
    Case("tradeoff-output-not-json", ["tradeoff", "-o", "out.txt"], 2, ["--output writes JSON"], _export),
    Case("tradeoff-output-is-the-users-json", ["tradeoff", "-o", "mine.json", "--iterations", "1"], 2,
         ["refusing to replace mine.json", "not a JSON 'dvit tradeoff' wrote"], _both(_export, _write("mine.json", "{}"))),
    Case("tradeoff-images-missing", ["tradeoff", "--images", "nope", "--iterations", "1"], 2,
         ["--images folder nope not found"], _export),
    # --- flops
    Case("flops-unknown-model", ["flops", "--model", "nope"], 2, ["unknown model 'nope'"]),
    Case("flops-nan-ratio", ["flops", "--keep-ratio", "0.7,nan"], 2, ["--keep-ratio takes finite numbers"]),
    Case("flops-bad-ratio", ["flops", "--keep-ratio", "2"], 2, ["keep ratio"]),
    Case("flops-empty-ratio", ["flops", "--keep-ratio", ","], 2, ["--keep-ratio takes comma-separated numbers"]),
    Case("flops-empty-item", ["flops", "--keep-ratio", "0.7,,0.5"], 2, ["--keep-ratio takes comma-separated numbers"]),
    # --- package
    Case("package-force-current-folder", ["package", "--target", "x86-trt10", "-o", ".", "--force"], 2,
         ["current folder or one of its parents"], _export),
    Case("package-force-parent-folder", ["package", "--target", "x86-trt10", "-o", "..", "--force"], 2,
         ["current folder or one of its parents"], _export),
    Case("package-force-root", ["package", "--target", "x86-trt10", "-o", "/", "--force"], 2,
         ["current folder or one of its parents"], _export),
    Case("package-force-foreign-folder", ["package", "--target", "x86-trt10", "-o", "mywork", "--force"], 2,
         ["refusing to replace", "mywork", "not a dvit bundle"], _not_a_bundle_folder),
    Case("package-force-on-a-file", ["package", "--target", "x86-trt10", "-o", "notes", "--force"], 2,
         ["refusing to replace", "not a folder"], _both(_export, _write("notes", "x"))),
    Case("package-existing-without-force", ["package", "--target", "x86-trt10", "-o", "bundle"], 2,
         ["already exists; pass --force"], _both(_export, _bundle)),
    Case("package-force-terminated-while-archiving", ["package", "--target", "x86-trt10", "-o", "bundle", "--force"],
         143, ["terminated"], _interrupted_while_packaging("archive")),
    Case("package-force-terminated-between-folder-and-archive",
         ["package", "--target", "x86-trt10", "-o", "bundle", "--force"], 143, ["terminated"],
         _interrupted_while_packaging("swap")),
    Case("package-tampered", ["package", "--target", "x86-trt10", "-o", "b"], 2,
         ["tiny.onnx does not match its manifest"], _tampered),
    Case("package-unknown-target", ["package", "--target", "tpu"], 2, ["unknown target 'tpu'"], _export),
    Case("package-bad-precision", ["package", "--target", "x86-trt10", "-p", "int4"], 2, ["--precision"], _export),
    Case("package-bad-profile", ["package", "--target", "x86-trt10", "--batch-profile", "1,2"], 2,
         ["--batch-profile takes three integers"], _export),
    Case("package-unknown-schema", ["package", "--target", "x86-trt10", "-o", "b"], 2,
         ["schema 'dvit-deploy/onnx-manifest/2'"], _manifest_edit(schema="dvit-deploy/onnx-manifest/2")),
    Case("package-manifest-field-wrong-type", ["package", "--target", "x86-trt10", "-o", "b"], 2,
         ["field 'opset' must be an integer"], _manifest_edit(opset="17")),
    Case("package-manifest-nested-too-deeply", ["package", "export/tiny.onnx", "--target", "x86-trt10", "-o", "b"], 2,
         ["nested too deeply"], _nested_manifest),
    Case("package-nothing-exported", ["package", "--target", "x86-trt10"], 2, ["no .onnx/.engine/.plan artifact"]),
    Case("package-inside-a-bundle", ["package", "--target", "x86-trt10", "-o", "bundle/inner"], 2,
         ["refusing to write a bundle inside the bundle", "bundle"], _both(_export, _bundle)),
    Case("package-inside-a-bundle-deeper", ["package", "--target", "x86-trt10", "-o", "bundle/model/b", "--force"], 2,
         ["inside the bundle"], _both(_export, _bundle)),
    Case("package-manifest-keep-counts-edited", ["package", "--target", "x86-trt10", "-o", "b"], 2,
         ["tiny.onnx does not do what its manifest says", "TopK K is 137, expected the constant 98"],
         _manifest_edit(keep_counts=[98, 49, 24])),
    Case("package-disk-full", ["package", "--target", "x86-trt10", "-o", "b", "--no-archive"], 2,
         ["No space left on device", "model"], _no_space_while_copying),
    # --- verify
    Case("verify-missing", ["verify", "nothere"], 2, ["bundle nothere not found"]),
    Case("verify-not-a-bundle", ["verify", "mywork"], 2, ["not a dvit bundle", "SHA256SUMS"], _not_a_bundle_folder),
    Case("verify-not-an-archive", ["verify", "x.tar.gz"], 2, ["neither a bundle folder nor a .tar.gz"],
         _write("x.tar.gz", "text")),
    Case("verify-tampered-bundle", ["verify", "bundle"], 1, ["checksums", "modified", "model/tiny.onnx"],
         _both(_bundle, lambda d, mp: open(d / "bundle" / "model" / "tiny.onnx", "ab").write(b"\0"))),
    Case("verify-paths-outside-the-bundle", ["verify", "bundle"], 1,
         ["bundle.json names ../export/tiny.onnx", "outside the bundle"], _bundle_pointing_outside),
    Case("verify-listed-file-is-a-link", ["verify", "bundle"], 1, ["README.md is a symbolic link"],
         _bundle_with_a_link),
    Case("verify-folder-is-a-link", ["verify", "bundle"], 1, ["model is a symbolic link"],
         _bundle_with_a_linked_folder),
    Case("verify-duplicate-checksum-line", ["verify", "bundle"], 1, ["model/tiny.onnx is listed 2 times"],
         _bundle_with_duplicate_sum),
    Case("verify-graph-differs-from-its-manifest", ["verify", "bundle"], 1,
         ["the graph differs from the manifest", "TopK K is 137, expected the constant 98"], _bundle_with_edited_counts),
    Case("verify-named-file-not-listed", ["verify", "bundle"], 1,
         ["bundle.json names model/tiny.onnx, which SHA256SUMS does not list"], _bundle_with_unlisted_model),
    # --- predict
    Case("predict-missing-image", ["predict", "nothere.png"], 2, ["nothere.png"], _export),
    Case("predict-markup-in-name", ["predict", "cat[1].png"], 2, ["cat[1].png"],
         _both(_export, _write("cat[1].png", PNG_JUNK))),
    Case("predict-viz-not-png", ["predict", "cat.png", "--viz", "out.jpg"], 2, ["--viz writes a PNG"],
         _both(_export, lambda d, mp: _image(d, "cat.png"))),
    Case("predict-viz-disk-full-names-the-output", ["predict", "cat.png", "--viz", "kept.png"], 2,
         ["No space left on device", "kept.png"], _disk_full_in("viz"), absent=[".tmp", ".kept.png."]),
    Case("predict-viz-disk-full-nameless", ["predict", "cat.png", "--viz", "kept.png"], 2,
         ["No space left on device", "kept.png"], _nameless_disk_full("viz"), absent=[".tmp", "the output folder"]),
    Case("predict-viz-long-name", ["predict", "cat.png", "--viz", LONG_PNG], 0, [],
         _both(_export, lambda d, mp: _image(d, "cat.png")), output=[LONG_PNG]),
    Case("predict-torch-checkpoint-moved", ["predict", "cat.png", "--backend", "torch"], 2,
         ["is not there (moved?)", "--checkpoint PATH"], _export_of_a_moved_checkpoint),
    Case("predict-torch-checkpoint-given-is-another", ["predict", "cat.png", "--backend", "torch", "--checkpoint",
                                                      "ckpt.pth"], 2,
         ["is not the checkpoint this artifact was exported from"], _moved_checkpoint_and("other.pth")),
    Case("predict-unknown-backend", ["predict", "cat.png", "--backend", "nope"], 2, ["nope"],
         _both(_export, lambda d, mp: _image(d, "cat.png"))),
    Case("predict-tampered", ["predict", "cat.png"], 2, ["tiny.onnx does not match its manifest"],
         _both(_tampered, lambda d, mp: _image(d, "cat.png"))),
    Case("predict-bad-device", ["predict", "cat.png", "--device", "gpu"], 2, ["gpu"],
         _both(_export, lambda d, mp: _image(d, "cat.png"))),
    Case("predict-decompression-bomb", ["predict", "bomb.png"], 2, ["bomb.png is too large to decode safely"],
         _both(_export, _bomb_png)),
    Case("predict-manifest-field-wrong-type", ["predict", "cat.png"], 2, ["field 'data_config' must be an object"],
         _both(_manifest_edit(data_config=[224]), lambda d, mp: _image(d, "cat.png"))),
    # --- eval
    Case("eval-decompression-bomb", ["eval", "--data", "imgs"], 2, ["bomb.png is too large to decode safely"],
         _both(_export, lambda d, mp: ((d / "imgs" / "c").mkdir(parents=True), _bomb_png(d / "imgs" / "c", mp)))),
    Case("eval-missing-data", ["eval", "--data", "nowhere"], 2, ["data folder nowhere not found"], _export),
    Case("eval-data-is-a-file", ["eval", "--data", "f.txt"], 2, ["--data must be a folder"],
         _both(_export, _write("f.txt", "x"))),
    Case("eval-agreement-out-of-range", ["eval", "--data", ".", "--min-agreement", "2"], 2,
         ["--min-agreement is a fraction"], _export),
    Case("eval-agreement-nan", ["eval", "--data", ".", "--min-agreement", "nan"], 2,
         ["--min-agreement", "finite"], _export),
    Case("eval-agreement-without-reference", ["eval", "--data", ".", "--min-agreement", "0.9", "--no-reference"], 2,
         ["cannot be used with --no-reference"], _export),
    Case("eval-loose-images-no-labels", ["eval", "--data", "imgs"], 2, ["no class sub-folders and no labels file"],
         _both(_export, lambda d, mp: ((d / "imgs").mkdir(), _image(d / "imgs", "a.png")))),
    Case("eval-tampered", ["eval", "--data", "imgs"], 2, ["tiny.onnx does not match its manifest"],
         _both(_tampered, lambda d, mp: ((d / "imgs" / "c").mkdir(parents=True), _image(d / "imgs" / "c", "a.png")))),
    # --- serve (each refused before a server process exists: no "serving …" line)
    Case("serve-int8-of-an-fp32-onnx", ["serve", "export/tiny.onnx", "--precision", "int8"], 2,
         ["tiny.onnx is a fp32 graph; ONNX Runtime runs the graph's own precision"], _export,
         absent=["At:", ".py(", "Triton"]),
    Case("serve-openvino-int8-of-an-fp32-onnx", ["serve", "export/tiny.onnx", "--backend", "openvino", "--precision",
                                                 "int8"], 2,
         ["tiny.onnx is an fp32 graph; int8 needs a Q/DQ graph"], _export, absent=["At:", ".py("]),
    Case("serve-host-does-not-resolve", ["serve", "export/tiny.onnx", "--host", "no.such.host.invalid"], 2,
         ["--host no.such.host.invalid does not resolve"], _export, absent=["port", "in use"]),
    Case("serve-host-not-of-this-machine", ["serve", "export/tiny.onnx", "--host", "192.0.2.1"], 2,
         ["--host 192.0.2.1 is not an address of this machine"], _export, absent=["in use"]),
]


def _snapshot(*roots: Path) -> dict[str, tuple]:
    state = {}
    for root in roots:
        for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
            if path.is_symlink() or not path.exists():
                continue
            stat = path.stat()
            state[str(path)] = ("dir",) if path.is_dir() else (stat.st_size, stat.st_mtime_ns)
    return state


def _parent_entries(folder: Path) -> set[str]:
    return {p.name for p in folder.parent.iterdir()}


@pytest.fixture
def source(tiny_files):
    global _SOURCE
    _SOURCE = tiny_files
    return tiny_files


def test_the_table_is_large_and_unique():
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, source, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    case.setup(work, monkeypatch)
    before, parent_before = _snapshot(work), _parent_entries(work)

    if case.via_entry:
        import signal

        from dvit_deploy import entry

        monkeypatch.setattr(signal, "signal", lambda *a: None)  # keep pytest's own SIGTERM handling

        monkeypatch.setattr("sys.argv", ["dvit", *case.args])
        with pytest.raises(SystemExit) as stopped:
            entry.main()
        captured = capsys.readouterr()
        exit_code, stderr = stopped.value.code, captured.err
    else:
        result = runner.invoke(app, case.args)
        exit_code, stderr = result.exit_code, result.stderr
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)

    assert exit_code == case.exit_code, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    failures = [line for line in lines if FAILURE.match(line)]
    others = [line for line in lines if not FAILURE.match(line) and not INFO.match(line)]
    assert not others, f"unexpected stderr lines: {others}"
    if case.exit_code == 0:
        assert not failures, failures
    else:
        assert len(failures) == 1, lines
        for word in case.words:
            assert word in failures[0], (word, failures[0])
        for word in case.absent:
            assert word not in failures[0], (word, failures[0])

    after = _snapshot(work)
    declared = [str(work / p) for p in case.output]
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    stray = sorted(p for p in changed if not any(p == d or p.startswith(d + os.sep) for d in declared))
    assert not stray, f"files created/changed/removed outside the declared output: {stray}"
    assert _parent_entries(work) == parent_before


def _takes_a_float(param) -> bool:
    import typing

    if getattr(getattr(param, "type", None), "name", "") == "float":  # click
        return True
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)  # Typer ≥ 0.2x, lazily typed
    return annotation is float or float in typing.get_args(annotation)


def test_the_export_that_lost_a_race_leaves_the_winner_alone(source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _lost_the_race(tmp_path, monkeypatch)
    result = runner.invoke(app, ["export", "--model", "tiny-deit", "-o", "m.onnx"])
    assert result.exit_code == 2, result.output
    assert (tmp_path / "m.onnx").read_bytes() == b"the other export's model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no manifest of ours, no temporary left


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_float_option_refuses_non_finite_values(value):
    """Not a list kept by hand: every option of every command whose type is float is found and tried."""
    import typer

    group = typer.main.get_command(app)
    tried = []
    for name, command in group.commands.items():
        for param in command.params:
            if _takes_a_float(param) and param.opts[0].startswith("--"):
                result = runner.invoke(app, [name, param.opts[0], value])
                assert result.exit_code == 2, (name, param.opts[0], result.output)
                assert "must be a finite number" in result.stderr and "Traceback" not in result.stderr
                tried.append(f"{name} {param.opts[0]}")
    assert {"profile --duration", "profile --warmup", "export --keep-ratio", "eval --min-agreement",
            "quantize --percentile"} <= set(tried), tried


def test_markup_in_an_output_name_prints_literally(workdir):
    """'wrote out/m[v2].onnx', not 'wrote out/m.onnx' (rich would eat '[v2]' as a style tag)."""
    result = runner.invoke(app, ["export", "--model", "tiny-deit", "-o", "out/m[v2].onnx"])
    assert result.exit_code == 0, result.output
    assert "out/m[v2].onnx" in result.stdout and (workdir / "out" / "m[v2].onnx").is_file()
    manifest = json.loads((workdir / "out" / "m[v2].onnx.json").read_text())
    assert manifest["artifact"] == "m[v2].onnx"
