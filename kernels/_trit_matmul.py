"""Triton kernels for y = x W_hat^T straight from the packed artifact (docs/SPEC.md sections 2-3).

Codes: uint8 [planes, n, d_pad / 4], 4 trits a byte (trit j at bits 2(j%4)), or with
``packing="base3"`` [planes, n, ceil(d_pad / 5)], 5 trits a byte decoded in the kernel by
the golden fixed-point arithmetic (``ptqtp.formats.packing.base3_digits``); scales
float16 [planes, n, ng]; optional offsets (PT^2-LLM's m) [n, ng], added to every weight of
their group (integer path: m_q times the group sum of x_q). Two kernels:

- ``_float_kernel``: trits unpacked to a float tile per BLOCK_K columns, fp32 accumulation.
  Decode (m <= 8): GEMV-like, one program per BLOCK_N rows holding every x row, each packed
  byte read once, broadcast multiply-sum. Prefill (m > 8): BLOCK_M x BLOCK_N tiles fed to
  ``tl.dot``.
- ``_int_kernel``: the golden accumulator (int64) from x_q and a_q, bit-exact.

Tile sizes are fixed here, not autotuned: no GPU was available to measure them
(tested under TRITON_INTERPRET=1 only); see README.
"""

from __future__ import annotations

import torch

from ._interpreter import use_interpreter_without_cuda

use_interpreter_without_cuda()  # no GPU: Triton's interpreter runs the same kernels on the CPU (or a clear error)

import triton  # noqa: E402  (after the interpreter switch)
import triton.language as tl  # noqa: E402

from ._layout import check_packed  # noqa: E402

__all__ = ["trit_matmul", "trit_matmul_int"]


@triton.jit
def _trits(codes_ptr, plane, offs_n, offs_k, stride_cp, stride_cn, N, BASE3: tl.constexpr):
    """Trits [BLOCK_N, BLOCK_K] as int32 of one plane: the 2-bit code (0b11 -> -1), or digit
    k % 5 of a base-3 byte: f = byte * 135 (a 15-bit fraction), digit i = 3 (3^i f mod 2^15) >> 15
    (the golden decode's i-th step), digit 2 -> -1."""
    if BASE3:
        b = tl.load(
            codes_ptr + plane * stride_cp + offs_n[:, None] * stride_cn + offs_k[None, :] // 5,
            mask=offs_n[:, None] < N,
            other=0,
        ).to(tl.int32)
        i = offs_k[None, :] % 5
        pow3 = tl.where(i == 0, 1, tl.where(i == 1, 3, tl.where(i == 2, 9, tl.where(i == 3, 27, 81))))
        c = (((b * 135 * pow3) & 0x7FFF) * 3) >> 15
        return tl.where(c == 2, -1, c)
    b = tl.load(
        codes_ptr + plane * stride_cp + offs_n[:, None] * stride_cn + offs_k[None, :] // 4,
        mask=offs_n[:, None] < N,
        other=0,
    ).to(tl.int32)
    c = (b >> (2 * (offs_k[None, :] % 4))) & 3
    return tl.where(c == 3, -1, c)


@triton.jit
def _weights(
    codes_ptr,
    scales_ptr,
    offsets_ptr,
    offs_n,
    offs_k,
    g,
    stride_cp,
    stride_cn,
    stride_sp,
    stride_sn,
    N,
    PLANES: tl.constexpr,
    HAS_OFFSET: tl.constexpr,
    BASE3: tl.constexpr,
):
    """W_hat tile [BLOCK_N, BLOCK_K] float32 for columns in one group g."""
    w = tl.zeros((offs_n.shape[0], offs_k.shape[0]), dtype=tl.float32)
    for p in range(PLANES):
        t = _trits(codes_ptr, p, offs_n, offs_k, stride_cp, stride_cn, N, BASE3).to(tl.float32)
        s = tl.load(scales_ptr + p * stride_sp + offs_n * stride_sn + g, mask=offs_n < N, other=0.0).to(tl.float32)
        w += t * s[:, None]
    if HAS_OFFSET:  # offsets share the scales' [n, ng] row stride
        m = tl.load(offsets_ptr + offs_n * stride_sn + g, mask=offs_n < N, other=0.0).to(tl.float32)
        w += m[:, None]
    return w


@triton.jit
def _x_tile(x_ptr, offs_m, offs_k, stride_xm, M, K):
    """Activations [BLOCK_M, BLOCK_K] as float32, zero outside the matrix."""
    return tl.load(
        x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :],
        mask=(offs_m[:, None] < M) & (offs_k[None, :] < K),
        other=0.0,
    ).to(tl.float32)


@triton.jit
def _float_kernel(
    x_ptr,
    codes_ptr,
    scales_ptr,
    offsets_ptr,
    y_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_cp,
    stride_cn,
    stride_sp,
    stride_sn,
    PLANES: tl.constexpr,
    HAS_OFFSET: tl.constexpr,
    G: tl.constexpr,
    BASE3: tl.constexpr,
    DOT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Tiles BLOCK_M x BLOCK_N; ``DOT``: tl.dot on the unpacked tile (prefill), else a
    broadcast multiply-sum (decode, m <= 8: one row block, every packed byte read once)."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        w = _weights(
            codes_ptr,
            scales_ptr,
            offsets_ptr,
            offs_n,
            offs_k,
            k0 // G,
            stride_cp,
            stride_cn,
            stride_sp,
            stride_sn,
            N,
            PLANES,
            HAS_OFFSET,
            BASE3,
        )
        x = _x_tile(x_ptr, offs_m, offs_k, stride_xm, M, K)
        if DOT:
            acc += tl.dot(x, tl.trans(w))
        else:
            acc += tl.sum(x[:, None, :] * w[None, :, :], axis=2)
    tl.store(y_ptr + offs_m[:, None] * N + offs_n[None, :], acc, mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@triton.jit
def _int_kernel(
    xq_ptr,
    codes_ptr,
    aq_ptr,
    mq_ptr,
    acc_ptr,
    M,
    N,
    ng,
    stride_xm,
    stride_cp,
    stride_cn,
    stride_ap,
    stride_an,
    PLANES: tl.constexpr,
    HAS_OFFSET: tl.constexpr,
    G: tl.constexpr,
    BASE3: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int64)
    for g in range(0, ng):
        if HAS_OFFSET:  # m_q times the group's sum of x_q (offsets share a_q's [n, ng] row stride)
            xs = tl.zeros((BLOCK_M,), dtype=tl.int32)
            for k0 in range(0, G, BLOCK_K):
                offs_k = g * G + k0 + tl.arange(0, BLOCK_K)
                x = tl.load(xq_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=offs_m[:, None] < M, other=0)
                xs += tl.sum(x, axis=1)
            mq = tl.load(mq_ptr + offs_n * stride_an + g, mask=offs_n < N, other=0)
            acc += xs.to(tl.int64)[:, None] * mq[None, :]
        for p in range(PLANES):
            part = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)  # |p| <= G Q < 2^31 for A <= 16, G <= 2^15
            for k0 in range(0, G, BLOCK_K):
                offs_k = g * G + k0 + tl.arange(0, BLOCK_K)
                t = _trits(codes_ptr, p, offs_n, offs_k, stride_cp, stride_cn, N, BASE3)
                x = tl.load(xq_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=offs_m[:, None] < M, other=0)
                part += tl.sum(x[:, None, :] * t[None, :, :], axis=2)
            a = tl.load(aq_ptr + p * stride_ap + offs_n * stride_an + g, mask=offs_n < N, other=0)
            acc += part.to(tl.int64) * a[None, :]
    tl.store(acc_ptr + offs_m[:, None] * N + offs_n[None, :], acc, mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def trit_matmul(
    x: torch.Tensor,
    codes: torch.Tensor,
    scales: torch.Tensor,
    group_size: int = 128,
    offsets: torch.Tensor | None = None,
    packing: str = "2bit",
) -> torch.Tensor:
    """y = x W_hat^T (fp32 accumulation, output in x's dtype) for x (..., d) with d <= d_pad,
    W_hat = sum_k a_k T_k (+ m) in stored column order (a permutation is the caller's)."""
    n, d_pad = check_packed(codes, scales, group_size, offsets, packing)
    if x.shape[-1] > d_pad:
        raise ValueError(f"x has {x.shape[-1]} features, the layer at most {d_pad}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    M = x2.shape[0]
    if x2.shape[1] != d_pad:  # padding columns hold trit 0, so zero activations there are exact
        x2 = torch.nn.functional.pad(x2, (0, d_pad - x2.shape[1]))
    x2 = x2.contiguous()
    y = torch.empty(M, n, device=x.device, dtype=torch.float32)
    block_k = min(64, group_size & -group_size)  # a power of two dividing G: a block never spans groups
    scales = scales.contiguous()
    offsets = scales if offsets is None else offsets.to(scales.dtype).contiguous()  # unread without HAS_OFFSET
    args = (
        x2,
        codes,
        scales,
        offsets,
        y,
        M,
        n,
        d_pad,
        x2.stride(0),
        codes.stride(0),
        codes.stride(1),
        scales.stride(0),
        scales.stride(1),
    )
    flags = dict(PLANES=codes.shape[0], HAS_OFFSET=offsets is not scales, G=group_size, BASE3=packing == "base3")
    bm = max(1, triton.next_power_of_2(M)) if M <= 8 else 64  # decode: all rows in one block
    _float_kernel[(triton.cdiv(M, bm), triton.cdiv(n, 64))](
        *args, **flags, DOT=M > 8, BLOCK_M=bm, BLOCK_N=64, BLOCK_K=block_k
    )
    return y.to(x.dtype).reshape(*lead, n)


def trit_matmul_int(
    x_q: torch.Tensor,
    codes: torch.Tensor,
    a_q: torch.Tensor,
    group_size: int = 128,
    m_q: torch.Tensor | None = None,
    packing: str = "2bit",
) -> torch.Tensor:
    """The golden accumulator acc int64 [m, n] from x_q [m, d_pad] (integers), a_q int64
    [planes, n, ng] and optional offsets m_q int64 [n, ng]."""
    n, d_pad = check_packed(codes, a_q, group_size, m_q, packing)
    if x_q.dim() != 2 or x_q.shape[1] != d_pad:
        raise ValueError(f"x_q must be (m, {d_pad}), not {tuple(x_q.shape)}")
    if x_q.abs().max() >= 2**15 or group_size > 2**15:
        raise ValueError("x_q must fit 16 bits and G must be <= 32768 (int32 partial sums)")
    x_q = x_q.to(torch.int32).contiguous()
    a_q = a_q.to(torch.int64).contiguous()
    mq = a_q if m_q is None else m_q.to(torch.int64).contiguous()  # unread without HAS_OFFSET
    M = x_q.shape[0]
    acc = torch.empty(M, n, device=x_q.device, dtype=torch.int64)
    grid = (triton.cdiv(M, 16), triton.cdiv(n, 32))
    _int_kernel[grid](
        x_q,
        codes,
        a_q,
        mq,
        acc,
        M,
        n,
        d_pad // group_size,
        x_q.stride(0),
        codes.stride(0),
        codes.stride(1),
        a_q.stride(0),
        a_q.stride(1),
        PLANES=codes.shape[0],
        HAS_OFFSET=m_q is not None,
        G=group_size,
        BASE3=packing == "base3",
        BLOCK_M=16,
        BLOCK_N=32,
        BLOCK_K=min(32, group_size & -group_size),
    )
    return acc
