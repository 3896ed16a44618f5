"""What DynamicCNN (AdaConvNeXt) and DynamicSwin share: tokens are split, never dropped.

Official eval semantics (raoyongming/DynamicViT ``models/dyconvnext.py``, ``models/dyswin.py``):

* sparsification happens in the third stage only; before block ``pruning_loc[p]`` a predictor
  scores every position of the *whole* map (not compounding) and the ``int(N · ratio_p)`` best
  ones are "kept";
* in every Ada block, the depthwise conv / window attention still run on all positions; the kept
  positions then take the full FFN/MLP, the others a fast path (LayerNorm + Linear(D, D)), and
  both are written back in place;
* Ada blocks after the last predictor reuse the last decision.

For export each decision is one ``TopK`` with the constant K = N (a full descending sort, what
the official ``argsort`` computes), sliced into the kept and the other positions: the two sets are
then a partition by construction, whatever the backend's tie order, so the write-back touches
every position exactly once. Each Ada block gathers the two sets (``Gather`` on the flattened
(B·N, C) rows) and writes them back with one ``ScatterND`` of row indices (see ``scatter_rows``).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .config import KeepSchedule, VariantConfig
from .pruning import Decisions, gather_tokens


def split_positions(scores: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, rest) positions of each row of ``scores`` (B, N): kept in descending score order."""
    order = torch.topk(scores, scores.shape[1], dim=1, largest=True, sorted=True)[1]
    return order[:, :keep], order[:, keep:]


def scatter_rows(kept_rows: torch.Tensor, rest_rows: torch.Tensor, kept: torch.Tensor, rest: torch.Tensor
                 ) -> torch.Tensor:
    """The (B, N, C) map with row ``kept[b, j]`` = kept_rows[b, j] and ``rest[b, j]`` = rest_rows[b, j].

    One ScatterND with (B·N, 1) row indices into a zero (B·N, C) matrix: the indices are a
    permutation of all rows (``split_positions``), so no row is written twice (ScatterND's result
    is undefined for duplicates) and none is left at zero. ScatterElements would need a (B·N, C)
    index tensor, C times larger, for the same rows.
    """
    batch, keep, channels = kept_rows.shape
    num = keep + rest_rows.shape[1]
    order = torch.cat([kept, rest], dim=1)
    offsets = torch.arange(batch, device=order.device, dtype=order.dtype).unsqueeze(1) * num
    flat = (order + offsets).reshape(-1)
    rows = torch.cat([kept_rows, rest_rows], dim=1).reshape(batch * num, channels)
    out = rows.new_zeros(batch * num, channels).index_put((flat,), rows)
    return out.reshape(batch, num, channels)


def split_apply(tokens: torch.Tensor, decision: tuple[torch.Tensor, torch.Tensor], full, fast) -> torch.Tensor:
    """``full`` on the kept rows of ``tokens`` (B, N, C), ``fast`` on the rest, written back in place."""
    kept, rest = decision
    return scatter_rows(full(gather_tokens(tokens, kept)), fast(gather_tokens(tokens, rest)), kept, rest)


class SplitModelBase(nn.Module):
    """Hierarchical four-stage model whose third stage splits tokens; families supply the parts."""

    score_predictor: nn.ModuleList

    def __init__(self, variant: VariantConfig, schedule: KeepSchedule | None) -> None:
        super().__init__()
        if len(variant.depths) != 4 or len(variant.dims) != 4:
            raise ValueError(f"{variant.name}: depths and dims must name four stages")
        if schedule is not None and len(schedule.counts) != variant.num_stages:
            raise ValueError(
                f"{variant.name} has {variant.num_stages} predictor positions, got {len(schedule.counts)} keep ratios"
            )
        if not variant.pruning_loc or any(not 0 <= p < variant.depths[2] for p in variant.pruning_loc):
            raise ValueError(f"{variant.name}: pruning_loc {variant.pruning_loc} must index third-stage blocks")
        self.variant = variant
        self.schedule = schedule

    @property
    def dense(self) -> bool:
        return self.schedule is None

    def is_ada(self, block_index: int) -> bool:
        """Blocks from the first predictor position on carry a fast path (official layout)."""
        return not self.dense and block_index >= self.variant.pruning_loc[0]

    # Families implement these.
    def before_split_stage(self, images: torch.Tensor) -> Any:
        raise NotImplementedError

    def stage3_blocks(self) -> Sequence[nn.Module]:
        raise NotImplementedError

    def stage3_scores(self, predictor: int, x: Any) -> torch.Tensor:  # (B, N) keep log-probabilities
        raise NotImplementedError

    def after_split_stage(self, x: Any) -> torch.Tensor:
        raise NotImplementedError

    def forward_with_decisions(self, images: torch.Tensor, keep_counts: Sequence[Any] | None = None
                               ) -> tuple[torch.Tensor, Decisions]:
        """Logits and each predictor position's decision (kept positions are map positions)."""
        counts = keep_counts if keep_counts is not None else () if self.dense else self.schedule.counts
        x = self.before_split_stage(images)
        decisions = Decisions([], [])
        position = {} if self.dense else {loc: p for p, loc in enumerate(self.variant.pruning_loc)}
        decision = None
        for i, block in enumerate(self.stage3_blocks()):
            p = position.get(i)
            if p is not None:
                scores = self.stage3_scores(p, x)
                decision = split_positions(scores, counts[p])
                decisions.keep_indices.append(decision[0])
                decisions.scores.append(scores)
            x = block(x) if decision is None else block(x, decision)
        return self.after_split_stage(x), decisions

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_with_decisions(images)[0]
