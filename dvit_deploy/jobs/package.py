"""`dvit package`: the command's seam, ``run(PackageOptions(...), context, artifacts) -> BundleResult``.

The work lives in ``jobs.ship`` (bundles, Triton configs, the device README), shared with ``dvit verify``.
"""

from __future__ import annotations

from .ship import BundleResult, PackageOptions, open_artifacts
from .ship import run_package as run

__all__ = ("BundleResult", "PackageOptions", "open_artifacts", "run")
