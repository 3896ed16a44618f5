"""Options and option parsing shared by the commands (``--json``, ``--force``, ``--no-verify``, number lists)."""

from __future__ import annotations

import math

import typer

from ..helpers.errors import DvitError

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document on stdout instead of tables.")
FORCE_OPTION = typer.Option(
    False, "--force", "-f",
    help="Replace an existing output file of the kind this command writes (and its dvit manifest); "
         "anything else is refused.")
NO_VERIFY_OPTION = typer.Option(
    False, "--no-verify",
    help="Use artifacts whose sha256 does not match their manifest (warns instead of refusing).")


def finite(value: float | None) -> float | None:
    """The callback of every float option: NaN and ±inf are refused (``--duration nan`` would never end)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value


def parse_floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:  # an empty item ("0.7,,0.5", ",") is a typo, not "nothing": refused like any other non-number
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise DvitError(f"{option} takes comma-separated numbers, got '{text}'") from None
    if not all(math.isfinite(v) for v in values):
        raise DvitError(f"{option} takes finite numbers, got '{text}'")
    return values


def parse_ints(text: str | None, option: str) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise DvitError(f"{option} takes comma-separated integers, got '{text}'") from None
    if not values or any(v < 1 for v in values):
        raise DvitError(f"{option} takes positive integers, got '{text}'")
    return values


CHECKPOINT_OPTION = typer.Option(
    None, "--checkpoint", help="Where the checkpoint the artifact was exported from is now, if it moved (the "
    "PyTorch reference / torch backend rebuild it; its sha256 must match the manifest's).")
