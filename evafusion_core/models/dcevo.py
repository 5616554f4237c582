"""DCEvo: the infrared-visible fusion network that EVAFusion fine-tunes.

DCEvo (CVPR 2025, "Discriminative Cross-Dimensional Evolutionary Learning for Infrared and
Visible Image Fusion", arXiv 2503.17673) follows CDDFuse's layout: a shared encoder splits each
modality into a low-frequency ("base") and a high-frequency ("detail") feature map, two fusion
layers merge the IR and VIS maps of each kind, and a decoder turns the fused pair back into an
image. Everything runs at full resolution with 64 channels and no down-sampling, so any input
of at least 2x2 pixels works as is (``pad_multiple = 1``); the Restormer attention in the
decoder head is *channel* attention (an 8x8 map per head), which has no size constraint either.

What differs from CDDFuse is the building block: YOLOv8-style C2f blocks gated by the
parameter-free "Discriminative Enhancer" (called ``prominent`` in the original code) replace the
Restormer and Lite-Transformer stacks, and SimAM gates the INN's outputs.

Module by module (parameters, all verified by ``tests/test_dcevo.py``):

* ``encoder`` (:class:`DEEncoder`): 966,720
* ``decoder`` (:class:`DEDecoder`): 847,080
* ``low_freq_fusion`` (:class:`LowFreqExtractor`): 155,008
* ``high_freq_fusion`` (:class:`HighFreqExtractor`): 36,096
* total: 2,004,904

Inside each of the four submodules, attribute names follow the original code exactly
(``encoder_level1``, ``baseFeature``, ``shffleconv``, ``output.0.norm1.body.bias`` ...). That is
deliberate: the published checkpoint is four DataParallel state dicts, and keeping the inner
names lets :func:`convert_original_state_dict` be a pure prefix rewrite rather than a
hand-maintained table of renames that could silently drift.

Left out: the Cross-Dimensional Embedding (``CrossAttentionBlock`` x3, CA1/CA3/CA5). It only
exists in the task-guided variant, where its keys come from a YOLO neck; pure fusion (and the
published ``DCEvo_fusion.pth``) never uses it, and a fusion-only package has no detector to
feed it.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Mapping
from os import PathLike
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ModelLoadError, PairError
from .base import FusionNet

__all__ = [
    "ORIGINAL_CHECKPOINT_KEYS",
    "DCEvo",
    "DEDecoder",
    "DEEncoder",
    "HighFreqExtractor",
    "LowFreqExtractor",
    "convert_original_state_dict",
]

#: The four state dicts in the published checkpoint, and the DCEvo attribute each one loads into.
ORIGINAL_CHECKPOINT_KEYS: dict[str, str] = {
    "DE_Encoder": "encoder",
    "DE_Decoder": "decoder",
    "LowFreqExtractor": "low_freq_fusion",
    "HighFreqExtractor": "high_freq_fusion",
}

_DATAPARALLEL_PREFIX = "module."


# --------------------------------------------------------------------------------------------
# Parameter-free attention gates
# --------------------------------------------------------------------------------------------


def prominent_gate(x: Tensor) -> Tensor:
    """The Discriminative Enhancer: ``SiLU(x * sigmoid(y^2 / mean_HW(y)))`` with ``y = sigmoid(x)``.

    Each channel is gated by how strongly a position responds relative to that channel's
    spatial mean, so salient responses pass and flat ones are damped. The mean is taken per
    sample and per channel, which keeps the network batch-independent.
    """
    y = torch.sigmoid(x)
    return F.silu(x * torch.sigmoid(y * y / y.mean(dim=(2, 3), keepdim=True)))


def simam(x: Tensor, e_lambda: float = 1e-4) -> Tensor:
    """SimAM (Yang et al., ICML 2021): weight each activation by its energy-based distinctiveness.

    A neuron that stands out from its channel's spatial mean gets a larger weight. The variance
    uses ``H*W - 1`` in the denominator, as the reference formulation does.
    """
    n = x.shape[2] * x.shape[3] - 1
    d = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)
    y = d / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + e_lambda)) + 0.5
    return x * torch.sigmoid(y)


# --------------------------------------------------------------------------------------------
# Low-frequency path: YOLOv8 C2f blocks
# --------------------------------------------------------------------------------------------


class ConvSiLU(nn.Module):
    """A YOLO ``Conv``: bias-free ``k x k`` convolution with "same" padding, then SiLU.

    Unlike Ultralytics' version there is no BatchNorm; the single child is named ``conv`` so the
    checkpoint's ``...cv1.conv.weight`` keys land here.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(self.conv(x))


class Bottleneck(nn.Module):
    """Residual pair of 3x3 ConvSiLUs: the first dense, the second grouped.

    Only ``cv2`` takes the group count (the original passes ``g`` to the second conv only);
    grouping both would give 47,872 instead of 155,008 parameters per LowFreqExtractor.
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.cv1 = ConvSiLU(channels, channels, 3)
        self.cv2 = ConvSiLU(channels, channels, 3, groups=groups)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.cv2(self.cv1(x))


class C2f(nn.Module):
    """YOLOv8 C2f with a prominent-gated residual: ``x + prominent(cv2(concat(splits)))``.

    ``cv1`` splits the input into two halves; a chain of bottlenecks grows from the second half
    and every intermediate output is concatenated, so ``cv2`` sees ``(2 + n)`` half-width maps.
    """

    def __init__(self, channels: int, n: int = 6, groups: int = 32) -> None:
        super().__init__()
        hidden = channels // 2
        self.cv1 = ConvSiLU(channels, 2 * hidden, 1)
        self.cv2 = ConvSiLU((2 + n) * hidden, channels, 1)
        self.m = nn.ModuleList(Bottleneck(hidden, groups) for _ in range(n))

    def forward(self, x: Tensor) -> Tensor:
        parts = list(self.cv1(x).chunk(2, dim=1))
        for block in self.m:
            parts.append(block(parts[-1]))
        return x + prominent_gate(self.cv2(torch.cat(parts, dim=1)))


class LowFreqExtractor(nn.Module):
    """Two C2f blocks (n = 6, groups = dim/2): the "base" feature block, 155,008 parameters at dim 64.

    Used for the encoder trunk (x5 encoder, x5 decoder), the encoder's base branch, and the
    low-frequency fusion layer.
    """

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.net1 = C2f(dim, n=6, groups=dim // 2)
        self.net2 = C2f(dim, n=6, groups=dim // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.net2(self.net1(x))


# --------------------------------------------------------------------------------------------
# High-frequency path: CDDFuse-style invertible neural network
# --------------------------------------------------------------------------------------------


class DWBlock(nn.Module):
    """The INN's coupling function: 1x1 -> dw3x3 -> 1x1 -> dw3x3 with ReLU6, reflect padding, no residual.

    Kept as one ``nn.Sequential`` named ``bottleneckBlock`` with the original's layer order, so
    the convolutions sit at indices 0, 3, 5 and 8 exactly as in the checkpoint.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bottleneckBlock = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.ReLU6(),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, groups=channels, bias=False),
            nn.ReLU6(),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.ReLU6(),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, groups=channels, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.bottleneckBlock(x)


class DetailNode(nn.Module):
    """One affine coupling step: mix the halves, ``z2 += phi(z1)``, ``z1 = z1*exp(rho(z2)) + eta(z2)``.

    The 1x1 ``shffleconv`` (original spelling, it is a state-dict key) mixes the two halves
    before each step; both outputs then pass through SimAM.
    """

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        half = dim // 2
        self.theta_phi = DWBlock(half)
        self.theta_rho = DWBlock(half)
        self.theta_eta = DWBlock(half)
        self.shffleconv = nn.Conv2d(dim, dim, kernel_size=1, bias=True)

    def forward(self, z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
        z1, z2 = self.shffleconv(torch.cat((z1, z2), dim=1)).chunk(2, dim=1)
        z2 = z2 + self.theta_phi(z1)
        z1 = z1 * torch.exp(self.theta_rho(z2)) + self.theta_eta(z2)
        return simam(z1), simam(z2)


class HighFreqExtractor(nn.Module):
    """A stack of DetailNodes over the two channel halves: the "detail" block, 36,096 parameters.

    Used for the encoder's detail branch and the high-frequency fusion layer.
    """

    def __init__(self, num_layers: int = 3, dim: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(*(DetailNode(dim) for _ in range(num_layers)))

    def forward(self, x: Tensor) -> Tensor:
        z1, z2 = x.chunk(2, dim=1)
        for node in self.net:
            z1, z2 = node(z1, z2)
        return torch.cat((z1, z2), dim=1)


# --------------------------------------------------------------------------------------------
# Decoder head: Restormer transformer block
# --------------------------------------------------------------------------------------------


class _BiasOnlyLayerNorm(nn.Module):
    """LayerNorm over channels with a learned bias but no scale.

    DCEvo comments out Restormer's ``weight`` and keeps only ``bias``; matching that keeps the
    parameter count (and the checkpoint's keys) right.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mu = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(var + self.eps) + self.bias.view(1, -1, 1, 1)


class LayerNorm2d(nn.Module):
    """Per-pixel channel LayerNorm on [B,C,H,W]; the ``body`` level mirrors the ``norm1.body.bias`` key."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = _BiasOnlyLayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class ChannelAttention(nn.Module):
    """Restormer's multi-Dconv transposed attention: attention across channels, not pixels.

    The attention map is (C/heads)x(C/heads) per head, so its cost is linear in the pixel count
    and it works at any spatial size, which is why the network needs no padding.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, h * w) for t in (q, k, v))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class GatedDconvFeedForward(nn.Module):
    """Restormer's GDFN: 1x1 expand, depthwise 3x3, ``GELU(x1) * x2``, 1x1 project back."""

    def __init__(self, dim: int, expansion: float) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        wide = hidden * 2
        self.project_in = nn.Conv2d(dim, wide, kernel_size=1, bias=False)
        self.dwconv = nn.Conv2d(wide, wide, kernel_size=3, padding=1, groups=wide, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class TransformerBlock(nn.Module):
    """Pre-norm Restormer block whose two sub-layer outputs are gated by the Discriminative Enhancer."""

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        self.attn = ChannelAttention(dim, num_heads)
        self.norm2 = LayerNorm2d(dim)
        self.ffn = GatedDconvFeedForward(dim, ffn_expansion_factor)

    def forward(self, x: Tensor) -> Tensor:
        x = x + prominent_gate(self.attn(self.norm1(x)))
        return x + prominent_gate(self.ffn(self.norm2(x)))


# --------------------------------------------------------------------------------------------
# Encoder and decoder
# --------------------------------------------------------------------------------------------


class OverlapPatchEmbed(nn.Module):
    """Bias-free 3x3 convolution lifting the 1-channel image to ``dim`` features."""

    def __init__(self, in_channels: int = 1, dim: int = 64) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class DEEncoder(nn.Module):
    """The shared encoder (``DE_Encoder``): embed, 5 LowFreqExtractors, then base and detail branches.

    Returns ``(base, detail, trunk)``; ``trunk`` is what the task-guided CDE would refine and is
    returned for parity with the original, although pure fusion ignores it.
    """

    def __init__(self, dim: int = 64, num_blocks: int = 5, detail_layers: int = 3) -> None:
        super().__init__()
        self.patch_embed = OverlapPatchEmbed(1, dim)
        self.encoder_level1 = nn.Sequential(*(LowFreqExtractor(dim) for _ in range(num_blocks)))
        self.baseFeature = LowFreqExtractor(dim)
        self.detailFeature = HighFreqExtractor(detail_layers, dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        trunk = self.encoder_level1(self.patch_embed(x))
        return self.baseFeature(trunk), self.detailFeature(trunk), trunk


class DEDecoder(nn.Module):
    """The decoder (``DE_Decoder``): reduce concat(base, detail), 5 LowFreqExtractors, image head.

    The image head predicts a correction that is added to a residual image before the sigmoid.
    Unlike the original, which inferred the residual from ``len(inp_img)`` (and so, for a
    batched tensor, averaged batch samples 0 and 1 for *every* sample), the residual here is an
    explicit per-sample [B,1,H,W] tensor.
    """

    def __init__(
        self, dim: int = 64, num_blocks: int = 5, num_heads: int = 8, ffn_expansion_factor: float = 2.0
    ) -> None:
        super().__init__()
        self.reduce_channel = nn.Conv2d(dim * 2, dim, kernel_size=1, bias=False)
        self.encoder_level2 = nn.Sequential(*(LowFreqExtractor(dim) for _ in range(num_blocks)))
        # One Sequential with the original's layer order, so the head's keys are output.{0,2,5}.
        self.output = nn.Sequential(
            TransformerBlock(dim, num_heads, ffn_expansion_factor),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim // 2, kernel_size=3, bias=False),
            nn.LeakyReLU(),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim // 2, 1, kernel_size=3, bias=False),
        )

    def forward(self, residual: Tensor | None, base: Tensor, detail: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(image in 0..1, decoder features)``; ``residual`` is [B,1,H,W] or None."""
        features = self.encoder_level2(self.reduce_channel(torch.cat((base, detail), dim=1)))
        out = self.output(features)
        if residual is not None:
            out = out + residual
        return torch.sigmoid(out), features


# --------------------------------------------------------------------------------------------
# The fusion network
# --------------------------------------------------------------------------------------------


class DCEvo(FusionNet):
    """DCEvo pure fusion: encode IR and VIS, fuse base and detail features by addition, decode.

    ``fused = sigmoid(head(decoder(LFE(I_B + V_B), HFE(I_D + V_D))) + (VIS + IR) / 2)``

    The residual is the per-sample mean of the two inputs. That is what the original's correct
    paths compute: its test script passes ``VIS*0.5 + IR*0.5`` as a batch of one, and phase II
    training passes ``[VIS, IR]`` so the decoder averages them. Batched inference in the original
    broadcast the batch-0/1 average to all samples; here every sample gets its own.

    The defaults are the published configuration (2,004,904 parameters). The Cross-Dimensional
    Embedding of task-guided DCEvo is left out: it needs YOLO neck features and is not part of
    the pure-fusion checkpoint.
    """

    architecture: ClassVar[str] = "dcevo"
    pad_multiple: ClassVar[int] = 1
    #: Reflection padding of 1 needs at least 2 pixels per side.
    min_size: ClassVar[int] = 2

    def __init__(
        self,
        dim: int = 64,
        num_blocks: int = 5,
        num_heads: int = 8,
        ffn_expansion_factor: float = 2.0,
        detail_layers: int = 3,
    ) -> None:
        super().__init__()
        if dim % 2 or dim % num_heads:
            raise ValueError(f"dim={dim} must be even and divisible by num_heads={num_heads}")
        self.encoder = DEEncoder(dim, num_blocks, detail_layers)
        self.decoder = DEDecoder(dim, num_blocks, num_heads, ffn_expansion_factor)
        self.low_freq_fusion = LowFreqExtractor(dim)
        self.high_freq_fusion = HighFreqExtractor(detail_layers, dim)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Base (low-frequency) and detail (high-frequency) features of a [B,1,H,W] image."""
        base, detail, _ = self.encoder(x)
        return base, detail

    def fuse_features(
        self, ir_base: Tensor, ir_detail: Tensor, vis_base: Tensor, vis_detail: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The fusion layers: add the two modalities' features, then refine each kind."""
        return self.low_freq_fusion(ir_base + vis_base), self.high_freq_fusion(ir_detail + vis_detail)

    def decode(self, base: Tensor, detail: Tensor, residual: Tensor | None) -> Tensor:
        """Image in 0..1 from base and detail features plus a per-sample [B,1,H,W] residual."""
        return self.decoder(residual, base, detail)[0]

    def forward(self, ir: Tensor, vis: Tensor) -> Tensor:
        _check_inputs(ir, vis, self.min_size)
        b = ir.shape[0]
        # One encoder pass over both modalities: the encoder is shared and batch-independent.
        base, detail = self.encode(torch.cat((vis, ir), dim=0))
        fused_base, fused_detail = self.fuse_features(base[b:], detail[b:], base[:b], detail[:b])
        return self.decode(fused_base, fused_detail, vis * 0.5 + ir * 0.5)

    @classmethod
    def from_original_checkpoint(cls, checkpoint: str | PathLike[str] | Mapping[str, object]) -> DCEvo:
        """Build the published-configuration DCEvo from an original ``DCEvo_fusion.pth``.

        ``checkpoint`` is a path (loaded on CPU with ``weights_only=True``) or the already
        loaded dict. Loading is strict: missing or unexpected keys (or wrong shapes) raise
        :class:`~evafusion_core.errors.ModelLoadError` naming some of them.
        """
        if not isinstance(checkpoint, Mapping):
            checkpoint = _load_checkpoint_file(checkpoint)
        state = convert_original_state_dict(checkpoint)
        model = cls()
        _check_keys(model.state_dict().keys(), state.keys())
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:  # keys match, so this is a shape mismatch
            raise ModelLoadError(f"DCEvo checkpoint does not match the network: {exc}") from exc
        return model.eval()


def convert_original_state_dict(ckpt: Mapping[str, object]) -> dict[str, Tensor]:
    """Map the original checkpoint's four state dicts onto :class:`DCEvo`'s state dict.

    ``DE_Encoder`` -> ``encoder.*``, ``DE_Decoder`` -> ``decoder.*``, ``LowFreqExtractor`` ->
    ``low_freq_fusion.*``, ``HighFreqExtractor`` -> ``high_freq_fusion.*``, each with the
    DataParallel ``module.`` prefix stripped (keys without it are accepted too). Other
    top-level entries are ignored. Pure: the input is not modified.
    """
    missing = [name for name in ORIGINAL_CHECKPOINT_KEYS if name not in ckpt]
    if missing:
        raise ModelLoadError(
            f"not an original DCEvo checkpoint: missing state dict(s) {missing}; "
            f"found top-level keys {sorted(map(str, ckpt))[:8]}"
        )
    out: dict[str, Tensor] = {}
    for original, ours in ORIGINAL_CHECKPOINT_KEYS.items():
        sub = ckpt[original]
        if not isinstance(sub, Mapping):
            raise ModelLoadError(f"checkpoint[{original!r}] should be a state dict, got {type(sub).__name__}")
        for key, value in sub.items():
            key = key.removeprefix(_DATAPARALLEL_PREFIX)
            out[f"{ours}.{key}"] = value
    return out


def _load_checkpoint_file(path: str | PathLike[str]) -> Mapping[str, object]:
    """``torch.load`` on CPU with ``weights_only=True``; any failure becomes a ModelLoadError."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise ModelLoadError(f"cannot read DCEvo checkpoint {str(path)!r}: {exc}") from exc
    if not isinstance(loaded, Mapping):
        raise ModelLoadError(f"DCEvo checkpoint {str(path)!r} holds a {type(loaded).__name__}, not a dict")
    return loaded


def _describe_key(key: str) -> str:
    """``decoder.output.2.weight`` -> ``decoder.output.2.weight (DE_Decoder: output.2.weight)``."""
    ours, _, rest = key.partition(".")
    for original, attribute in ORIGINAL_CHECKPOINT_KEYS.items():
        if attribute == ours:
            return f"{key} ({original}: {rest})"
    return key


def _check_keys(expected: Iterable[str], found: Iterable[str], shown: int = 5) -> None:
    """Raise :class:`ModelLoadError` listing (some of) the missing and unexpected keys, if any."""
    expected_set, found_set = set(expected), set(found)
    missing = [_describe_key(k) for k in sorted(expected_set - found_set)]
    unexpected = [_describe_key(k) for k in sorted(found_set - expected_set)]
    if not missing and not unexpected:
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s), e.g. {', '.join(missing[:shown])}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), e.g. {', '.join(unexpected[:shown])}")
    raise ModelLoadError("DCEvo checkpoint does not match the network: " + "; ".join(parts))


def _check_inputs(ir: Tensor, vis: Tensor, min_size: int) -> None:
    """Fail early with a readable message instead of deep inside a convolution."""
    if ir.ndim != 4 or ir.shape[1] != 1 or ir.shape != vis.shape:
        raise PairError(
            f"DCEvo expects ir and vis as matching [B,1,H,W] tensors, got {tuple(ir.shape)} "
            f"and {tuple(vis.shape)}"
        )
    if min(ir.shape[-2:]) < min_size:
        raise PairError(f"DCEvo needs images of at least {min_size}x{min_size}, got {tuple(ir.shape[-2:])}")
