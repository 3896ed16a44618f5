"""Moved to ``dvit_deploy.artifact.store``; this name stays for code written against it."""

from .artifact.store import *  # noqa: F401,F403
from .artifact.store import ALL_SUFFIXES, ENGINES_DIR, EXPORT_DIR, artifacts, default_artifact, engines_dir, export_dir, load_manifest, newest_artifact, onnx_name  # noqa: F401
