"""The served ONNX Runtime session: its idle intra-op threads sleep instead of spinning.

``OrtOptions.allow_spinning`` writes ORT's ``session.intra_op.allow_spinning`` entry (None: ORT's
default, no entry); ``serve.backend.open_spec_runner`` opens the served runner with it off unless the
spec's runner options say otherwise. The outputs do not depend on it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dvit_deploy.artifact.store import open_artifact
from dvit_deploy.jobs.serve.backend import open_spec_runner
from dvit_deploy.jobs.serve.spec import ServeOptions, make_spec
from dvit_deploy.runtime import open_runner
from dvit_deploy.runtime.ort_runner import ALLOW_SPINNING

pytest.importorskip("onnxruntime")


def spinning_entry(runner) -> str | None:
    options = runner.session.get_session_options()
    try:
        return options.get_session_config_entry(ALLOW_SPINNING)
    except Exception:  # noqa: BLE001 - ORT raises when the entry was never set
        return None


@pytest.mark.parametrize("value, entry", [(None, None), (False, "0"), (True, "1")])
def test_allow_spinning_sets_the_session_config_entry(tiny_export, value, entry):
    with open_runner("onnxruntime", open_artifact(tiny_export.path), allow_spinning=value) as runner:
        assert spinning_entry(runner) == entry


def served_spec(tiny_export):
    return make_spec(open_artifact(tiny_export.path), ServeOptions(backend="onnxruntime", precision="fp32", max_batch=2),
                     token_outputs=True)


def test_outputs_do_not_depend_on_spinning(tiny_export):
    shape = served_spec(tiny_export).image_shape
    batch = np.random.default_rng(3).standard_normal((2, *shape)).astype(np.float32)
    found = []
    for value in (None, False):
        with open_runner("onnxruntime", open_artifact(tiny_export.path), allow_spinning=value,
                         topk_outputs=True) as runner:
            found.append(runner.run(batch))
    np.testing.assert_array_equal(found[0].logits, found[1].logits)
    assert found[0].kept and len(found[0].kept) == len(found[1].kept)
    for a, b in zip(found[0].kept, found[1].kept):
        np.testing.assert_array_equal(a, b)


def test_served_runner_does_not_spin_unless_the_spec_says_so(tiny_export):
    spec = served_spec(tiny_export)
    runner = open_spec_runner(spec)
    try:
        assert spinning_entry(runner) == "0"
    finally:
        runner.close()
    runner = open_spec_runner(dataclasses.replace(spec, runner_options={"allow_spinning": True}))
    try:
        assert spinning_entry(runner) == "1"
    finally:
        runner.close()
