"""Shipping: device bundles, Triton model repositories, and verifying what arrived.

One module per job:

* ``bundle.py``: collect the artifacts, check them against the device target, write the bundle
  atomically (``run_package``; ``make_bundle`` from paths), and the ``--force`` rules (``check_bundle_outputs``,
  the swap); ``readme.py``: the device README and the precision words;
* ``trtexec.py``: the ``trtexec`` commands and ``build_on_device.sh``;
* ``triton.py``: Triton ``config.pbtxt`` files;
* ``verify.py``: ``run_verify`` (``verify_bundle``) and its checks;
* ``layout.py``: what they share (file names, schema, artifacts, engine-manifest facts, checksums).

Device targets, trtexec precision flags, engine names and TensorRT release matching come from the
TensorRT target table, ``dvit_deploy.engines.targets``. Nothing here imports torch or onnx.
"""

from __future__ import annotations

from .bundle import (TARGETS, BundleResult, PackageOptions, Target, check_bundle_outputs, check_target,
                     collect_artifacts, default_bundle_dir, get_target, is_bundle_folder, make_bundle, open_artifacts,
                     run_package)
from .layout import (BUNDLE_MANIFEST, BUNDLE_SCHEMA, CHECKSUMS, DEFAULT_BUNDLES_DIR, DEFAULT_PROFILE,
                     DEFAULT_QUEUE_DELAY_US, ENGINE_SUFFIXES, EngineItem, OnnxItem, engine_facts, write_checksums)
from .triton import TRITON_TYPES, TritonModelConfig, triton_config, triton_model_name
from .trtexec import build_script, built_precision, engine_name, trtexec_benchmark, trtexec_command
from .verify import VerifyCheck, VerifyOptions, VerifyReport, read_checksums, run_verify, verify_bundle

__all__ = (
    "BUNDLE_MANIFEST",
    "BUNDLE_SCHEMA",
    "CHECKSUMS",
    "DEFAULT_BUNDLES_DIR",
    "DEFAULT_PROFILE",
    "DEFAULT_QUEUE_DELAY_US",
    "ENGINE_SUFFIXES",
    "TARGETS",
    "TRITON_TYPES",
    "BundleResult",
    "EngineItem",
    "OnnxItem",
    "PackageOptions",
    "Target",
    "TritonModelConfig",
    "VerifyCheck",
    "VerifyOptions",
    "VerifyReport",
    "build_script",
    "built_precision",
    "check_bundle_outputs",
    "check_target",
    "collect_artifacts",
    "default_bundle_dir",
    "engine_facts",
    "engine_name",
    "get_target",
    "is_bundle_folder",
    "make_bundle",
    "open_artifacts",
    "read_checksums",
    "run_package",
    "run_verify",
    "triton_config",
    "triton_model_name",
    "trtexec_benchmark",
    "trtexec_command",
    "verify_bundle",
    "write_checksums")
