"""An independent, explicit re-statement of the official DynamicViT eval path, for tests.

It works on a bare state dict with plain tensor maths (no timm, no dvit modules), following
the paper and the official code's semantics step by step: argsort-descending selection,
batch-offset row selection, policy-weighted predictor mean, attention as (q*scale) @ k^T, LV-ViT
residuals divided by skip_lam and the aux-head output. If dvit's model drifts from these
semantics (eps, bias, order of kept tokens, output head), the comparison tests fail.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _linear(sd, prefix, x):
    bias = sd.get(f"{prefix}.bias")
    return F.linear(x, sd[f"{prefix}.weight"], bias)


def _layer_norm(sd, prefix, x, eps):
    return F.layer_norm(x, x.shape[-1:], sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], eps)


def _attention(sd, prefix, x, heads):
    b, n, c = x.shape
    qkv = _linear(sd, f"{prefix}.qkv", x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = ((q * (c // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    return _linear(sd, f"{prefix}.proj", (attn @ v).transpose(1, 2).reshape(b, n, c))


def _block(sd, i, x, cfg):
    p = f"blocks.{i}"
    lam = cfg.skip_lam
    h = _layer_norm(sd, f"{p}.norm1", x, cfg.norm_eps)
    x = x + _attention(sd, f"{p}.attn", h, cfg.num_heads) / lam
    h = _layer_norm(sd, f"{p}.norm2", x, cfg.norm_eps)
    h = _linear(sd, f"{p}.mlp.fc2", F.gelu(_linear(sd, f"{p}.mlp.fc1", h)))
    return x + h / lam


def _predictor(sd, j, x, policy):
    p = f"score_predictor.{j}"
    x = F.gelu(_linear(sd, f"{p}.in_conv.1", _layer_norm(sd, f"{p}.in_conv.0", x, 1e-5)))
    b, n, c = x.shape
    local_x = x[:, :, : c // 2]
    global_x = (x[:, :, c // 2:] * policy).sum(dim=1, keepdim=True) / torch.sum(policy, dim=1, keepdim=True)
    x = torch.cat([local_x, global_x.expand(b, n, c // 2)], dim=-1)
    x = F.gelu(_linear(sd, f"{p}.out_conv.0", x))
    x = F.gelu(_linear(sd, f"{p}.out_conv.2", x))
    return F.log_softmax(_linear(sd, f"{p}.out_conv.4", x), dim=-1)


def _batch_index_select(x, idx):
    b, n = x.shape[:2]
    offset = torch.arange(b, dtype=torch.long).view(b, 1) * n
    flat = (idx + offset).reshape(-1)
    return x.reshape(b * n, *x.shape[2:])[flat].reshape(b, idx.shape[1], *x.shape[2:])


def _stem(sd, images, cfg):
    if cfg.family == "deit":
        x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=cfg.patch_size)
    else:
        x = images
        for i, (stride, pad) in enumerate(((2, 3), (1, 1), (1, 1)), start=1):
            x = F.conv2d(x, sd[f"patch_embed.conv{i}.weight"], stride=stride, padding=pad)
            x = F.batch_norm(x, sd[f"patch_embed.bn{i}.running_mean"], sd[f"patch_embed.bn{i}.running_var"],
                             sd[f"patch_embed.bn{i}.weight"], sd[f"patch_embed.bn{i}.bias"], False, 0.0, 1e-5)
            x = F.relu(x)
        x = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=cfg.patch_size // 2)
    return x.flatten(2).transpose(1, 2)


@torch.no_grad()
def official_eval_forward(state_dict, cfg, images, token_ratios=None):
    """Logits and, per stage, the kept indices (relative to that stage's input), official order."""
    sd = state_dict
    x = _stem(sd, images, cfg)
    b = x.shape[0]
    x = torch.cat([sd["cls_token"].expand(b, -1, -1), x], dim=1) + sd["pos_embed"]
    init_n = cfg.num_patches
    prev_decision = torch.ones(b, init_n, 1)
    kept = []
    p_count = 0
    for i in range(cfg.depth):
        if token_ratios is not None and i in cfg.pruning_loc:
            spatial_x = x[:, 1:]
            score = _predictor(sd, p_count, spatial_x, prev_decision)[:, :, 0]
            num_keep = int(init_n * token_ratios[p_count])
            keep_policy = torch.argsort(score, dim=1, descending=True)[:, :num_keep]
            now_policy = torch.cat([torch.zeros(b, 1, dtype=keep_policy.dtype), keep_policy + 1], dim=1)
            x = _batch_index_select(x, now_policy)
            prev_decision = _batch_index_select(prev_decision, keep_policy)
            kept.append(keep_policy)
            p_count += 1
        x = _block(sd, i, x, cfg)
    x = _layer_norm(sd, "norm", x, cfg.norm_eps)
    logits = _linear(sd, "head", x[:, 0])
    if cfg.family == "lvvit":
        logits = logits + 0.5 * _linear(sd, "aux_head", x[:, 1:]).max(1)[0]
    return logits, kept
