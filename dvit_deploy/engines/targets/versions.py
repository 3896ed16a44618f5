"""TensorRT versions and releases: reading a version string, and whether it belongs to a release."""

from __future__ import annotations

import re

from ...helpers.errors import BadInput


def parse_trt_version(version: str) -> tuple[int, int, int]:
    """'10.3.0.30' -> (10, 3, 0): an installed or recorded TensorRT version (major.minor at least)."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", str(version))
    if not match:
        raise BadInput(f"cannot read a TensorRT version from '{version}'")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def release_of(version: str) -> tuple[int, int]:
    """major.minor of a version or of a release name: '10.3.0.30' -> (10, 3); '10' (any 10.x) -> (10, 0)."""
    match = re.match(r"(\d+)(?:\.(\d+))?", str(version))
    if not match:
        raise BadInput(f"cannot read a TensorRT version from '{version}'")
    return int(match.group(1)), int(match.group(2) or 0)


def same_tensorrt_release(version: str, release: str) -> bool:
    """Whether TensorRT ``version`` belongs to ``release``: '10.3.0.30' is in '10.3' and in '10'.

    A device target names a release (a family of versions); an engine is only meant for the
    release that built it. Whether it really loads is ``compatibility_problem``'s exact rule.
    """
    return version == release or version.startswith(release + ".")


__all__ = ("parse_trt_version", "release_of", "same_tensorrt_release")
