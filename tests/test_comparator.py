"""The one comparator every output check uses, and the one place ONNX Runtime sessions are made."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import dvit_deploy
from dvit_deploy.helpers.batching import RunOutput
from dvit_deploy.helpers.comparator import Comparator, Outputs, ParityReport, gather, margin_key
from dvit_deploy.helpers.compare import TOLERANCES
from dvit_deploy.helpers.errors import CheckFailed

ROOT = Path(dvit_deploy.__file__).parent


def _model(weights: np.ndarray, *, keep: int = 3, margins: bool = False, swap_at: int | None = None):
    """A toy model: logits = x·W, 'kept tokens' = the top-``keep`` of the first 6 features, and for a
    reference the margin at the keep boundary (``swap_at``: that sample keeps a different token)."""

    def run(batch: np.ndarray) -> RunOutput:
        flat = batch.reshape(len(batch), -1)
        scores = flat[:, :6]
        order = np.argsort(-scores, axis=1)
        kept = order[:, :keep].copy()
        if swap_at is not None and len(batch) > swap_at:
            kept[swap_at, -1] = order[swap_at, keep]
        extra = {}
        if margins:
            ordered = -np.sort(-scores, axis=1)
            extra[margin_key(0)] = ordered[:, keep - 1] - ordered[:, keep]
        return RunOutput((flat @ weights).astype(np.float32), [kept], extra)

    return run


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    return rng.standard_normal((10, 2, 4)).astype(np.float32), rng.standard_normal((8, 5)).astype(np.float32)


def test_same_model_passes_and_a_changed_one_fails(data):
    images, weights = data
    comparator = Comparator(TOLERANCES["fp32"])
    same = comparator.run(_model(weights, margins=True), _model(weights), images, batch=4)
    assert same.passed and same.samples == 10 and same.logits.max_abs == 0.0
    assert len(same.stages) == 1 and same.stages[0].exact_match == 1.0
    changed = comparator.run(_model(weights, margins=True), _model(weights * 1.5), images, batch=4)
    assert not changed.passed and "logits differ" in changed.failures[0]


def test_kept_token_flip_is_judged_by_the_reference_margin(data):
    images, weights = data
    ref = gather(_model(weights, margins=True), images, 4)
    flip = _model(weights, swap_at=2)
    strict = Comparator(TOLERANCES["fp32"]).run(ref, flip, images, batch=10)  # one batch: only sample 2 flips
    assert strict.unexplained_flips == 1 and not strict.passed  # a real margin: a disagreement
    margin = float(ref.margins[0][2])
    wide = Comparator(type(TOLERANCES["fp32"])(atol=1e-3, rtol=1e-3, tie_margin=margin * 2)).run(
        ref, flip, images, batch=10)
    assert wide.passed and wide.stages[0].near_tie_flips == 1  # below the tie margin: a near-tie flip


def test_streamed_inputs_and_fixed_batches_give_the_same_comparison(data):
    images, weights = data
    seen: list[int] = []

    def fixed_model(batch):
        seen.append(len(batch))
        return _model(weights)(batch)

    def streamed(batch):
        for start in range(0, len(images), batch):
            yield images[start:start + batch]

    ref = gather(_model(weights, margins=True), images, 3)
    padded = Comparator(TOLERANCES["fp32"]).run(ref, fixed_model, streamed, batch=4, fixed=True)
    assert seen == [4, 4, 4]  # the last batch of 2 padded to the fixed 4, its outputs trimmed
    assert padded.passed and padded.samples == 10


def test_tokens_are_compared_only_when_both_sides_report_them(data):
    images, weights = data
    ref = gather(_model(weights, margins=True), images, 5)
    logits_only = Comparator(TOLERANCES["fp32"]).compare(ref, Outputs(ref.logits))
    assert logits_only.passed and logits_only.stages == []


def test_parity_report_takes_the_comparison_failures(data):
    images, weights = data
    report = ParityReport()
    comparison = Comparator(TOLERANCES["fp32"]).run(_model(weights, margins=True), _model(-weights), images, batch=5)
    report.record(comparison, TOLERANCES["fp32"], prefix="ρ=0.7: ")
    assert not report.passed and report.failures == [f"ρ=0.7: {f}" for f in comparison.failures]
    assert report.tolerance is TOLERANCES["fp32"] and report.parity_dict()["passed"] is False


def test_onnxruntime_sessions_are_created_in_one_place():
    hits = sorted(str(path.relative_to(ROOT)) for path in ROOT.rglob("*.py")
                  if re.search(r"InferenceSession\(", path.read_text()))
    assert hits == ["helpers/ort_session.py"]


def test_a_graph_onnxruntime_cannot_load_is_one_line():
    from onnx import TensorProto, helper

    from dvit_deploy.helpers.ort_session import cpu_session

    node = helper.make_node("NoSuchOp", ["x"], ["y"], domain="nowhere")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("nowhere", 1)])
    with pytest.raises(CheckFailed) as info:
        cpu_session(model, "the test graph")
    assert str(info.value).startswith("ONNX Runtime cannot load the test graph: ") and "\n" not in str(info.value)


def test_every_check_reports_through_one_report_class():
    from dvit_deploy.export.dynamic_keep import DynamicKeepReport
    from dvit_deploy.export.report import CheckReport
    from dvit_deploy.jobs.quantize.int8_check import QuantizeCheck
    from dvit_deploy.jobs.validate import BackendResult

    for cls in (CheckReport, DynamicKeepReport, QuantizeCheck, BackendResult):
        assert issubclass(cls, ParityReport), cls
