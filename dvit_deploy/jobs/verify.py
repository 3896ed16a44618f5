"""`dvit verify`: the command's seam, ``run(VerifyOptions(bundle), context) -> VerifyReport``.

The checks live in ``jobs.ship.verify`` beside the bundle writer whose output they check.
"""

from __future__ import annotations

from .ship import VerifyOptions, VerifyReport
from .ship import run_verify as run

__all__ = ("VerifyOptions", "VerifyReport", "run")
