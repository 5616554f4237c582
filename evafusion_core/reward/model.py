"""The reward model: multi-dimensional quality scores and an artifact heatmap for a fused image.

RAHF-style ("Rich Human Feedback", CVPR 2024), as EVAFusion uses it: one timm backbone,
shared by the fused, infrared and visible images, encodes each image; the three feature
maps are aligned position by position (the pairs are registered), concatenated together
with their differences (fused - IR, fused - visible) and an early-fusion branch (a few
strided convolutions over the stacked images and hand-made comparison cues, see
:func:`comparison_cues`), projected to tokens and mixed by a small transformer with a
learned [CLS] token. A light U-Net-style decoder turns the mixed token map, refined with
the backbone's and the early-fusion branch's finer maps, into a 0..1 artifact heatmap.
Five sigmoid heads read the [CLS] token, the mean token and the heatmap's mean, max and
mean square, and predict Thermal Retention, Texture Preservation, Artifacts, Sharpness
and Overall on score/5. With ``dimension_maps`` the decoder also predicts where each of
Thermal, Texture, Artifacts and Sharpness loses points (four 0..1 maps, trained on the
synthetic labels), and each head reads their mean, max and mean square as well: the scores
then rest on *which* damage is where, not only on how much.

Any input size works: each image is resized to ``image_size`` (grey promoted to three
channels), and the heatmap is resized back to the fused image's size.

Three config values refine a trained model, as the bundled ``small`` uses them:
``test_time_flip`` makes :meth:`RewardModel.predict` average the triple and its mirror image;
``heatmap_blur`` smooths the heatmap it returns (scores unchanged); ``head_pooling`` "rich" lets
each head also read the token maximum and the heatmap-weighted means of the tokens and of the
decoder's features, i.e. what the image looks like where the damage is (see ``refit.py``);
``cue_inputs`` lets them also read measured per-image statistics (``cues.CUE_GROUPS``: what the fused image
keeps of each source, and tile-wise blur, noise, blocking, clipping and colour shift against them).

Two presets: ``small`` (a CPU-friendly LCNet trained from scratch here) and
``rahf-large`` (ViT-L/16 at 384, the original scale; ImageNet weights only on request).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ..hub import RecordsArchitecture
from .cues import COMPARISON_CHANNELS, CUE_GROUPS, comparison_cues, measure_cue_groups, promote_rgb

DIMENSIONS: tuple[str, ...] = ("Thermal Retention", "Texture Preservation", "Artifacts", "Sharpness", "Overall")

# ImageNet statistics: what timm backbones (and their pretrained weights) expect.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)

#: What the score heads read: "basic" ([CLS], mean token, heatmap statistics) or "rich" (also where the damage is).
HEAD_POOLING: tuple[str, ...] = ("basic", "rich")

PRESETS: dict[str, dict[str, Any]] = {
    "small": {
        "backbone": "lcnet_050",
        "image_size": 224,
        "feature_indices": [1, 2, 3],
        "embed_dim": 128,
        "depth": 2,
        "num_heads": 4,
        "decoder_dim": 48,
        "pixel_channels": [24, 32, 48, 64],
    },
    "rahf-large": {
        "backbone": "vit_large_patch16_384",
        "image_size": 384,
        "feature_indices": [-1],
        "backbone_kwargs": {"img_size": 384},
        "embed_dim": 768,
        "depth": 2,
        "num_heads": 12,
        "decoder_dim": 128,
        "pixel_channels": [32, 64, 96, 128],
    },
}


def _weighted_mean(x: torch.Tensor, w: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean of ``x`` over ``dim`` with non-negative weights ``w`` (broadcast to ``x``)."""
    return (x * w).sum(dim) / (w.sum(dim) + 1e-6)


class _ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        groups = 8 if cout % 8 == 0 else 1
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(groups, cout), nn.GELU())


class RewardModel(
    RecordsArchitecture,
    nn.Module,
    PyTorchModelHubMixin,
    library_name="evafusion",
    tags=["image-fusion", "infrared", "reward-model", "evafusion"],
    repo_url="https://github.com/evafusion/evafusion",
):
    """Scores and artifact heatmap for (fused, ir, vis); see the module docstring.

    ``forward`` returns raw training outputs (``scores`` in 0..1 = score/5, heatmap logits
    at the decoder's resolution); :meth:`predict` returns 1..5 scores and a full-size heatmap.
    """

    architecture: ClassVar[str] = "rahf_reward"
    trainable: ClassVar[bool] = True
    dimensions: ClassVar[tuple[str, ...]] = DIMENSIONS
    #: The child modules that make the heatmap (and dimension maps) from the mixed tokens and skip features.
    decoder_parts: ClassVar[tuple[str, ...]] = ("dec_in", "skips", "pixel_skips", "dec_blocks", "dec_out", "dim_out")

    def __init__(
        self,
        backbone: str = "lcnet_050",
        image_size: int = 224,
        feature_indices: list[int] | tuple[int, ...] = (1, 2, 3),
        embed_dim: int = 128,
        depth: int = 2,
        num_heads: int = 4,
        decoder_dim: int = 48,
        backbone_kwargs: dict[str, Any] | None = None,
        pretrained_backbone: bool = False,
        pixel_channels: list[int] | tuple[int, ...] | None = None,
        dimension_maps: bool = False,
        test_time_flip: bool = False,
        heatmap_blur: float = 0.0,
        head_pooling: str = "basic",
        cue_inputs: list[str] | tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        import timm

        self.image_size = int(image_size)
        # predict() also scores the mirrored triple and averages the two: a scene has no handedness,
        # so where the two passes disagree, both are the model's error, and the average is closer.
        self.test_time_flip = bool(test_time_flip)
        # predict() smooths the heatmap it returns with a Gaussian of this sigma (a fraction of the image
        # side): the decoder's map is sharper than its certainty about where damage ends, and a smoothed
        # map ranks the faint edges of a damaged region above undamaged pixels more often. The heads read
        # the unsmoothed map, so scores do not change. Chosen on training pairs (training/tune_heatmap_blur.py).
        if not 0.0 <= heatmap_blur < 0.5:
            raise ValueError(f"heatmap_blur must be in [0, 0.5) (a fraction of the image side), got {heatmap_blur}")
        self.heatmap_blur = float(heatmap_blur)
        self.backbone = timm.create_model(
            backbone, pretrained=pretrained_backbone, features_only=True, out_indices=tuple(feature_indices),
            **(backbone_kwargs or {}),
        )
        channels = list(self.backbone.feature_info.channels())
        self.reductions = [int(r) for r in self.backbone.feature_info.reduction()]
        top_c, top_r = channels[-1], self.reductions[-1]
        if self.image_size % top_r:
            raise ValueError(f"image_size {image_size} must be a multiple of the backbone's stride {top_r}")
        self.grid = self.image_size // top_r
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

        # Early fusion: a few strided convolutions over the stacked images and their luma differences
        # at input resolution, one stage per stride 2, 4, 8, 16 ... up to the token stride. Low-level
        # comparisons (noise, stripes, blocking, what the fused image lost from either source) are
        # learnt from these in far fewer steps than through the shared backbone alone.
        self.pixel = nn.ModuleList()
        pix_c = 0
        self.pixel_strides: list[int] = []
        if pixel_channels:
            cin, stride = COMPARISON_CHANNELS, 1
            for cout in pixel_channels:
                stride *= 2
                if stride > top_r:
                    break
                layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GELU()]
                if stride >= 4:  # a second convolution per stage, skipped at stride 2 where it costs most
                    layers.append(_ConvBlock(cout, cout))
                self.pixel.append(nn.Sequential(*layers))
                self.pixel_strides.append(stride)
                cin = cout
            if self.pixel_strides[-1] != top_r:
                raise ValueError(f"pixel_channels needs {int(math.log2(top_r))} stages to reach stride {top_r}")
            pix_c = cin
        pixel_by_stride = {s_: m[0].out_channels for s_, m in zip(self.pixel_strides, self.pixel)}

        # Token mixing across the three images: [f, i, v, f - i, f - v] (+ early fusion) per position.
        self.proj = nn.Sequential(nn.LayerNorm(5 * top_c + pix_c), nn.Linear(5 * top_c + pix_c, embed_dim))
        self.pos = nn.Parameter(torch.zeros(1, self.grid * self.grid, embed_dim))
        self.cls = nn.Parameter(torch.zeros(1, 1, embed_dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        layer = nn.TransformerEncoderLayer(
            embed_dim, num_heads, dim_feedforward=4 * embed_dim, dropout=0.0, activation="gelu", batch_first=True,
            norm_first=True,
        )
        self.mixer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embed_dim)
        # Each head reads the [CLS] token, the mean token and three statistics of the predicted heatmap
        # (mean, max, mean square): how much of the image is damaged, and how badly; with dimension maps,
        # the same three statistics of each map after them.
        # "rich" pooling appends the max over the tokens, the heatmap-weighted mean of the tokens, and the
        # mean and heatmap-weighted mean of the decoder's last features: what the damage looks like where
        # the decoder puts it, which a mean over the whole image dilutes (reward/refit.py widens trained heads).
        self.dimension_maps = bool(dimension_maps)
        if head_pooling not in HEAD_POOLING:
            raise ValueError(f"head_pooling must be one of {HEAD_POOLING}, got {head_pooling!r}")
        self.head_pooling = head_pooling
        n_stats = 3 * (1 + 4 * self.dimension_maps)
        n_in = 2 * embed_dim + n_stats + (2 * embed_dim + 2 * decoder_dim) * (head_pooling == "rich")
        # With cue_inputs the heads also read those cue groups (cues.CUE_GROUPS), in that order, standardised
        # by statistics of the samples the heads were fitted on (saved with the weights; reward/refit.py sets them).
        unknown = [g for g in cue_inputs if g not in CUE_GROUPS]
        if unknown or len(set(cue_inputs)) != len(cue_inputs):
            raise ValueError(f"cue_inputs {list(cue_inputs)}: each at most once, from {', '.join(CUE_GROUPS)}")
        self.cue_inputs = tuple(cue_inputs)
        if self.cue_inputs:
            k = sum(len(CUE_GROUPS[g][0]) for g in self.cue_inputs)
            n_in += k
            self.register_buffer("cue_mean", torch.zeros(k))
            self.register_buffer("cue_std", torch.ones(k))
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(n_in, embed_dim // 2), nn.GELU(), nn.Linear(embed_dim // 2, 1))
            for _ in DIMENSIONS
        )

        # Heatmap decoder: the mixed token map, upsampled x2 at a time, with skip features of
        # the fused image and its differences to both sources at each finer backbone level.
        self.dec_in = _ConvBlock(embed_dim, decoder_dim)
        self.skips = nn.ModuleDict()
        self.dec_blocks = nn.ModuleList()
        stride, by_stride = top_r, dict(zip(self.reductions, channels))
        self.pixel_skips = nn.ModuleDict()
        while stride > 4:
            stride //= 2
            if stride in by_stride:
                self.skips[str(stride)] = nn.Conv2d(3 * by_stride[stride], decoder_dim, 1)
            if stride in pixel_by_stride:
                self.pixel_skips[str(stride)] = nn.Conv2d(pixel_by_stride[stride], decoder_dim, 1)
            self.dec_blocks.append(_ConvBlock(decoder_dim, decoder_dim))
        self.heatmap_stride = stride
        self.dec_out = nn.Conv2d(decoder_dim, 1, 1)
        nn.init.constant_(self.dec_out.bias, -3.0)  # start near an empty heatmap
        if self.dimension_maps:
            self.dim_out = nn.Conv2d(decoder_dim, 4, 1)
            nn.init.constant_(self.dim_out.bias, -3.0)

    # -- hub config -------------------------------------------------------------------------
    def hub_config(self) -> dict[str, Any]:
        config = super().hub_config()
        config["dimensions"] = list(DIMENSIONS)
        # Saved weights already hold the backbone: never fetch ImageNet weights when loading them.
        config["pretrained_backbone"] = False
        return config

    # -- forward ----------------------------------------------------------------------------
    def resize(self, x: torch.Tensor, what: str) -> torch.Tensor:
        """Any [B,C,H,W] 0..1 -> [B,3,S,S] at ``image_size`` (grey promoted, alpha dropped)."""
        x = promote_rgb(x, what).float()
        s = self.image_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return x

    def prepare(self, x: torch.Tensor, what: str) -> torch.Tensor:
        """Any [B,C,H,W] 0..1 -> normalised [B,3,S,S] at ``image_size``, as the backbone expects."""
        return (self.resize(x, what) - self.mean) / self.std

    def _cue_size(self, x: torch.Tensor, what: str) -> torch.Tensor:
        """An image for the cue groups: as given up to ``image_size`` on its short side, larger ones
        shrunk to it (aspect kept). The heads learnt the cues on samples at most that size, and the cues'
        windows scale with the image, so a 1024x768 frame is measured as the samples were, in a quarter of
        the time."""
        x = promote_rgb(x, what).float()
        h, w = x.shape[-2:]
        if min(h, w) <= self.image_size:
            return x
        scale = self.image_size / min(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)

    def _pixel_features(self, f: torch.Tensor, i: torch.Tensor, v: torch.Tensor) -> dict[int, torch.Tensor]:
        x = comparison_cues(f, i, v)
        out = {}
        for stride, stage in zip(self.pixel_strides, self.pixel):
            x = stage(x)
            out[stride] = x
        return out

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        if h == w == self.grid:
            return self.pos
        d = self.pos.shape[-1]
        p = self.pos.reshape(1, self.grid, self.grid, d).permute(0, 3, 1, 2)
        p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
        return p.permute(0, 2, 3, 1).reshape(1, h * w, d)

    def measure_cues(self, fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """The triple's ``cue_inputs`` groups as the heads read them (before standardising), [B, K]."""
        images = (self._cue_size(x, n) for x, n in ((fused, "fused"), (ir, "ir"), (vis, "vis")))
        return measure_cue_groups(self.cue_inputs, *images)

    def forward(self, fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor,
                cues: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Training outputs (see the class docstring). ``cues``: the triple's :meth:`measure_cues`, when the
        caller has them already (a mirrored triple has the same; ``probabilities`` reuses them)."""
        b = promote_rgb(fused, "fused").shape[0]
        if promote_rgb(ir, "ir").shape[0] != b or promote_rgb(vis, "vis").shape[0] != b:
            raise ValueError("fused, ir and vis must have the same batch size")
        raw = [self.resize(fused, "fused"), self.resize(ir, "ir"), self.resize(vis, "vis")]
        feats = self.backbone((torch.cat(raw) - self.mean) / self.std)
        pix = self._pixel_features(*raw) if len(self.pixel) else {}
        top = feats[-1]
        f, i, v = top.split(b)
        h, w = top.shape[-2:]
        parts = [f, i, v, f - i, f - v]
        if pix:
            parts.append(pix[self.reductions[-1]])
        tokens = torch.cat(parts, dim=1).flatten(2).transpose(1, 2)
        tokens = self.proj(tokens) + self._pos_embed(h, w)
        tokens = self.mixer(torch.cat([self.cls.expand(b, -1, -1), tokens], dim=1))
        tokens = self.norm(tokens)
        cls, grid = tokens[:, 0], tokens[:, 1:]

        y = self.dec_in(grid.transpose(1, 2).reshape(b, -1, h, w))
        by_stride = dict(zip(self.reductions, feats))
        stride = self.reductions[-1]
        for block in self.dec_blocks:
            stride //= 2
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
            if str(stride) in self.skips:
                sf, si, sv = by_stride[stride].split(b)
                skip = self.skips[str(stride)](torch.cat([sf, sf - si, sf - sv], dim=1))
                y = y + F.interpolate(skip, size=y.shape[-2:], mode="bilinear", align_corners=False)
            if str(stride) in self.pixel_skips:
                skip = self.pixel_skips[str(stride)](pix[stride])
                y = y + F.interpolate(skip, size=y.shape[-2:], mode="bilinear", align_corners=False)
            y = block(y)
        logits = self.dec_out(y)
        out = {"heatmap_logits": logits}
        maps = torch.sigmoid(logits).flatten(2)  # [B,1,h*w], then [B,5,h*w] with the dimension maps
        if self.dimension_maps:
            out["dimension_logits"] = self.dim_out(y)
            maps = torch.cat([maps, torch.sigmoid(out["dimension_logits"]).flatten(2)], dim=1)
        stats = torch.stack([maps.mean(2), maps.amax(2), maps.square().mean(2)], dim=2).flatten(1)
        parts = [cls, grid.mean(1), stats]
        if self.head_pooling == "rich":
            heat = maps[:, :1].reshape(b, 1, *y.shape[-2:])  # [B,1,h,w] at the decoder's resolution
            w_grid = F.adaptive_avg_pool2d(heat, (h, w)).flatten(1)  # [B, tokens]
            w_dec = heat.flatten(1)
            feat = y.flatten(2)  # [B, decoder_dim, h*w]
            parts += [grid.amax(1), _weighted_mean(grid, w_grid.unsqueeze(2), dim=1), feat.mean(2),
                      _weighted_mean(feat, w_dec.unsqueeze(1), dim=2)]
        if self.cue_inputs:
            cues = self.measure_cues(fused, ir, vis) if cues is None else cues
            parts.append((cues.to(cls.dtype) - self.cue_mean) / self.cue_std)
        pooled = torch.cat(parts, dim=-1)
        out["pooled"] = pooled  # what the heads read (reward/refit.py fits them on it)
        out["scores"] = torch.cat([torch.sigmoid(head(pooled)) for head in self.heads], dim=-1)
        return out

    def probabilities(self, fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scores in 0..1 and heatmap (and dimension map) probabilities at the decoder's resolution;
        with ``test_time_flip``, averaged with the mirrored triple's (maps mirrored back). What
        ``predict`` starts from; tools that try several ways of finishing a heatmap call it once."""
        cues = self.measure_cues(fused, ir, vis) if self.cue_inputs else None
        out = self(fused, ir, vis, cues=cues)
        probs = {"scores": out["scores"].float(), "heatmap": torch.sigmoid(out["heatmap_logits"].float())}
        if "dimension_logits" in out:
            probs["dimension_maps"] = torch.sigmoid(out["dimension_logits"].float())
        if self.test_time_flip:
            mirrored = self(fused.flip(-1), ir.flip(-1), vis.flip(-1), cues=cues)  # handedness barely moves the cues
            probs["scores"] = (probs["scores"] + mirrored["scores"].float()) / 2
            probs["heatmap"] = (probs["heatmap"] + torch.sigmoid(mirrored["heatmap_logits"].float()).flip(-1)) / 2
            if "dimension_maps" in probs:
                flipped = torch.sigmoid(mirrored["dimension_logits"].float()).flip(-1)
                probs["dimension_maps"] = (probs["dimension_maps"] + flipped) / 2
        return probs

    def output_heatmap(self, heat: torch.Tensor, size: tuple[int, int] | torch.Size,
                       blur: float | None = None) -> torch.Tensor:
        """The decoder's heatmap probabilities [B,1,h,w] as predict() returns them: smoothed by
        ``blur`` (default: the model's ``heatmap_blur``) at the decoder's resolution, resized to
        ``size``, on the CPU. Only the small decoder map leaves the device for the blur (scipy); the
        resize to the image's size runs where the model runs."""
        blur = self.heatmap_blur if blur is None else blur
        heat = heat.float()
        if blur > 0:
            from ..data.synthetic import gaussian_blur

            heat = gaussian_blur(heat, blur * min(heat.shape[-2:])).to(heat.device)
        return F.interpolate(heat, size=tuple(size), mode="bilinear", align_corners=False).clamp(0, 1).cpu()

    @torch.no_grad()
    def predict(self, fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scores on the 1..5 scale (one [B] tensor per dimension, and ``scores`` [B,5]),
        ``heatmap`` [B,1,H,W] in 0..1 at the fused image's size, and with dimension maps
        ``dimension_maps`` [B,4,H,W] (Thermal, Texture, Artifacts, Sharpness)."""
        device = next(self.parameters()).device
        fused, ir, vis = (promote_rgb(t, n).to(device) for t, n in ((fused, "fused"), (ir, "ir"), (vis, "vis")))
        probs = self.probabilities(fused, ir, vis)
        scores = (probs["scores"] * 5.0).clamp(1.0, 5.0).cpu()
        size = fused.shape[-2:]
        heat = self.output_heatmap(probs["heatmap"], size)
        result = {name: scores[:, k] for k, name in enumerate(DIMENSIONS)}
        result["scores"] = scores
        result["heatmap"] = heat
        if "dimension_maps" in probs:
            maps = F.interpolate(probs["dimension_maps"], size=size, mode="bilinear", align_corners=False)
            result["dimension_maps"] = maps.clamp(0, 1).cpu()
        return result


def create_reward_model(preset: str = "small", *, pretrained_backbone: bool = False, **overrides: Any) -> RewardModel:
    """A fresh reward model from a preset (``small`` or ``rahf-large``) with optional argument overrides.

    ``pretrained_backbone=True`` asks timm for ImageNet weights (a download, or its cache);
    never needed to load saved reward weights.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown reward preset {preset!r}; known: {', '.join(PRESETS)}")
    args = {**PRESETS[preset], **overrides}
    return RewardModel(**args, pretrained_backbone=pretrained_backbone)


def scores_to_dict(scores: torch.Tensor) -> list[dict[str, float]]:
    """[B,5] scores -> one {dimension: value} dict per image."""
    return [{name: float(row[k]) for k, name in enumerate(DIMENSIONS)} for row in scores]


def overall_index() -> int:
    return DIMENSIONS.index("Overall")
