"""One look: the colours, colormaps, colour scales and opacities of the screen and of every
exported figure (numpy/OpenCV, no Qt).

The app's canvases and heat-map tiles, the playback panels, ``fssgui explain``'s overlays and the
report's figures all take their colours and scales from here, and the exporters compose a layer
over an image the way the canvas does (:func:`composite`), so an exported PNG looks like the
screen.

What is drawn how:

* **Region R**: a tint of :data:`REGION_COLOUR` at :data:`MASK_OPACITY` (:func:`tint`), the way the
  query canvas shows the brushed mask.
* **Prediction** and **ground truth**: outlines in :data:`PREDICTION_COLOUR` / :data:`TRUTH_COLOUR`
  (:func:`outline`), so they never hide the region or each other.
* **Support masks**: a tint of :data:`SUPPORT_MASK_COLOUR` at :data:`MASK_OPACITY`; over a heat map
  only the mask's outline, in :data:`MAP_MASK_OUTLINE_COLOUR`.
* **Attribution maps**: :func:`map_scale` gives one colour scale for all the supports of one
  explanation. Unsigned maps: :data:`UNSIGNED_COLORMAP` between the :data:`CLIP_PERCENT` and the
  100 - :data:`CLIP_PERCENT` percentiles (a few extreme pixels, frequent in gradient maps, would
  otherwise push every other pixel to the bottom of the scale). Signed maps: :data:`SIGNED_COLORMAP`,
  symmetric about their "no evidence" level (AffEx Signed's ``params["zero_level"]``: its maps are
  min-max scaled, see :mod:`fssgui.explain.affex`; 0 for other signed maps), the half-width being
  the 100 - :data:`CLIP_PERCENT` percentile of ``|value - zero|``. Values beyond the limits take the
  end colours. :func:`heat_overlay` draws a map over its image at :data:`HEAT_OPACITY`; a signed map
  fades towards its zero level (:func:`heat_rgba`), so "no evidence" leaves the image visible.
* **Foreground probability** (playback): :data:`PROBABILITY_COLORMAP` over [0, 1].
* **Methods** in plots: :data:`PALETTE` (Okabe & Ito, colour-blind safe), one colour per method.

The app lets a person change the colormaps, the clip and the opacity (its display settings start
from these defaults); the exports use the defaults.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

# ----------------------------------------------------------------------------------- colours
REGION_COLOUR: tuple[int, int, int] = (0, 200, 255)  # region R: cyan tint
PREDICTION_COLOUR: tuple[int, int, int] = (255, 214, 0)  # the model's prediction: yellow outline
TRUTH_COLOUR: tuple[int, int, int] = (60, 220, 90)  # the query's ground truth: green outline
SUPPORT_MASK_COLOUR: tuple[int, int, int] = (255, 96, 48)  # support masks: orange tint
MAP_MASK_OUTLINE_COLOUR: tuple[int, int, int] = (255, 255, 255)  # a support mask's outline over its heat map
#: the colours in words, for captions and legends
COLOUR_NAMES = {"region": "cyan", "prediction": "yellow", "truth": "green", "support": "orange"}

MASK_OPACITY = 0.45  # tints of region R and support masks
MAP_MASK_OUTLINE_OPACITY = 0.9
HEAT_OPACITY = 0.65  # a heat map over its image
CLIP_PERCENT = 1.0  # percent of the values cut at each end of an attribution map's colour scale

UNSIGNED_COLORMAP = "inferno"
SIGNED_COLORMAP = "diverging"
PROBABILITY_COLORMAP = "inferno"

#: colour-blind-safe qualitative palette (Okabe & Ito), RGB; one colour per method
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 114, 178),
    (213, 94, 0),
    (0, 158, 115),
    (204, 121, 167),
    (230, 159, 0),
    (86, 180, 233),
    (120, 120, 120),
    (240, 228, 66),
)


def palette_colour(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


# --------------------------------------------------------------------------------- colormaps
_DIVERGING = np.array(  # blue - white - red, as a 5-stop table interpolated to 256
    [[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]], dtype=np.float32
)

COLORMAPS = ("inferno", "viridis", "magma", "jet", "turbo", "gray", "diverging")
_CV_MAPS = {
    "inferno": cv2.COLORMAP_INFERNO,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "magma": cv2.COLORMAP_MAGMA,
    "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO,
}


def colormap_lut(name: str) -> np.ndarray:
    """``[256, 3]`` uint8 RGB lookup table of a named colormap."""
    if name == "gray":
        ramp = np.arange(256, dtype=np.uint8)
        return np.stack([ramp] * 3, axis=1)
    if name == "diverging":
        xs = np.linspace(0, len(_DIVERGING) - 1, 256)
        lo = np.floor(xs).astype(int).clip(0, len(_DIVERGING) - 2)
        t = (xs - lo)[:, None]
        return np.round(_DIVERGING[lo] * (1 - t) + _DIVERGING[lo + 1] * t).astype(np.uint8)
    if name not in _CV_MAPS:
        raise ValueError(f"unknown colormap {name!r} (known: {', '.join(COLORMAPS)})")
    ramp = np.arange(256, dtype=np.uint8)[:, None]
    bgr = cv2.applyColorMap(ramp, _CV_MAPS[name])[:, 0]
    return bgr[:, ::-1].copy()


def apply_colormap(
    values: np.ndarray, name: str = UNSIGNED_COLORMAP, vmin: Optional[float] = None, vmax: Optional[float] = None
) -> np.ndarray:
    """Map a float ``[H, W]`` array to RGB uint8 with a named colormap over [vmin, vmax]."""
    values = np.asarray(values, dtype=np.float32)
    vmin = float(np.nanmin(values)) if vmin is None else float(vmin)
    vmax = float(np.nanmax(values)) if vmax is None else float(vmax)
    scale = 255.0 / (vmax - vmin) if vmax > vmin else 0.0
    index = np.clip((values - vmin) * scale, 0, 255)
    index = np.nan_to_num(index).astype(np.uint8)
    return colormap_lut(name)[index]


# ------------------------------------------------------------------------------------ scales
@dataclass(frozen=True)
class Scale:
    """How the values of a map become colours: ``colormap`` over [vmin, vmax]. A signed scale is
    symmetric about ``center`` (its "no evidence" level, drawn with the colormap's middle colour).
    ``data_min`` / ``data_max``: the range the values actually cover (a colorbar shows that part)."""

    colormap: str
    vmin: float
    vmax: float
    signed: bool = False
    center: float = 0.0
    data_min: Optional[float] = None
    data_max: Optional[float] = None


def map_scale(maps: Sequence[np.ndarray] | np.ndarray, signed: bool = False, center: Optional[float] = None,
              clip_percent: float = CLIP_PERCENT, colormap: str = UNSIGNED_COLORMAP,
              signed_colormap: str = SIGNED_COLORMAP) -> Scale:
    """One colour scale for all ``maps`` (the supports of one explanation), by the rule in the
    module docstring: percentile clipping, signed maps symmetric about ``center`` (None = 0)."""
    if isinstance(maps, np.ndarray):
        maps = [maps]
    values = np.concatenate([np.asarray(m, np.float32).ravel() for m in maps]) if len(maps) else np.zeros(1)
    values = values[np.isfinite(values)]
    if values.size == 0:
        values = np.zeros(1, np.float32)
    data_min, data_max = float(values.min()), float(values.max())
    if values.size > 2_000_000:  # percentiles of a strided sample are plenty for display limits
        values = values[:: values.size // 1_000_000]
    clip = float(clip_percent)
    if signed:
        center = 0.0 if center is None else float(center)
        distance = np.abs(values - center)
        half = float(np.percentile(distance, 100.0 - clip)) if clip > 0 else float(distance.max())
        half = half if half > 0 else 1.0
        return Scale(signed_colormap, center - half, center + half, True, center, data_min, data_max)
    lo = float(np.percentile(values, clip)) if clip > 0 else data_min
    hi = float(np.percentile(values, 100.0 - clip)) if clip > 0 else data_max
    if hi <= lo:
        hi = lo + 1.0
    return Scale(colormap, lo, hi, False, 0.0, data_min, data_max)


# ---------------------------------------------------------------------------- layers (RGBA)
def heat_rgba(values: np.ndarray, scale: Scale, fade_near_zero: bool = False) -> np.ndarray:
    """Colour-mapped RGBA (straight alpha). With ``fade_near_zero`` (signed maps drawn over the
    image) the alpha grows with ``|value - center|`` up to the scale's limit, so "no evidence"
    leaves the image visible instead of washing it out with the diverging map's white."""
    rgb = apply_colormap(values, scale.colormap, scale.vmin, scale.vmax)
    if fade_near_zero and scale.signed:
        half = max(scale.vmax - scale.center, scale.center - scale.vmin, 1e-12)
        strength = np.clip(np.abs(np.asarray(values, np.float32) - scale.center) / half, 0.0, 1.0)
        alpha = np.nan_to_num(np.sqrt(strength) * 255.0 + 0.5).astype(np.uint8)[..., None]
    else:
        alpha = np.full(rgb.shape[:2] + (1,), 255, dtype=np.uint8)
    return np.concatenate([rgb, alpha], axis=2)


def outline_thickness(shape: Sequence[int]) -> int:
    """Line width (image pixels) of a mask outline on an image of ``shape``."""
    return max(1, round(max(int(shape[0]), int(shape[1])) / 350))


def outline_rgba(mask: np.ndarray, colour: Sequence[int] = MAP_MASK_OUTLINE_COLOUR,
                 thickness: Optional[int] = None) -> np.ndarray:
    """A transparent layer with the mask's outline (``thickness`` px; by default scaled to the
    image, :func:`outline_thickness`)."""
    mask = np.asarray(mask, bool)
    out = np.zeros(mask.shape + (4,), dtype=np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (*(int(c) for c in colour), 255), thickness or outline_thickness(mask.shape))
    return out


def composite(image: np.ndarray, rgba: np.ndarray, opacity: float = 1.0) -> np.ndarray:
    """``rgba`` (straight alpha) drawn over RGB ``image`` with the layer ``opacity``: what the
    canvas shows for an overlay layer."""
    alpha = rgba[..., 3:4].astype(np.float32) * (float(opacity) / 255.0)
    out = image.astype(np.float32) * (1.0 - alpha) + rgba[..., :3].astype(np.float32) * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def blend(image: np.ndarray, colour, opacity: float, where: Optional[np.ndarray] = None) -> np.ndarray:
    """``colour`` (an RGB image of ``image``'s size, or one RGB triple) drawn over RGB ``image`` at
    ``opacity``, only ``where`` when given (:func:`composite` of an opaque layer)."""
    rgba = np.zeros(image.shape[:2] + (4,), np.uint8)
    rgba[..., :3] = np.broadcast_to(np.asarray(colour, np.float32), image.shape).astype(np.uint8)
    rgba[..., 3] = 255 if where is None else np.where(where, 255, 0)
    return composite(image, rgba, opacity)


# ------------------------------------------------------------------------- drawn over images
def _mask_at(mask: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    mask = np.asarray(mask, bool)
    if mask.shape[:2] == tuple(shape[:2]):
        return mask
    return cv2.resize(mask.astype(np.uint8), (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_NEAREST) > 0


def tint(image: np.ndarray, mask: np.ndarray, colour: Sequence[int], opacity: float = MASK_OPACITY) -> np.ndarray:
    """``image`` with the ``mask`` pixels tinted (a mask resized to the image, nearest): region R
    and support masks as the canvas shows them."""
    return blend(image, [int(c) for c in colour], opacity, _mask_at(mask, image.shape))


def outline(image: np.ndarray, mask: np.ndarray, colour: Sequence[int], opacity: float = 1.0,
            thickness: Optional[int] = None) -> np.ndarray:
    """``image`` with the outline of ``mask``: the prediction and the ground truth as the canvas
    shows them. A figure that shows the image small draws on the small image with a
    ``thickness`` that stays visible."""
    return composite(image, outline_rgba(_mask_at(mask, image.shape), colour, thickness), opacity)


def heat_overlay(image: np.ndarray, values: np.ndarray, scale: Scale, opacity: float = HEAT_OPACITY,
                 mask: Optional[np.ndarray] = None, thickness: Optional[int] = None) -> np.ndarray:
    """A map over its image as a heat-map tile shows it (overlay mode): the map resized to the
    image (bilinear), coloured by ``scale``, at ``opacity`` (signed maps fading to their zero),
    with the outline of the support ``mask`` when given."""
    from .imaging import resize_map

    values = resize_map(values, image.shape[:2])
    out = composite(image, heat_rgba(values, scale, fade_near_zero=True), opacity)
    if mask is not None:
        out = outline(out, mask, MAP_MASK_OUTLINE_COLOUR, MAP_MASK_OUTLINE_OPACITY, thickness)
    return out
