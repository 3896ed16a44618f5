"""The parts of DynamicViT shared by every family: the score predictor and the pruned forward.

Inference semantics follow the official evaluation path exactly:

* before the block at each pruning location, the predictor scores the *patch* tokens (CLS
  excluded) output by the previous block;
* the predictor's global feature is the mean over the tokens still kept (in eval the running
  decision vector is all ones, so this is a plain mean);
* the ``k = int(N0 * ratio)`` highest-scoring tokens are kept, in descending score order, CLS is
  prepended, and the block at the pruning location runs on the result.

For export, each stage is written so that it lowers to one ``TopK`` with a constant K and one
``Gather`` on the flattened token matrix (the same batch-offset trick as the official
``batch_index_select``), and nothing else that depends on the scores.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from .config import KeepSchedule, VariantConfig


class PredictorLG(nn.Module):
    """Local-global token score predictor (official module and parameter names)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.in_conv = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, embed_dim), nn.GELU())
        self.out_conv = nn.Sequential(
            nn.Linear(embed_dim, embed_dim // 2),
            nn.GELU(),
            nn.Linear(embed_dim // 2, embed_dim // 4),
            nn.GELU(),
            nn.Linear(embed_dim // 4, 2),
            nn.LogSoftmax(dim=-1),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (keep, drop) for each token, shape (B, N, 2)."""
        x = self.in_conv(tokens)
        half = x.shape[-1] // 2
        local_x = x[..., :half]
        global_x = x[..., half:].mean(dim=1, keepdim=True)
        x = torch.cat([local_x, global_x.expand(-1, x.shape[1], -1)], dim=-1)
        return self.out_conv(x)


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """tokens[b, index[b, j]] for every b, j, as one Gather on the flattened (B*N, C) matrix.

    A row gather is a plain memory copy in every backend; ``torch.gather`` would need a
    (B, K, C) index tensor and lowers to GatherElements.
    """
    batch, num_tokens, channels = tokens.shape
    offsets = torch.arange(batch, device=index.device, dtype=index.dtype).unsqueeze(1) * num_tokens
    flat_index = (index + offsets).reshape(-1)
    rows = tokens.reshape(batch * num_tokens, channels)
    return torch.index_select(rows, 0, flat_index).reshape(batch, index.shape[1], channels)


class Decisions(NamedTuple):
    """What each pruning stage decided, for validation and visualisation."""

    keep_indices: list[torch.Tensor]  # (B, K_s) int64, positions in the stage's *input* token list
    scores: list[torch.Tensor]  # (B, N_s) keep log-probabilities of the stage's input tokens


class DynamicViTBase(nn.Module):
    """Block loop with token pruning; families supply the stem and the classifier."""

    def __init__(self, variant: VariantConfig, schedule: KeepSchedule | None) -> None:
        super().__init__()
        if schedule is not None and len(schedule.counts) != variant.num_stages:
            raise ValueError(
                f"{variant.name} prunes at {variant.num_stages} locations, "
                f"got {len(schedule.counts)} keep ratios"
            )
        self.variant = variant
        self.schedule = schedule
        if schedule is not None:
            self.score_predictor = nn.ModuleList(PredictorLG(variant.embed_dim) for _ in variant.pruning_loc)

    @property
    def dense(self) -> bool:
        return self.schedule is None

    # Families supply the stem (``patch_embed``, ``cls_token``, ``pos_embed``) and ``classify``.
    def init_tokens(self) -> None:
        """The class token and position embedding as the official code initialises them."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def embed(self, images: torch.Tensor) -> torch.Tensor:  # (B, 1 + N0, D), CLS first
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.pos_embed

    def classify(self, tokens: torch.Tensor) -> torch.Tensor:  # final-normed tokens -> logits
        raise NotImplementedError

    def forward_with_decisions(self, images: torch.Tensor, keep_counts: Sequence[Any] | None = None
                               ) -> tuple[torch.Tensor, Decisions]:
        """Logits and each stage's decisions. ``keep_counts`` overrides the schedule's per-stage K
        (the --dynamic-keep export passes symbolic sizes here)."""
        counts = keep_counts if keep_counts is not None else () if self.dense else self.schedule.counts
        x = self.embed(images)
        decisions = Decisions([], [])
        stage_of_block = {} if self.dense else {loc: s for s, loc in enumerate(self.variant.pruning_loc)}
        for i, block in enumerate(self.blocks):
            stage = stage_of_block.get(i)
            if stage is not None:
                x = self._prune(x, stage, counts[stage], decisions)
            x = block(x)
        return self.classify(self.norm(x)), decisions

    def _prune(self, x: torch.Tensor, stage: int, k: Any, decisions: Decisions) -> torch.Tensor:
        cls_token, patches = x[:, :1], x[:, 1:]
        scores = self.score_predictor[stage](patches)[..., 0]
        # topk with a Python-int k exports as TopK with a constant K (argsort would not).
        _, keep = torch.topk(scores, k, dim=1, largest=True, sorted=True)
        decisions.keep_indices.append(keep)
        decisions.scores.append(scores)
        return torch.cat([cls_token, gather_tokens(patches, keep)], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_with_decisions(images)[0]


class WithKeptTokens(nn.Module):
    """Export wrapper: logits plus each stage's kept indices as extra outputs."""

    def __init__(self, model: DynamicViTBase) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, decisions = self.model.forward_with_decisions(images)
        return (logits, *decisions.keep_indices)


def kept_patch_ids(stage_indices: list, num_patches: int, *, compose: bool = True) -> list:
    """Per-stage indices (relative to each stage's input) as original patch ids: torch in, torch out.

    A thin adapter: the rule (composition across stages, ``compose=False`` for ConvNeXt / Swin, the
    range check) is ``artifact.names.kept_patch_ids``, numpy, written once; numpy arrays go to it as they are.
    """
    from ..artifact.names import kept_patch_ids as compose_ids

    tensors = [idx for idx in stage_indices if isinstance(idx, torch.Tensor)]
    if not tensors:
        return compose_ids(stage_indices, num_patches, compose=compose)
    device = tensors[0].device
    ids = compose_ids([idx.detach().cpu().numpy() if isinstance(idx, torch.Tensor) else idx for idx in stage_indices],
                      num_patches, compose=compose)
    return [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in ids]
