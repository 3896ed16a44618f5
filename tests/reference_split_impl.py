"""An independent re-statement of the official AdaConvNeXt / AdaSwin eval paths, for tests.

Plain tensor maths on a bare state dict (no timm, no dvit modules), step by step as in the
official ``models/dyconvnext.py`` / ``models/dyswin.py``: channels-first LayerNorm written out
(mean, biased variance, sqrt), ``argsort(descending)`` split into kept / rest, the official
``batch_index_select`` / ``batch_index_fill`` (advanced-index writes into a zero map), shifted
windows with the -100 mask, PatchMerging's x0..x3 order. If dvit's models drift from these
semantics, the comparison tests fail.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _linear(sd, prefix, x):
    return F.linear(x, sd[f"{prefix}.weight"], sd.get(f"{prefix}.bias"))


def _ln(sd, prefix, x, eps):
    return F.layer_norm(x, x.shape[-1:], sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], eps)


def _ln_channels_first(sd, prefix, x, eps):
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    x = (x - u) / torch.sqrt(s + eps)
    return sd[f"{prefix}.weight"][:, None, None] * x + sd[f"{prefix}.bias"][:, None, None]


def _conv(sd, prefix, x, **kw):
    return F.conv2d(x, sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], **kw)


def batch_index_select(x, idx):
    b, n, c = x.size()
    offset = torch.arange(b, dtype=torch.long).view(b, 1) * n
    return x.reshape(b * n, c)[(idx + offset).reshape(-1)].reshape(b, idx.size(1), c)


def batch_index_fill(x, x1, x2, idx1, idx2):
    b, n, c = x.size()
    offset = torch.arange(b, dtype=torch.long).view(b, 1)
    x = x.reshape(b * n, c)
    x[(idx1 + offset * n).reshape(-1)] = x1.reshape(-1, c)
    x[(idx2 + offset * n).reshape(-1)] = x2.reshape(-1, c)
    return x.reshape(b, n, c)


def _split(score, ratio):
    """Official eval decision: argsort descending, first int(N*ratio) kept, the rest fast path."""
    b, n = score.shape
    keep = int(n * ratio)
    idx = torch.argsort(score, dim=1, descending=True)
    return idx[:, :keep], idx[:, keep:]


# --------------------------------------------------------------------------------------------
# AdaConvNeXt


def _convnext_ffn(sd, p, x):
    x = _ln(sd, f"{p}.norm", x, 1e-6)
    x = _linear(sd, f"{p}.pwconv2", F.gelu(_linear(sd, f"{p}.pwconv1", x)))
    return sd[f"{p}.gamma"] * x


def _convnext_block(sd, p, x, mask=None):
    inp = x
    dim = x.shape[1]
    x = F.conv2d(x, sd[f"{p}.dwconv.weight"], sd[f"{p}.dwconv.bias"], padding=3, groups=dim)
    if mask is None:
        return inp + _convnext_ffn(sd, p, x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    idx1, idx2 = mask
    n, c, h, w = x.shape
    x = x.permute(0, 2, 3, 1).reshape(n, h * w, c)
    x1 = _convnext_ffn(sd, p, batch_index_select(x, idx1))
    x2 = sd[f"{p}.fast_path_gamma"] * _linear(sd, f"{p}.fast_path.1",
                                              _ln(sd, f"{p}.fast_path.0", batch_index_select(x, idx2), 1e-6))
    x = batch_index_fill(torch.zeros_like(x), x1, x2, idx1, idx2)
    return inp + x.reshape(n, h, w, c).permute(0, 3, 1, 2)


def _convnext_predictor(sd, j, x):
    p = f"score_predictor.{j}"
    x = F.gelu(_conv(sd, f"{p}.in_conv.1", _ln_channels_first(sd, f"{p}.in_conv.0", x, 1e-6)))
    b, c, h, w = x.shape
    local_x = x[:, : c // 2]
    global_x = torch.mean(x[:, c // 2:], keepdim=True, dim=(2, 3))
    x = torch.cat([local_x, global_x.expand(b, c // 2, h, w)], dim=1)
    x = F.gelu(_conv(sd, f"{p}.out_conv.0", x))
    x = F.gelu(_conv(sd, f"{p}.out_conv.2", x))
    return F.log_softmax(_conv(sd, f"{p}.out_conv.4", x), dim=1)[:, 0].reshape(b, h * w)


@torch.no_grad()
def official_convnext_forward(sd, depths, pruning_loc, images, sparse_ratio=None):
    """Logits and each decision's kept positions (argsort order); ``sparse_ratio=None``: dense."""
    x = images
    kept = []
    for s in range(4):
        if s == 0:
            x = _ln_channels_first(sd, "downsample_layers.0.1", _conv(sd, "downsample_layers.0.0", x, stride=4), 1e-6)
        else:
            x = _conv(sd, f"downsample_layers.{s}.1", _ln_channels_first(sd, f"downsample_layers.{s}.0", x, 1e-6),
                      stride=2)
        mask, loc = None, 0
        for i in range(depths[s]):
            if s == 2 and sparse_ratio is not None and i in pruning_loc:
                mask = _split(_convnext_predictor(sd, loc, x), sparse_ratio[loc])
                kept.append(mask[0])
                loc += 1
            x = _convnext_block(sd, f"stages.{s}.{i}", x, mask)
    x = _ln(sd, "norm", x.mean([-2, -1]), 1e-6)
    return _linear(sd, "head", x), kept


# --------------------------------------------------------------------------------------------
# AdaSwin


def _window_partition(x, ws):
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, c)


def _window_reverse(windows, ws, h, w):
    b = int(windows.shape[0] / (h * w / ws / ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


def _attn_mask(h, w, ws, shift):
    img_mask = torch.zeros((1, h, w, 1))
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img_mask[:, hs, wsl, :] = cnt
            cnt += 1
    mw = _window_partition(img_mask, ws).view(-1, ws * ws)
    m = mw.unsqueeze(1) - mw.unsqueeze(2)
    return m.masked_fill(m != 0, float(-100.0)).masked_fill(m == 0, float(0.0))


def _rel_index(ws):
    coords = torch.stack(torch.meshgrid([torch.arange(ws), torch.arange(ws)], indexing="ij"))
    cf = torch.flatten(coords, 1)
    rel = (cf[:, :, None] - cf[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


def _window_attention(sd, p, x, heads, ws, mask):
    b_, n, c = x.shape
    qkv = _linear(sd, f"{p}.qkv", x).reshape(b_, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)
    table = sd[f"{p}.relative_position_bias_table"]
    bias = table[_rel_index(ws).view(-1)].view(ws * ws, ws * ws, -1).permute(2, 0, 1).contiguous()
    attn = attn + bias.unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        attn = attn.view(b_ // nw, nw, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, n, n)
    attn = attn.softmax(dim=-1)
    return _linear(sd, f"{p}.proj", (attn @ v).transpose(1, 2).reshape(b_, n, c))


def _swin_block(sd, p, x, res, heads, ws, shift, mask=None):
    h, w = res
    if min(res) <= ws:
        shift, ws = 0, min(res)
    b, l, c = x.shape
    shortcut = x
    x = _ln(sd, f"{p}.norm1", x, 1e-5).view(b, h, w, c)
    if shift > 0:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    win = _window_partition(x, ws).view(-1, ws * ws, c)
    win = _window_attention(sd, f"{p}.attn", win, heads, ws, _attn_mask(h, w, ws, shift) if shift else None)
    x = _window_reverse(win.view(-1, ws, ws, c), ws, h, w)
    if shift > 0:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    x = shortcut + x.view(b, h * w, c)

    def mlp(t):
        return _linear(sd, f"{p}.mlp.fc2", F.gelu(_linear(sd, f"{p}.mlp.fc1", _ln(sd, f"{p}.norm2", t, 1e-5))))

    if mask is None:
        return x + mlp(x)
    idx1, idx2 = mask
    x1 = mlp(batch_index_select(x, idx1))
    x2 = _linear(sd, f"{p}.fastmlp.fc1.1", _ln(sd, f"{p}.fastmlp.fc1.0", batch_index_select(x, idx2), 1e-5))
    return x + batch_index_fill(torch.zeros_like(x), x1, x2, idx1, idx2)


def _swin_predictor(sd, j, x):
    p = f"layers.2.score_predictor.{j}"
    x = F.gelu(_linear(sd, f"{p}.in_conv.1", _ln(sd, f"{p}.in_conv.0", x, 1e-5)))
    b, n, c = x.shape
    global_x = torch.mean(x[:, :, c // 2:], keepdim=True, dim=1)
    x = torch.cat([x[:, :, : c // 2], global_x.expand(b, n, c // 2)], dim=2)
    x = F.gelu(_linear(sd, f"{p}.out_conv.0", x))
    x = F.gelu(_linear(sd, f"{p}.out_conv.2", x))
    return F.log_softmax(_linear(sd, f"{p}.out_conv.4", x), dim=-1)[:, :, 0]


@torch.no_grad()
def official_swin_forward(sd, depths, heads, pruning_loc, images, sparse_ratio=None, window=7):
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=4)
    grid = x.shape[-1]
    x = _ln(sd, "patch_embed.norm", x.flatten(2).transpose(1, 2), 1e-5)
    kept = []
    for s in range(4):
        res = (grid // 2 ** s, grid // 2 ** s)
        mask, loc = None, 0
        for i in range(depths[s]):
            if s == 2 and sparse_ratio is not None and i in pruning_loc:
                mask = _split(_swin_predictor(sd, loc, x), sparse_ratio[loc])
                kept.append(mask[0])
                loc += 1
            x = _swin_block(sd, f"layers.{s}.blocks.{i}", x, res, heads[s], window,
                            0 if i % 2 == 0 else window // 2, mask)
        if s < 3:
            h, w = res
            b, _, c = x.shape
            v = x.view(b, h, w, c)
            v = torch.cat([v[:, 0::2, 0::2], v[:, 1::2, 0::2], v[:, 0::2, 1::2], v[:, 1::2, 1::2]], -1)
            x = F.linear(_ln(sd, f"layers.{s}.downsample.norm", v.view(b, -1, 4 * c), 1e-5),
                         sd[f"layers.{s}.downsample.reduction.weight"])
    x = _ln(sd, "norm", x, 1e-5).transpose(1, 2).mean(-1)
    return _linear(sd, "head", x), kept
