"""``TritPlaneLinear``: a drop-in ``nn.Linear`` replacement holding the packed trit planes."""

from __future__ import annotations

import torch

from ptqtp.formats.packing import unpack_trits
from ptqtp.golden import is_permutation
from ptqtp.methods import dequantize_planes

from ._layout import check_packed

__all__ = ["TritPlaneLinear"]

BACKENDS = ("auto", "triton", "torch")


class TritPlaneLinear(torch.nn.Module):
    """y = x W_hat^T + b from packed codes (uint8 [planes, n, d_pad/4], or ceil(d_pad/5) bytes
    a row with ``packing="base3"``; ``ptqtp.formats.packing``), float16 scales
    [planes, n, ng] and, for PT^2-LLM layers, float16 offsets [n, ng] and the column order
    ``perm`` int32 [d] (x[..., perm] meets the stored columns).

    ``backend``: ``"auto"`` uses the Triton float kernel on CUDA tensors and a torch
    fallback (dequantize once, cache, ``F.linear``) elsewhere; ``"triton"`` or ``"torch"``
    force one (Triton on CPU needs ``TRITON_INTERPRET=1``).
    """

    def __init__(
        self,
        codes: torch.Tensor,
        scales: torch.Tensor,
        in_features: int,
        group_size: int = 128,
        bias: torch.Tensor | None = None,
        backend: str = "auto",
        offsets: torch.Tensor | None = None,
        perm: torch.Tensor | None = None,
        packing: str = "2bit",
    ):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        n, d_pad = check_packed(codes, scales, group_size, offsets, packing)
        if not d_pad - group_size < in_features <= d_pad:
            raise ValueError(f"in_features {in_features} does not fit d_pad {d_pad} with G={group_size}")
        if perm is not None and not is_permutation(perm.cpu(), in_features):
            raise ValueError(f"perm must be a permutation of 0..{in_features - 1}")
        self.in_features, self.out_features, self.group_size, self.backend = in_features, n, group_size, backend
        self.packing, self.d_pad = packing, d_pad
        # Buffers carry the artifact's tensor names, so a model's state dict is the artifact's
        # (NAME.tp_codes, ...) and transformers loads a quantized folder straight into them.
        self.register_buffer("tp_codes", codes)
        self.register_buffer("tp_scales", scales.to(torch.float16))
        self.register_buffer("tp_offsets", None if offsets is None else offsets.to(torch.float16))
        self.register_buffer("tp_perm", None if perm is None else perm.to(torch.int32))
        self.register_buffer("bias", bias)
        self._dense: torch.Tensor | None = None

    codes = property(lambda self: self.tp_codes)
    scales = property(lambda self: self.tp_scales)
    offsets = property(lambda self: self.tp_offsets)
    perm = property(lambda self: self.tp_perm)

    @classmethod
    def from_packed(cls, layer, backend: str = "auto") -> TritPlaneLinear:
        """From an artifact's :class:`ptqtp.formats.artifact.PackedLayer`."""
        return cls(
            layer.codes,
            layer.scales,
            layer.in_features,
            layer.group_size,
            layer.bias,
            backend,
            layer.offsets,
            layer.perm,
            layer.packing,
        )

    def trits(self) -> torch.Tensor:
        """int8 trits [planes, n, d_pad]."""
        return unpack_trits(self.codes, self.packing, self.d_pad)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """W_hat (n, in_features), input column order."""
        return dequantize_planes(
            self.trits(), self.scales, self.group_size, self.in_features, dtype, self.offsets, self.perm
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input has {x.shape[-1]} features, the layer takes {self.in_features}")
        if self.backend == "triton" or (self.backend == "auto" and x.is_cuda):
            from ._trit_matmul import trit_matmul

            xs = x if self.perm is None else x.index_select(-1, self.perm)  # int32 indices, the buffer's device
            y = trit_matmul(xs, self.codes, self.scales, self.group_size, self.offsets, self.packing)
            return y if self.bias is None else y + self.bias.to(y.dtype)
        if self._dense is None or self._dense.dtype != x.dtype or self._dense.device != x.device:
            self._dense = self.dequantize(x.dtype).to(x.device)
        return torch.nn.functional.linear(x, self._dense, None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}, "
            f"packing={self.packing}, backend={self.backend}"
        )
