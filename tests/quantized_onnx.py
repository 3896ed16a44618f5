"""A small explicitly quantized (Q/DQ) ONNX for tests, made with ONNX Runtime's quantizer.

Full-range weights (``dvit quantize --for tensorrt``'s recipe): the TensorRT build tests read it and
nothing here runs it on a CPU, so the CPU class (int16 saturation without VNNI) does not matter.

It stands in for ``dvit quantize`` output (``<name>-int8.onnx`` with ``"precision": "int8"`` and a
``"quantization"`` record in its manifest) so the TensorRT build and shipping tests do not depend on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dvit_deploy.helpers.fileio import manifest_path


def make_qdq_onnx(src: Path, out: Path) -> Path:
    """A Q/DQ (explicitly quantized: int8 symmetric, per-channel weights) copy of ``src`` with an int8
    manifest, in the layout ``dvit quantize`` writes (precision int8 + a quantization record)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from dvit_deploy.helpers.fileio import sha256_file

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = [{"images": np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)}]

        def get_next(self):
            return self.items.pop() if self.items else None

    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    manifest = json.loads(manifest_path(src).read_text())
    manifest["onnx"] = {**manifest.get("onnx", {}), "sha256": sha256_file(out), "bytes": out.stat().st_size,
                        "external_data": [], "external_data_sha256": {}}
    manifest.update({"artifact": out.name, "precision": "int8",
                     "quantization": {"method": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                                      "activations": "int8 symmetric", "weights": "int8 symmetric per-channel",
                                      # TensorRT's recipe (full-range weights): what these build tests consume
                                      "reduce_range": False, "recipe": {"name": "s8s8", "target": "tensorrt",
                                                                        "reduce_range": False}}})
    manifest_path(out).write_text(json.dumps(manifest))
    return out
