"""Tiny model configs (dim 64, depth 4) keep unit tests fast; real-size tests are marked slow."""

from __future__ import annotations

import os

import pytest
import torch

from dvit_deploy.models import VARIANTS, VariantConfig, create_model, register_variant

TINY_DEIT = VariantConfig(
    name="tiny-deit", family="deit", embed_dim=64, depth=4, num_heads=2, mlp_ratio=2.0,
    pruning_loc=(1, 2, 3), qkv_bias=True, norm_eps=1e-6, num_classes=10,
)
TINY_LVVIT = VariantConfig(
    name="tiny-lvvit", family="lvvit", embed_dim=96, depth=4, num_heads=2, mlp_ratio=3.0,
    pruning_loc=(1, 2, 3), qkv_bias=False, norm_eps=1e-5, skip_lam=2.0, num_classes=10,
)

# DynamicCNN / DynamicSwin at 64 px: a 4x4 third-stage map (16 positions), 2x2 windows.
TINY_CONVNEXT = VariantConfig(
    name="tiny-convnext", family="convnext", embed_dim=32, depth=5, num_heads=1, mlp_ratio=4.0,
    pruning_loc=(1, 2, 3), qkv_bias=True, norm_eps=1e-6, num_classes=10, img_size=64,
    depths=(1, 1, 5, 1), dims=(8, 16, 32, 64),  # blocks 3 and 4 reuse the last decision
)
TINY_SWIN = VariantConfig(
    name="tiny-swin", family="swin", embed_dim=32, depth=4, num_heads=4, mlp_ratio=4.0,
    pruning_loc=(1, 2, 3), qkv_bias=True, norm_eps=1e-5, num_classes=10, img_size=64,
    depths=(2, 2, 4, 2), dims=(8, 16, 32, 64), heads=(1, 2, 4, 8), window_size=2,
)

for _cfg in (TINY_DEIT, TINY_LVVIT, TINY_CONVNEXT, TINY_SWIN):
    if _cfg.name not in VARIANTS:
        register_variant(_cfg)


def make_official_checkpoint(path, variant, *, keep_ratio=0.7, dense=False, seed=0, layout="release", ema=False):
    """Write a checkpoint the way the official code does, with seeded random weights.

    layout="release": {'model': sd}; "training": adds args (argparse.Namespace), optimizer,
    epoch, scaler and optionally model_ema; "bare": the state dict alone.
    """
    import argparse

    model = create_model(variant, keep_ratio, dense=dense, seed=seed)
    with torch.no_grad():  # spread predictor scores like a trained model would
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) * 0.02)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if layout == "bare":
        obj = state
    else:
        obj = {"model": state}
        if layout == "training":
            obj.update(
                args=argparse.Namespace(model=variant if isinstance(variant, str) else variant.name,
                                        base_rate=keep_ratio, input_size=224, lr=1e-3),
                optimizer={"state": {}, "param_groups": [{"lr": 1e-3}]},
                epoch=29,
                scaler={"scale": 65536.0},
            )
            if ema:
                obj["model_ema"] = {k: v + 1.0 if v.is_floating_point() else v for k, v in state.items()}
    torch.save(obj, path)
    return model


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in an empty folder so ./export and ./engines defaults land in tmp."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """One exported tiny DeiT (dynamic batch, token outputs) shared by read-only tests."""
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model

    folder = tmp_path_factory.mktemp("tiny_export")
    loaded = load_model(model_name="tiny-deit", keep_ratio=0.7)
    return export_onnx(loaded, folder / "tiny.onnx", token_outputs=True)


@pytest.fixture(scope="session")
def tiny_convnext_pair(tmp_path_factory):
    """The tiny ConvNeXt exported dense and at ρ 0.7, as the benchmark scripts' export cache holds them
    (``benchmarks/bench_cpu.ensure_export``); the folder. The profilers' tests share it: their int8 files are
    made beside these once (``bench_limits.ensure_int8``) and reused."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_cpu import ensure_export

    folder = tmp_path_factory.mktemp("tiny_convnext_pair")
    for ratio in (None, 0.7):
        ensure_export(folder, "tiny-convnext", ratio, 0)
    return folder


@pytest.fixture
def exported(workdir, tiny_export):
    """./export holding a copy of the shared tiny pruned export (the default artifact of that folder)."""
    import shutil

    (workdir / "export").mkdir()
    for f in (tiny_export.path, tiny_export.manifest_path):
        shutil.copy2(f, workdir / "export" / f.name)
    return workdir / "export" / tiny_export.path.name


def pytest_collection_modifyitems(config, items):
    """``rtx`` tests need tensorrt_rtx, which [dev] installs: without it they fail (so CI cannot
    silently skip them) unless DVIT_SKIP_RTX=1 says this machine has no [dev] install."""
    if os.environ.get("DVIT_SKIP_RTX") != "1":
        return
    from dvit_deploy.helpers.lazy import available

    if available("tensorrt_rtx"):
        return
    skip = pytest.mark.skip(reason="DVIT_SKIP_RTX=1 and tensorrt_rtx is not installed (pip install -e .[dev])")
    for item in items:
        if "rtx" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    """The build time and engine size of every TensorRT-RTX build the rtx tests made (a record for
    the reader, not a check: times depend on the machine and its load)."""
    import sys

    module = sys.modules.get("tests.test_rtx")
    times = getattr(module, "BUILD_TIMES", None)
    if times:
        terminalreporter.section("TensorRT-RTX builds (seconds, engine MB; machine load varies)")
        for label, (seconds, size) in times.items():
            terminalreporter.write_line(f"{label}: {seconds:.1f} s, {size / 1e6:.1f} MB")
    # Also here, not only in the header: `pytest -q` (CI's command) prints no header.
    from dvit_deploy.helpers.cpu import cpu_info

    terminalreporter.write_line(f"dvit cpu class: {cpu_info().summary()}")


def pytest_report_header(config):
    """Which CPU class the suite ran on: int8/bf16 kernels (and so their recipes) differ between classes."""
    from dvit_deploy.helpers.cpu import cpu_info

    return f"dvit cpu class: {cpu_info().summary()}"


@pytest.fixture
def file_reads(monkeypatch):
    """``file_reads({path: label})`` returns the list of labels, one per ``Path.read_text`` of a watched
    file from then on (how tests prove a command reads each manifest once)."""
    from pathlib import Path

    reads: list[str] = []
    watched: dict[Path, str] = {}
    real_read_text = Path.read_text

    def counting(self, *args, **kwargs):
        label = watched.get(Path(self).resolve())
        if label is not None:
            reads.append(label)
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting)

    def watch(paths):
        watched.update({Path(p).resolve(): label for p, label in paths.items()})
        return reads

    return watch
