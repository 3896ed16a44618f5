"""Numerical comparison of a backend's outputs against the PyTorch reference (numpy only).

Used by the post-export check and by ``dvit validate``. Kept tokens are compared as *sets* of
original patch ids per stage (TopK tie order is not specified by ONNX or TensorRT). A set that
differs where the reference itself had a near-tie at the keep boundary is reported as a
near-tie flip: an honest consequence of rounding, counted separately from a real disagreement.
Reduced precisions (judged by agreement) apply the same rule to the kept-set Jaccard: an input
whose flips a near-tie explains counts as agreeing (``judged_jaccard``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    tie_margin: float  # reference score gap at the keep boundary below which a flip is "near-tie"
    # "logits": every logit within atol + rtol·|ref| and no kept-set flip beyond a near-tie.
    # "agreement" (reduced precision: int8, bf16): judged by what the model decides, not by max
    # |Δlogit| — top-1 agreement on the inputs the reference is sure about (top-1 margin ≥
    # confident_margin) and the kept-set Jaccard averaged over stages and inputs; flips beyond
    # the near-tie margin are reported, not failed.
    judge: str = "logits"
    min_top1_confident: float = 0.99
    confident_margin: float = 0.1
    min_mean_jaccard: float = 0.95

    @classmethod
    def for_precision(cls, precision: str) -> "Tolerance":
        return TOLERANCES[precision]


TOLERANCES = {
    "fp32": Tolerance(atol=1e-3, rtol=1e-3, tie_margin=1e-4),
    "tf32": Tolerance(atol=2e-2, rtol=2e-2, tie_margin=5e-3),
    "fp16": Tolerance(atol=5e-2, rtol=5e-2, tie_margin=2e-2),
    "bf16": Tolerance(atol=1e-1, rtol=1e-1, tie_margin=5e-2, judge="agreement"),
    "int8": Tolerance(atol=5e-1, rtol=5e-1, tie_margin=1e-1, judge="agreement"),
}
# Precisions judged by agreement (top-1 on confident inputs, kept-set Jaccard), not by max |Δlogit|.
AGREEMENT_PRECISIONS = tuple(name for name, tol in TOLERANCES.items() if tol.judge == "agreement")


@dataclass
class LogitStats:
    max_abs: float
    mean_abs: float
    cosine_min: float
    top1_agreement: float
    top5_agreement: float
    within_tolerance: bool
    # Top-1 agreement on the inputs whose reference top-1 margin (top-1 minus top-2 logit) is at
    # least the tolerance's confident_margin; None when no input is that clear.
    confident_samples: int = 0
    top1_agreement_confident: float | None = None
    top1_disagreements: int = 0


@dataclass
class StageStats:
    stage: int
    keep_count: int
    exact_match: float  # fraction of samples whose kept set is identical
    mean_jaccard: float
    min_jaccard: float
    flipped_samples: int
    near_tie_flips: int  # of those, samples where the reference margin was below tie_margin
    # mean_jaccard with every near-tie flip (and its downstream consequences) counted as agreement:
    # what the agreement judge compares with min_mean_jaccard, the near-tie rule applied to Jaccard.
    judged_jaccard: float = 1.0


@dataclass
class Comparison:
    samples: int
    logits: LogitStats
    stages: list[StageStats] = field(default_factory=list)
    unexplained_flips: int = 0
    excluded_samples: int = 0  # samples left out of the logit tolerance because of near-tie flips
    passed: bool = True
    failures: list[str] = field(default_factory=list)
    judged_by: str = "logits"  # the tolerance's judge: "logits" or "agreement"
    notes: list[str] = field(default_factory=list)

    @property
    def mean_jaccard(self) -> float | None:
        """Kept-set Jaccard averaged over every stage and input (None without token information)."""
        return float(np.mean([st.mean_jaccard for st in self.stages])) if self.stages else None

    @property
    def judged_jaccard(self) -> float | None:
        """``mean_jaccard`` with near-tie flips counted as agreement (the near-tie rule): what is judged."""
        return float(np.mean([st.judged_jaccard for st in self.stages])) if self.stages else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean_jaccard": self.mean_jaccard, "judged_jaccard": self.judged_jaccard}


def logit_stats(reference: np.ndarray, test: np.ndarray, tol: Tolerance, mask: np.ndarray | None = None) -> LogitStats:
    reference = np.asarray(reference, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    diff = np.abs(reference - test)
    sel = np.ones(len(reference), bool) if mask is None else mask
    cos = _cosine(reference, test)
    top1 = reference.argmax(1) == test.argmax(1)
    k = min(5, reference.shape[1])
    ref5 = np.argsort(-reference, axis=1)[:, :k]
    test5 = np.argsort(-test, axis=1)[:, :k]
    top5 = np.array([len(set(a) & set(b)) / k for a, b in zip(ref5, test5)])
    within = bool(np.all(diff[sel] <= tol.atol + tol.rtol * np.abs(reference[sel]))) if sel.any() else True
    if reference.shape[1] > 1 and len(reference):
        top2 = np.sort(reference, axis=1)[:, -2:]
        confident = (top2[:, 1] - top2[:, 0]) >= tol.confident_margin
    else:
        confident = np.ones(len(reference), bool)
    return LogitStats(
        max_abs=float(diff.max()) if diff.size else 0.0,
        mean_abs=float(diff.mean()) if diff.size else 0.0,
        cosine_min=float(cos.min()) if cos.size else 1.0,
        top1_agreement=float(top1.mean()) if top1.size else 1.0,
        top5_agreement=float(top5.mean()) if top5.size else 1.0,
        within_tolerance=within,
        confident_samples=int(confident.sum()),
        top1_agreement_confident=float(top1[confident].mean()) if confident.any() else None,
        top1_disagreements=int((~top1).sum()),
    )


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)


def boundary_margins(stage_scores: Sequence[np.ndarray], keep_counts: Sequence[int]) -> list[np.ndarray]:
    """Per stage and sample: score of the last kept token minus the first dropped one."""
    margins = []
    for scores, k in zip(stage_scores, keep_counts):
        ordered = -np.sort(-np.asarray(scores, dtype=np.float64), axis=1)
        if k >= ordered.shape[1]:
            margins.append(np.full(ordered.shape[0], np.inf))
        else:
            margins.append(ordered[:, k - 1] - ordered[:, k])
    return margins


def compare(
    ref_logits: np.ndarray,
    test_logits: np.ndarray,
    tol: Tolerance,
    *,
    ref_kept: Sequence[np.ndarray] | None = None,
    test_kept: Sequence[np.ndarray] | None = None,
    ref_margins: Sequence[np.ndarray] | None = None,
) -> Comparison:
    """Compare logits and (when both sides have them) kept patch ids per stage."""
    n = len(ref_logits)
    stages: list[StageStats] = []
    flipped_any = np.zeros(n, bool)
    unexplained = np.zeros(n, bool)
    jaccards: list[np.ndarray] = []
    if ref_kept is not None and test_kept is not None:
        first_flip_stage = np.full(n, -1)
        for s, (ref_ids, test_ids) in enumerate(zip(ref_kept, test_kept)):
            jac = np.array([_jaccard(a, b) for a, b in zip(ref_ids, test_ids)])
            jaccards.append(jac)
            flipped = jac < 1.0
            margin = ref_margins[s] if ref_margins is not None else np.full(n, np.inf)
            near_tie = flipped & (margin < tol.tie_margin)
            # A flip downstream of an earlier flip is its consequence, not a new disagreement.
            downstream = flipped & (first_flip_stage >= 0)
            new_flip = flipped & (first_flip_stage < 0)
            unexplained |= new_flip & ~near_tie
            first_flip_stage = np.where(new_flip, s, first_flip_stage)
            flipped_any |= flipped
            stages.append(
                StageStats(
                    stage=s + 1,
                    keep_count=int(np.asarray(ref_ids).shape[1]),
                    exact_match=float(1.0 - flipped.mean()) if n else 1.0,
                    mean_jaccard=float(jac.mean()) if n else 1.0,
                    min_jaccard=float(jac.min()) if n else 1.0,
                    flipped_samples=int(flipped.sum()),
                    near_tie_flips=int((near_tie | (downstream & ~unexplained)).sum()),
                )
            )
    for stage, jac in zip(stages, jaccards):  # an input whose flips a near-tie explains counts as agreeing
        stage.judged_jaccard = float(np.where(unexplained, jac, 1.0).mean()) if n else 1.0
    mask = ~flipped_any
    logits = logit_stats(ref_logits, test_logits, tol, mask)
    result = Comparison(
        samples=n,
        logits=logits,
        stages=stages,
        unexplained_flips=int(unexplained.sum()),
        excluded_samples=int(flipped_any.sum() - unexplained.sum()),
        judged_by=tol.judge,
    )
    if tol.judge == "agreement":
        _judge_agreement(result, tol)
        result.passed = not result.failures
        return result
    if not logits.within_tolerance:
        result.failures.append(
            f"logits differ by up to {logits.max_abs:.3g} (tolerance {tol.atol:g} + {tol.rtol:g}·|ref|)"
        )
    if result.unexplained_flips:
        result.failures.append(
            f"{result.unexplained_flips} sample(s) kept different tokens without a near-tie "
            f"(margin ≥ {tol.tie_margin:g})"
        )
    result.passed = not result.failures
    return result


def _judge_agreement(result: Comparison, tol: Tolerance) -> None:
    """Reduced precision: fail on top-1 disagreement where the reference is sure, or low Jaccard."""
    lg = result.logits
    if lg.top1_agreement_confident is None:
        result.notes.append(f"no input has a reference top-1 margin ≥ {tol.confident_margin:g}: "
                            "top-1 agreement not judged (raw agreement "
                            f"{lg.top1_agreement:.1%})")
    elif lg.top1_agreement_confident < tol.min_top1_confident:
        result.failures.append(
            f"top-1 agreement {lg.top1_agreement_confident:.1%} on the {lg.confident_samples} input(s) with a "
            f"reference margin ≥ {tol.confident_margin:g} (minimum {tol.min_top1_confident:.0%}; all inputs "
            f"{lg.top1_agreement:.1%})")
    if result.stages:
        # The near-tie rule: a flip where the reference itself was within tie_margin at the keep boundary
        # (and what it changes downstream) is rounding, not disagreement, so it counts as agreeing.
        overall, judged = result.mean_jaccard, result.judged_jaccard
        if judged < tol.min_mean_jaccard:
            per_stage = ", ".join(f"{st.judged_jaccard:.4f}" for st in result.stages)
            result.failures.append(f"mean kept-set Jaccard {judged:.4f} over stages and inputs, near-tie flips "
                                   f"counted as agreeing (per stage {per_stage}; raw {overall:.4f}; minimum "
                                   f"{tol.min_mean_jaccard:g})")
        elif overall < tol.min_mean_jaccard:
            result.notes.append(f"raw mean kept-set Jaccard {overall:.4f} is below {tol.min_mean_jaccard:g}, but every "
                                f"input below it flipped only where the reference had a near-tie (margin < "
                                f"{tol.tie_margin:g}): passed by the near-tie rule ({judged:.4f})")
    if result.unexplained_flips:
        result.notes.append(f"{result.unexplained_flips} input(s) kept different tokens where the reference "
                            f"margin was ≥ {tol.tie_margin:g} (reported, not failed: this precision is judged "
                            "by agreement)")


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = set(np.asarray(a).tolist()), set(np.asarray(b).tolist())
    union = len(sa | sb)
    return 1.0 if union == 0 else len(sa & sb) / union
