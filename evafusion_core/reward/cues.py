"""Hand-made measurements of a fused image against its sources, which the reward model reads.

Two kinds. :func:`comparison_cues` are per-pixel maps, the input of the network's early-fusion
branch. The cue groups (:data:`CUE_GROUPS`) are per-image numbers that the score heads can read
after the network's pooled features (``RewardModel(cue_inputs=...)``): statistics over regions
chosen per image (the hottest tenth of the IR, the tiles where the fused image is blurrier or
busier than either source), which a network reading a 20x20 token grid only approximates.
``retention`` measures what the fused image keeps of each source, as the synthetic labels define
it; ``quality`` measures blur, excess detail (noise, stripes, ringing), flat blocks, clipping and
colour shifts per tile, against the sources; ``blur`` finds blurred regions by how much fine detail
falls against coarse, pixel by pixel; ``ghosting`` finds shifted copies of the fused or IR image.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..colour import luma, rgb_to_ycbcr


def promote_rgb(x: torch.Tensor, what: str = "image") -> torch.Tensor:
    """[B,C,H,W] with C 1, 3 or 4 -> [B,3,H,W] (grey repeated, alpha dropped)."""
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise ValueError(f"{what}: expected [B,C,H,W], got shape {tuple(x.shape)}")
    c = x.shape[1]
    if c == 1:
        return x.expand(-1, 3, -1, -1)
    if c == 4:
        return x[:, :3]
    if c != 3:
        raise ValueError(f"{what}: {c} channels; expected 1 (grey), 3 (RGB) or 4 (RGBA)")
    return x


#: Channels of :func:`comparison_cues` (the early-fusion branch's input).
COMPARISON_CHANNELS = 15


def comparison_cues(f: torch.Tensor, i: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The early-fusion input, [B,15,H,W] from fused/IR/visible [B,3,H,W] in 0..1.

    The images themselves and their luma differences, plus hand-made cues that make artifacts
    stand out from fusion-method differences: the part of the fused luma that no simple fusion
    rule explains (its distance to the nearest of IR, visible, their mean and their maximum),
    the fused high-pass, the fused detail in excess of both sources' (positive for noise,
    stripes, ringing; negative for blur and texture loss), also averaged over a 7-pixel window,
    and how much of each source the fused luma retains where the sources disagree (the IR
    share falls to 0 where thermal targets were lost, the visible share where texture was).
    """
    fy, iy, vy = luma(f), luma(i), luma(v)
    rules = torch.stack([iy, vy, 0.5 * (iy + vy), torch.maximum(iy, vy)])
    unexplained = (fy.unsqueeze(0) - rules).abs().amin(0)

    def high(x: torch.Tensor) -> torch.Tensor:
        return x - F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)

    hf = high(fy)
    excess = hf.abs() - torch.maximum(high(iy).abs(), high(vy).abs())
    energy = F.avg_pool2d(excess, 7, stride=1, padding=3, count_include_pad=False)
    gap = iy - vy
    weight = gap.square() / (gap.square() + 0.01)  # ~1 where the sources differ by more than 0.1
    ir_share = ((fy - vy) * gap / (gap.square() + 1e-3)).clamp(-1, 2) * weight
    vis_share = ((fy - iy) * -gap / (gap.square() + 1e-3)).clamp(-1, 2) * weight
    return torch.cat([f - 0.5, v - 0.5, iy - 0.5, fy - iy, fy - vy,
                      4 * unexplained, 4 * hf, 4 * excess, 8 * energy, ir_share, vis_share], dim=1)


#: What :func:`retention_cues` measures, in order.
RETENTION_CUES: tuple[str, ...] = (
    "hot share", "hot share (gap-weighted)", "hot pixels mostly lost", "hot visibility", "hot area weight",
    "thermal deficit", "detail share", "detail visibility", "texture deficit", "global contrast kept",
    "local contrast kept",
    *(f"hot share q{q} (top {t}%)" for t in (10, 2) for q in (10, 25, 50)), "hottest 2% mostly lost",
    "share in the warm region", "distance to IR in the warm region", "distance to visible in the warm region",
)


def _masked_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Per-image mean of ``x`` [B,1,H,W] where ``m`` [B,1,H,W] (weights) is set -> [B]."""
    return (x * m).sum((1, 2, 3)) / m.sum((1, 2, 3)).clamp(min=1e-6)


def _box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over a (2r+1)-pixel square window of [B,C,H,W], windows cut at the border (as ``avg_pool2d``
    with ``count_include_pad=False``). Running sums, one axis at a time, cost the same for any ``r``:
    the cues use windows up to ~45 px on a 640x480 image, where pooling took over 100 ms."""
    out = x.double()
    for dim in (2, 3):
        n = out.shape[dim]
        sums = F.pad(out.cumsum(dim), (0, 0, 1, 0) if dim == 2 else (1, 0))
        pos = torch.arange(n, device=x.device)
        hi, lo = (pos + r + 1).clamp(max=n), (pos - r).clamp(min=0)
        count = (hi - lo).double().view(-1, 1) if dim == 2 else (hi - lo).double()
        out = (sums.index_select(dim, hi) - sums.index_select(dim, lo)) / count
    return out.to(x.dtype)


def _image_quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """Per-image ``q`` quantile of [B,1,H,W] -> [B,1,1,1], on at most ~50k strided pixels (exact enough for
    a threshold, and what the labels' own thresholds use)."""
    flat = x.flatten(1)
    if flat.shape[1] > 50_000:
        flat = flat[:, :: math.ceil(flat.shape[1] / 50_000)]
    return torch.quantile(flat, q, dim=1).view(-1, 1, 1, 1)


def retention_cues(f: torch.Tensor, i: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """How much of each source the fused image keeps, as [B, len(RETENTION_CUES)] numbers.

    Thermal Retention asks whether the fused image keeps the IR's hot targets where the visible
    image does not show them; Texture Preservation whether it keeps the visible-only detail. Both
    are whole-image statistics over regions chosen by a per-image quantile (the hottest 10% of the
    IR), which a network reading a 20x20 token grid only approximates. So they are measured here, on
    the images as given (before any resize), the way :func:`~evafusion_core.data.synthetic.retention_deficits`
    defines them: the share of the IR-visible gap the fused luma keeps over the hot pixels (mean,
    gap-weighted, quantiles, the fraction mostly lost, over the hottest 10% and 2%), the share of the
    visible-only high-pass it keeps, how visible either loss would be, the contrast kept overall and
    locally, and the fused image's distance to each source over the smoothed warm region. A loss
    the network underrated (it was lenient on thermal loss by about half a point) then shows directly.
    Images without hot targets or visible-only detail count as keeping everything.
    """
    from ..data.synthetic import DETAIL_REFERENCE

    fy, iy, vy = (luma(promote_rgb(x).float()) for x in (f, i, v))
    iy, vy = iy.expand_as(fy), vy.expand_as(fy)  # sources given once for the batch (measure_cue_groups)
    h, w = fy.shape[-2:]
    gap = iy - vy
    share_px = ((fy - vy) / gap.clamp(min=0.1)).clamp(0, 1)  # only read where gap > 0.1
    one = torch.ones(fy.shape[0], device=fy.device)

    hot = ((iy >= _image_quantile(iy, 0.9)) & (gap > 0.1)).float()
    area = hot.mean((1, 2, 3))
    has = area >= 0.0005
    share = torch.where(has, _masked_mean(share_px, hot), one)
    gap_weighted = (hot * (fy - vy) * gap).sum((1, 2, 3)) / (hot * gap.square()).sum((1, 2, 3)).clamp(min=1e-6)
    gap_weighted = torch.where(has, gap_weighted.clamp(-1, 2), one)
    lost = torch.where(has, _masked_mean((share_px < 0.5).float(), hot), 0 * one)
    hot_visibility = (_masked_mean(gap, hot) / 0.15).clamp(0, 1).sqrt() * has
    area_weight = 0.5 + 0.5 * (area / 0.3).clamp(max=1).sqrt()
    thermal = (1 - share) * hot_visibility * area_weight

    k = max(1, round(2 * min(h, w) / 256))  # the labels' detail window, 2k+1 = ~5 px at 256 px

    def detail(x: torch.Tensor) -> torch.Tensor:
        return (x - _box_mean(x, k)).abs()

    dv, di, df = detail(vy), detail(iy), detail(fy)
    only_vis = ((dv >= _image_quantile(dv, 0.8)) & (di < 0.5 * dv)).float()
    only_area = only_vis.mean((1, 2, 3))
    has_detail = only_area >= 0.005
    amplitude = _masked_mean(dv, only_vis)
    detail_share = torch.where(has_detail, (_masked_mean(df, only_vis) / amplitude.clamp(min=1e-6)).clamp(max=1.5), one)
    detail_visibility = (amplitude / DETAIL_REFERENCE).clamp(0, 1).sqrt() * has_detail
    texture = (1 - detail_share.clamp(max=1)) * detail_visibility * (0.5 + 0.5 * (only_area / 0.3).clamp(max=1).sqrt())

    def spread(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).std(1)

    r = max(1, round(12 * min(h, w) / 256))

    def local(x: torch.Tensor) -> torch.Tensor:
        return (x - _box_mean(x, r)).abs().mean((1, 2, 3))

    contrast = (spread(fy) / torch.maximum(spread(iy), spread(vy)).clamp(min=1e-3)).clamp(max=2)
    local_contrast = (local(fy) / torch.maximum(local(iy), local(vy)).clamp(min=1e-3)).clamp(max=2)

    quantiles = []
    for top in (0.9, 0.98):
        region = (iy >= _image_quantile(iy, top)) & (gap > 0.1)
        any_ = region.flatten(1).any(1)
        masked = torch.where(region, share_px, torch.full_like(share_px, float("nan"))).flatten(1)
        masked[~any_] = 1.0  # nanquantile of an all-NaN row is NaN; such images keep everything
        quantiles += [torch.nanquantile(masked, q, dim=1) for q in (0.1, 0.25, 0.5)]
    top2 = ((iy >= _image_quantile(iy, 0.98)) & (gap > 0.1)).float()
    lost_top2 = torch.where(top2.sum((1, 2, 3)) > 0, _masked_mean((share_px < 0.5).float(), top2), 0 * one)

    smooth = _box_mean(iy, 4)
    warm = (smooth >= _image_quantile(smooth, 0.9)).float()
    differs = (gap > 0.1).float()
    warm_share = _masked_mean(share_px * differs, warm) / _masked_mean(differs, warm).clamp(min=1e-3)
    return torch.stack([share, gap_weighted, lost, hot_visibility, area_weight, thermal, detail_share,
                        detail_visibility, texture, contrast, local_contrast, *quantiles, lost_top2, warm_share,
                        _masked_mean((fy - iy).abs(), warm), _masked_mean((fy - vy).abs(), warm)], dim=1)


#: Tiles per side over which :func:`quality_cues` compares the fused image with its sources.
QUALITY_GRID = 8
_MAPS = ("fine detail kept", "fine detail in excess", "detail kept", "detail in excess", "gradient kept",
         "flat pixels in excess", "clipped pixels in excess", "colour shift")
#: What :func:`quality_cues` measures, in order: per map, the mean over tiles and the worst tile and worst three.
QUALITY_CUES: tuple[str, ...] = (
    *(f"{m}: {s}" for m in _MAPS for s in ("mean", "worst tile", "worst 3 tiles")), "line pattern in excess",
)


def _tiles(x: torch.Tensor) -> torch.Tensor:
    """[B,C,H,W] -> [B,C,G*G] tile means."""
    return F.adaptive_avg_pool2d(x, QUALITY_GRID).flatten(2)


def _worst(t: torch.Tensor, low: bool) -> list[torch.Tensor]:
    """Mean, worst tile and mean of the worst three of [B,1,N] tile values (worst = lowest if ``low``)."""
    s = t.squeeze(1).sort(1, descending=not low).values
    return [s.mean(1), s[:, 0], s[:, :3].mean(1)]


def quality_cues(f: torch.Tensor, i: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Blur, excess detail, flat blocks, clipping and colour shift of the fused image, tile by tile,
    against its sources, as [B, len(QUALITY_CUES)] numbers.

    A fusion has no pristine reference, but each tile of it should be about as sharp as the sharper
    source and no busier: the fused fine detail (3-pixel and ~5-pixel high-pass) and gradient over
    the sources' larger one falls where the fused image is blurred; detail beyond both sources'
    rises with noise, stripes and ringing; pixels with no gradient beyond the more textured source's
    share rise with blocking; clipped pixels with over-saturation; the chroma distance to the visible image
    with a colour cast (zero for a grey fusion). Artifacts cover part of the frame, so each map is
    summarised by its worst tiles as well as its mean. The Artifacts and Sharpness heads were lenient
    on blocking and blur by 0.3-0.5 points without them.
    """
    f3, i3, v3 = promote_rgb(f).float(), promote_rgb(i).float(), promote_rgb(v).float()
    fy, iy, vy = luma(f3), luma(i3), luma(v3)
    h, w = fy.shape[-2:]
    out: list[torch.Tensor] = []
    for r in (1, max(1, round(2 * min(h, w) / 256))):
        df, di, dv = ((x - _box_mean(x, r)).abs() for x in (fy, iy, vy))
        sharper = torch.maximum(di, dv)
        out += _worst((_tiles(df) / _tiles(sharper).clamp(min=2e-3)).clamp(max=3), low=True)
        out += _worst(_tiles((df - sharper).clamp(min=0)), low=False)

    def steps(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x[..., :-1, 1:] - x[..., :-1, :-1]).abs(), (x[..., 1:, :-1] - x[..., :-1, :-1]).abs()

    (fx, fv), (ix, iv), (vx, vv) = steps(fy), steps(iy), steps(vy)
    grad = _tiles(fx + fv) / _tiles(torch.maximum(ix + iv, vx + vv)).clamp(min=2e-3)
    out += _worst(grad.clamp(max=3), low=True)

    def fraction(x: torch.Tensor) -> torch.Tensor:  # of each tile where ``x`` holds
        return _tiles(x.float())

    # flat beyond the more textured source: a fusion should keep the texture either source has
    flat = fraction((fx < 1e-3) | (fv < 1e-3)) - torch.minimum(fraction((ix < 1e-3) | (iv < 1e-3)),
                                                              fraction((vx < 1e-3) | (vv < 1e-3)))
    out += _worst(flat, low=False)
    clipped = fraction((fy > 0.97) | (fy < 0.03)) - torch.maximum(fraction((iy > 0.97) | (iy < 0.03)),
                                                                 fraction((vy > 0.97) | (vy < 0.03)))
    out += _worst(clipped, low=False)
    chroma_f, chroma_v = rgb_to_ycbcr(f3)[:, 1:], rgb_to_ycbcr(v3)[:, 1:]
    colourful = (chroma_f.abs().flatten(1).amax(1) > 0.01).float()
    shift = _tiles(chroma_f - chroma_v).square().sum(1, keepdim=True).sqrt()
    out += [x * colourful for x in _worst(shift, low=False)]

    def lines(x: torch.Tensor) -> torch.Tensor:  # high-pass that lines up along rows or columns
        hp = x - _box_mean(x, 1)
        return torch.maximum(hp.mean(2).abs().mean((1, 2)), hp.mean(3).abs().mean((1, 2)))

    out.append(lines(fy) - torch.maximum(lines(iy), lines(vy)))
    return torch.stack(out, dim=1)


def _quantiles_where(x: torch.Tensor, where: torch.Tensor, qs: tuple[float, ...]) -> list[torch.Tensor]:
    """Per-image quantiles of ``x`` [B,1,H,W] over the pixels where ``where`` holds (1.0 for an image with
    none), each [B], on at most ~12k strided pixels: a sort with the other pixels pushed to the end."""
    flat, keep = torch.broadcast_tensors(x.flatten(1), where.flatten(1))  # ``where`` may come from batch-1 sources
    step = max(1, flat.shape[1] // 12_000)
    flat, keep = flat[:, ::step], keep[:, ::step]
    ordered = torch.where(keep, flat, torch.full_like(flat, float("inf"))).sort(1).values
    n = keep.sum(1)
    out = []
    for q in qs:
        at = (q * (n - 1).clamp(min=0)).round().long().view(-1, 1)
        out.append(torch.where(n > 0, ordered.gather(1, at).squeeze(1), torch.ones_like(n, dtype=x.dtype)))
    return out


_BLUR_BANDS = ("fine", "mid")
_BLUR_STATS = ("crispness lost", "crispness under 0.5", "crispness under 0.7", "crispness q5", "crispness q10",
               "crispness q25", "worst patch crispness lost")
#: What :func:`blur_cues` measures, in order.
BLUR_CUES: tuple[str, ...] = tuple(
    name for band in _BLUR_BANDS for name in (
        *(f"{band}: {stat} (vs {ref} source)" for ref in ("softer", "crisper") for stat in _BLUR_STATS),
        *(f"{band}: detail vs the finer source q{q}" for q in (5, 25, 50))))


def _band_energies(x: torch.Tensor, r_fine: int, r_coarse: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Local mean absolute energy of ``x`` above the ``r_fine`` box mean, and between it and the ``r_coarse`` one."""
    a, b = _box_mean(x, r_fine), _box_mean(x, r_coarse)
    return _box_mean((x - a).abs(), window), _box_mean((a - b).abs(), window)


def blur_cues(f: torch.Tensor, i: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Where and how much the fused image is blurred, as [B, len(BLUR_CUES)] numbers.

    Fusion methods keep different amounts of each source's detail (an average halves it), so a ratio of
    fused detail to source detail mixes blur with method. A blur takes more from fine detail than from
    coarse, so the ratio of fine to coarser band-pass energy (crispness) falls where the fused image
    was blurred whatever the method's weights. Pixel by pixel, the fused crispness is compared with the
    softer and the crisper source's, over textured pixels; the blurred region shows as the low tail
    (quantiles, share under 0.5 and 0.7) and as the worst ~40-pixel patch. Two band pairs see mild and
    strong blur: 3-pixel detail against 7-pixel, and against 9-pixel (at 256 px; windows other than
    the first grow with the image). Without these cues the Sharpness head was lenient on blur by half
    a point (Z24q, twenty-fourth session).
    """
    fy, iy, vy = (luma(promote_rgb(x).float()) for x in (f, i, v))
    h, w = fy.shape[-2:]
    k = max(1, round(min(h, w) / 256))
    window, patch = max(2, round(4 * min(h, w) / 256)), max(4, round(20 * min(h, w) / 256))
    out: list[torch.Tensor] = []
    for radii in ((1, 3 * k), (k, 4 * k)):
        (f_fine, f_coarse), (i_fine, i_coarse), (v_fine, v_coarse) = (_band_energies(x, *radii, window)
                                                                      for x in (fy, iy, vy))
        crisp_f = f_fine / f_coarse.clamp(min=2e-3)
        crisp_i, crisp_v = i_fine / i_coarse.clamp(min=2e-3), v_fine / v_coarse.clamp(min=2e-3)
        textured = torch.maximum(i_coarse, v_coarse) > 0.01
        weight = textured.float()
        n = weight.sum((1, 2, 3)).clamp(min=1)
        for ref in (torch.minimum(crisp_i, crisp_v), torch.maximum(crisp_i, crisp_v)):
            ratio = (crisp_f / ref.clamp(min=1e-3)).clamp(0, 2)
            lost = (1 - ratio).clamp(min=0) * weight
            out.append(lost.sum((1, 2, 3)) / n)
            out += [((ratio < t).float() * weight).sum((1, 2, 3)) / n for t in (0.5, 0.7)]
            out += _quantiles_where(ratio, textured, (0.05, 0.1, 0.25))
            out.append((_box_mean(lost, patch) / _box_mean(weight, patch).clamp(min=0.05)).flatten(1).amax(1))
        finer = (f_fine / torch.maximum(i_fine, v_fine).clamp(min=2e-3)).clamp(0, 3)
        out += _quantiles_where(finer, textured, (0.05, 0.25, 0.5))
    return torch.stack(out, dim=1)


#: Tiles per side over which :func:`ghosting_cues` looks for a shifted copy.
GHOST_GRID = 8
_GHOST_MAPS = ("self-similarity", "self-similarity beyond the sources'", "similarity to the shifted IR",
               "similarity to the shifted IR beyond expected")
#: What :func:`ghosting_cues` measures, in order: per map, the mean over tiles, the worst tile, and the mean of
#: the worst three and worst eight.
GHOSTING_CUES: tuple[str, ...] = tuple(f"{m}: {s}" for m in _GHOST_MAPS
                                       for s in ("mean", "worst tile", "worst 3 tiles", "worst 8 tiles"))


def _ghost_offsets(h: int, w: int) -> list[tuple[int, int]]:
    """Every whole-pixel offset 4-10 px long at 256 px (scaled with the image), the span of a ghost's shift."""
    scale = min(h, w) / 256
    lo, hi = 4 * scale - 0.5, 10 * scale + 0.5
    r = int(hi) + 1
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if lo <= math.hypot(dy, dx) <= hi]


def _as_tiles(x: torch.Tensor) -> torch.Tensor:
    """[B,1,H,W] -> [B, G*G, h, w] (the :data:`GHOST_GRID` tiles; a remainder at the edges is dropped)."""
    b, _, h, w = x.shape
    th, tw = h // GHOST_GRID, w // GHOST_GRID
    x = x[..., : th * GHOST_GRID, : tw * GHOST_GRID].reshape(b, GHOST_GRID, th, GHOST_GRID, tw)
    return x.permute(0, 1, 3, 2, 4).reshape(b, GHOST_GRID * GHOST_GRID, th, tw)


def ghosting_cues(f: torch.Tensor, i: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Double edges: how strongly each tile of the fused image resembles itself (or the IR) shifted by a
    ghost's 4-10 pixels, as [B, len(GHOSTING_CUES)] numbers.

    A ghost adds a faint copy of the fused or IR image a few pixels away, so the fused high-pass
    correlates with itself, or with the IR's, at that offset. Natural images correlate at short offsets
    too, so each is also given beyond what the sources show at the same offset (their own
    self-similarity; for the IR copy, the IR's self-similarity times the fused image's agreement with
    the IR). Correlations come per tile from FFTs, all offsets at once, and each tile keeps its best
    offset. Ghosting is a blob of the frame, so tiles are summarised by their worst as well as their mean.
    """
    fy, iy, vy = (luma(promote_rgb(x).float()) for x in (f, i, v))
    h, w = fy.shape[-2:]
    k = max(1, round(min(h, w) / 256))
    offsets = _ghost_offsets(h, w)
    reach = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    tf, ti, tv = (_as_tiles(x - _box_mean(x, k)) for x in (fy, iy, vy))
    size = (tf.shape[-2] + reach + 1, tf.shape[-1] + reach + 1)  # zero-padded: no wrap-around at these offsets
    spec_f, spec_i, spec_v = (torch.fft.rfft2(t, s=size) for t in (tf, ti, tv))
    e_f, e_i, e_v = ((t * t).sum((-2, -1)).clamp(min=1e-4).unsqueeze(-1) for t in (tf, ti, tv))
    dy = torch.tensor([o[0] for o in offsets], device=fy.device) % size[0]
    dx = torch.tensor([o[1] for o in offsets], device=fy.device) % size[1]

    def at_offsets(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # sum of a(x) b(x - d) per tile and offset
        return torch.fft.irfft2(a * b.conj(), s=size)[..., dy, dx]

    self_f = at_offsets(spec_f, spec_f) / e_f
    self_i = at_offsets(spec_i, spec_i) / e_i
    self_v = at_offsets(spec_v, spec_v) / e_v
    norm = (e_f * e_i).sqrt()
    to_ir = at_offsets(spec_f, spec_i) / norm
    agreement = ((tf * ti).sum((-2, -1)).unsqueeze(-1) / norm).clamp(min=0)
    out: list[torch.Tensor] = []
    for m in (self_f, self_f - torch.maximum(self_i, self_v), to_ir, to_ir - self_i * agreement):
        worst = m.amax(-1).sort(1, descending=True).values
        out += [worst.mean(1), worst[:, 0], worst[:, :3].mean(1), worst[:, :8].mean(1)]
    return torch.stack(out, dim=1)


#: The groups of per-image cues the score heads can read (``RewardModel(cue_inputs=...)``): names and function.
CUE_GROUPS: dict[str, tuple[tuple[str, ...], Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]]] = {
    "retention": (RETENTION_CUES, retention_cues),
    "quality": (QUALITY_CUES, quality_cues),
    "blur": (BLUR_CUES, blur_cues),
    "ghosting": (GHOSTING_CUES, ghosting_cues),
}


def measure_cue_groups(groups: tuple[str, ...] | list[str], f: torch.Tensor, i: torch.Tensor,
                       v: torch.Tensor) -> torch.Tensor:
    """The named cue groups of a triple, side by side in ``groups`` order: [B, sum of their lengths].

    When every fused image of the batch has the same sources (a GRPO group scores G fusions of one
    pair), the sources' half of the work is done once: the cue functions take sources of batch 1 and
    broadcast them, with the same numbers."""
    if f.shape[0] > 1 and _one_pair(i) and _one_pair(v):
        i, v = i[:1], v[:1]
    return torch.cat([CUE_GROUPS[g][1](f, i, v) for g in groups], dim=1)


def _one_pair(x: torch.Tensor) -> bool:
    """Whether every image of the batch ``x`` is the first one (an expanded view is, without a compare)."""
    return x.stride(0) == 0 or torch.equal(x, x[:1].expand_as(x))
