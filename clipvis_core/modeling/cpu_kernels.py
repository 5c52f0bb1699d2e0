"""oneDNN GEMMs for fp32 inference on CPU (the streaming segmenter's fast path).

``nn.Linear`` on CPU calls MKL's sgemm, which takes its AVX2 code path on AMD CPUs; oneDNN
dispatches on the ISA flags and runs AVX-512 there (about 2x on the large-token GEMMs of the pixel
decoder and the decoder's cross-attention, measured in docs/performance.md). Same math, float
rounding only. ``ClipVisModel.forward_frames`` turns the path on for its own forward when it applies
(CPU, fp32, no autograd, no autocast); upstream's whole-video reference keeps plain ``nn.Linear``.
"""
from __future__ import annotations

import contextlib
import contextvars

import torch
import torch.nn.functional as F
from torch import nn

_ON = contextvars.ContextVar("clipvis_cpu_kernels", default=False)


def applies(x: torch.Tensor) -> bool:
    """Whether the oneDNN path can run a forward on ``x`` with the same math as the plain one."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu") and torch.backends.mkldnn.is_available())


@contextlib.contextmanager
def enabled(on: bool = True):
    token = _ON.set(on)
    try:
        yield
    finally:
        _ON.reset(token)


def active() -> bool:
    return _ON.get()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, relu: bool = False) -> torch.Tensor:
    """``F.linear`` (then ``F.relu`` if ``relu``); through oneDNN while the fast path is on and there are
    enough rows to pay, with the ReLU applied in the GEMM's output pass."""
    if not _ON.get() or x.dtype != torch.float32 or x.numel() < 1024 * x.shape[-1]:  # small: MKL is as fast
        y = F.linear(x, weight, bias)
        return F.relu(y) if relu else y
    y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), weight, bias, "relu" if relu else "none", [], "")
    return y.view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and keys) whose inference forward may use ``linear`` above."""

    def forward(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        return linear(x, self.weight, self.bias, relu)


def attention(attn: nn.MultiheadAttention, query, key, value, attn_mask: torch.Tensor | None = None):
    """``attn(query, key, value, attn_mask=attn_mask)[0]`` for sequence-first inputs and an optional boolean
    mask (True = blocked, [N, Lq, Lk], the same for every head), with the projections through ``linear`` and no attention
    weights returned (nn.MultiheadAttention averages them even when nobody reads them). Needs the
    packed in-projection (same embed size for query, key and value) and no bias_k / bias_v."""
    lq, n, d = query.shape
    h = attn.num_heads
    wq, wk, wv = attn.in_proj_weight.chunk(3)
    bq, bk, bv = attn.in_proj_bias.chunk(3) if attn.in_proj_bias is not None else (None,) * 3

    def heads(x, w, b):  # [L, N, d] -> [N, heads, L, d/heads]
        return linear(x, w, b).view(x.shape[0], n, h, d // h).permute(1, 2, 0, 3)

    mask = None if attn_mask is None else ~attn_mask.unsqueeze(1)  # broadcast over heads
    out = F.scaled_dot_product_attention(heads(query, wq, bq), heads(key, wk, bk), heads(value, wv, bv), attn_mask=mask)
    out = out.permute(2, 0, 1, 3).reshape(lq, n, d)
    return linear(out, attn.out_proj.weight, attn.out_proj.bias)
