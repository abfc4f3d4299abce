"""A synthetic, cluttered shapes dataset whose ground-truth object masks are known.

Every sample is one solid shape of one of ten classes (:data:`CLASS_NAMES`), of random
colour, size, position and rotation, drawn over a cluttered background: a colour gradient,
low-frequency blotches, sinusoidal stripes, per-pixel noise and distractors (small irregular
blobs, line segments and scribbles) that are *not* any of the classes. Distractors are often
brighter or more saturated than the object, so "the brightest thing" is not the answer.
Some thin distractor lines are drawn *over* the object; the mask leaves out what they hide.

Because the object's mask is known, an explanation can be scored: the pointing game
(:func:`layerscope.evaluate.pointing_game`) asks whether a map's maximum lies on the object.

Sample ``i`` of seed ``s`` is a pure function of ``(s, i, size)``: its random generator is
seeded with ``numpy.random.SeedSequence([s, i])``, so it never depends on how many samples
were made before it, in which order, or in which process. Labels cycle ``i % 10``, so any run
of ten consecutive indices holds every class once.

All shapes are solid (no holes), so a map that points at the middle of a shape lands on it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageDraw

#: The ten classes, in label order.
CLASS_NAMES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "heart",
    "arrow",
    "semicircle",
    "ellipse",
    "diamond",
)

#: Object size: the radius of the disc of the same area as the shape, as a fraction of the
#: image side. Every class has the same range of areas, so size says nothing of the class.
RADIUS_RANGE: tuple[float, float] = (0.13, 0.22)


def _regular(n: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    """Vertices of a regular ``n``-gon (or, for large ``n``, a circle)."""
    t = phase + 2.0 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def _star(points: int = 5, inner: float = 0.5) -> np.ndarray:
    t = np.pi / 2 + np.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _cross(half_width: float = 0.36) -> np.ndarray:
    a, b = half_width, 1.0
    pts = [(a, b), (a, a), (b, a), (b, -a), (a, -a), (a, -b)]
    pts += [(-a, -b), (-a, -a), (-b, -a), (-b, a), (-a, a), (-a, b)]
    return np.asarray(pts, dtype=np.float64)


def _heart(n: int = 64) -> np.ndarray:
    t = 2.0 * np.pi * np.arange(n) / n
    x = 16.0 * np.sin(t) ** 3
    y = 13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, y], axis=1)


def _arrow() -> np.ndarray:
    s, h, x0 = 0.3, 0.72, 0.05
    return np.asarray([(-1.0, -s), (x0, -s), (x0, -h), (1.0, 0.0), (x0, h), (x0, s), (-1.0, s)], dtype=np.float64)


def _diamond(aspect: float = 0.58) -> np.ndarray:
    """A rhombus with diagonals 2 and ``2 * aspect`` (about 60° and 120° corners)."""
    return np.asarray([(1.0, 0.0), (0.0, aspect), (-1.0, 0.0), (0.0, -aspect)], dtype=np.float64)


def _semicircle(n: int = 33) -> np.ndarray:
    t = np.pi * np.arange(n) / (n - 1)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _ellipse(n: int = 48, aspect: float = 0.42) -> np.ndarray:
    t = 2.0 * np.pi * np.arange(n) / n
    return np.stack([np.cos(t), aspect * np.sin(t)], axis=1)


def _normalise(poly: np.ndarray) -> np.ndarray:
    """Centre a polygon on its bounding box and scale it to the area of the unit disc."""
    poly = poly - (poly.max(axis=0) + poly.min(axis=0)) / 2.0
    x, y = poly[:, 0], poly[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    return poly * math.sqrt(math.pi / area)


#: Unit outlines (area π, centred on their bounding box), in label order.
_OUTLINES: tuple[np.ndarray, ...] = tuple(
    _normalise(p)
    for p in (
        _regular(64),
        _regular(4, phase=np.pi / 4),
        _regular(3, phase=np.pi / 2),
        _star(),
        _cross(),
        _heart(),
        _arrow(),
        _semicircle(),
        _ellipse(),
        _diamond(),
    )
)
assert len(_OUTLINES) == len(CLASS_NAMES)


def _rng(seed: int, index: int) -> np.random.Generator:
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 255.0, size=3).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in 0..1, as (size, 1) rows and (1, size) columns."""
    t = ((np.arange(size, dtype=np.float32) + 0.5) / size).astype(np.float32)
    return t[:, None], t[None, :]


@functools.lru_cache(maxsize=32)
def _upsample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation matrix (the package's one convention, float32)."""
    from layerscope.resize import bilinear_matrix

    return bilinear_matrix(n_in, n_out).astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A float32 channels-first (3, size, size) cluttered background in 0..255, noise-free."""
    yy, xx = _grid(size)
    # Colour gradient between two random colours along a random direction.
    c0, c1 = _random_colour(rng)[:, None, None], _random_colour(rng)[:, None, None]
    ang = float(rng.uniform(0.0, 2.0 * np.pi))
    ramp = (math.cos(ang) * (xx - 0.5) + math.sin(ang) * (yy - 0.5)) * 0.7 + 0.5
    img = c0 + (c1 - c0) * float(rng.uniform(0.3, 1.0)) * ramp
    # Low-frequency colour blotches: a coarse random grid, bilinearly enlarged.
    cells = int(rng.integers(2, 6))
    coarse = rng.uniform(-1.0, 1.0, size=(3, cells, cells)) * float(rng.uniform(20.0, 70.0))
    up = _upsample_matrix(cells, size)
    img += up @ coarse.astype(np.float32) @ up.T
    # Sinusoidal stripes in a third colour (most of the time).
    if rng.random() < 0.7:
        period = float(rng.uniform(3.0, 12.0)) / 64.0
        ang = float(rng.uniform(0.0, np.pi))
        phase = float(rng.uniform(0.0, 2.0 * np.pi))
        wave = np.sin((math.cos(ang) * xx + math.sin(ang) * yy) * (2 * math.pi / period) + phase)
        if rng.random() < 0.5:
            wave = np.sign(wave)  # hard-edged stripes
        stripe = (_random_colour(rng) - img.mean(axis=(1, 2))) * float(rng.uniform(0.1, 0.3))
        img += stripe[:, None, None] * (1.0 + wave)
    return img


def _draw_clutter(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    size: int,
    count: int,
    cover: ImageDraw.ImageDraw | None = None,
) -> None:
    """Draw random clutter: small irregular blobs, line segments and scribbles.

    Blobs stay smaller than the smallest object and are irregular, lines are thin, so none
    of them is an instance of a class. Items have random colours. With ``cover`` (a drawing
    on an "L" image), only lines are drawn, and each is also drawn there in white so the
    caller knows which pixels they hide.
    """
    min_radius = RADIUS_RANGE[0] * size
    for _ in range(count):
        kind = 1 + int(rng.integers(2)) if cover is not None else int(rng.integers(3))
        cx, cy = rng.uniform(0, size, size=2)
        fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
        if kind == 0:  # irregular blob
            k = int(rng.integers(5, 10))
            t = np.sort(rng.uniform(0, 2 * np.pi, size=k))
            r = rng.uniform(0.2, 0.6) * min_radius * rng.uniform(0.5, 1.0, size=k)
            pts = list(zip(cx + r * np.cos(t), cy + r * np.sin(t), strict=True))
            draw.polygon(pts, fill=fill)
        else:  # a segment (2 points) or a scribble (3–5 points)
            k = 2 if kind == 1 else int(rng.integers(3, 6))
            step = rng.uniform(0.1, 0.35) * size
            ang = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.9, size=k - 1))
            xs = cx + np.concatenate([[0.0], np.cumsum(step * np.cos(ang))])
            ys = cy + np.concatenate([[0.0], np.cumsum(step * np.sin(ang))])
            width = max(1, round(size / 64 * rng.uniform(1.0, 2.5)))
            pts = list(zip(xs, ys, strict=True))
            draw.line(pts, fill=fill, width=width)
            if cover is not None:
                cover.line(pts, fill=255, width=width)


def _place(
    rng: np.random.Generator, label: int, size: int, radius_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Rotate, scale and place class ``label``'s unit outline fully inside the image:
    ``(polygon (k, 2) in pixels, centre (2,), radius)``."""
    radius = float(rng.uniform(*radius_range)) * size
    theta = float(rng.uniform(0.0, 2.0 * np.pi))
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    poly = _OUTLINES[label] @ rot.T * radius
    low, high = -poly.min(axis=0) + 1.0, size - 1.0 - poly.max(axis=0)
    centre = rng.uniform(low, high)
    return poly + centre, centre, radius


def _polygon_mask(poly: np.ndarray, size: int) -> np.ndarray:
    mask_img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask_img).polygon([tuple(p) for p in poly], fill=255)
    return np.asarray(mask_img) > 0


def _colour_against(rng: np.random.Generator, background: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """An object colour far enough from the background under ``mask`` to be visible."""
    under = background[:, mask].mean(axis=1)
    for _ in range(20):
        colour = _random_colour(rng)
        if np.linalg.norm(colour - under) > 110.0:
            return colour
    return np.where(under > 127.5, 0.0, 255.0).astype(np.float32)


def _paint(
    pixels: np.ndarray, mask: np.ndarray, colour: np.ndarray, rng: np.random.Generator, centre_y: float, radius: float
) -> None:
    """Paint a solid object over ``pixels`` (uint8 HWC, in place), shaded from top to bottom."""
    rows = np.nonzero(mask)[0].astype(np.float32)
    shade = float(rng.uniform(0.0, 0.25))
    lit = 1.0 - shade * np.clip((rows - centre_y) / radius, -1.0, 1.0)
    pixels[mask] = np.clip(colour[None, :] * lit[:, None], 0, 255).astype(np.uint8)


def _lines_over(pil: Image.Image, rng: np.random.Generator, size: int) -> np.ndarray:
    """Draw 0–2 thin lines over everything; the bool mask of the pixels they cover."""
    cover = Image.new("L", (size, size), 0)
    n_over = int(rng.integers(0, 3))
    _draw_clutter(ImageDraw.Draw(pil), rng, size, n_over, cover=ImageDraw.Draw(cover))
    return np.asarray(cover) > 0


def _with_noise(pil: Image.Image, rng: np.random.Generator, size: int) -> np.ndarray:
    """Per-pixel Gaussian noise of a random strength over everything: the final uint8 image."""
    sigma = np.float32(rng.uniform(4.0, 22.0))
    noise = rng.standard_normal(size=(size, size, 3), dtype=np.float32) * sigma
    return np.clip(np.asarray(pil) + noise + 0.5, 0, 255).astype(np.uint8)


def _cluttered_canvas(rng: np.random.Generator, size: int, background: np.ndarray) -> Image.Image:
    """The background with 2–7 clutter items drawn on it (under the objects)."""
    canvas = np.clip(background, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    pil = Image.fromarray(np.ascontiguousarray(canvas))
    _draw_clutter(ImageDraw.Draw(pil), rng, size, int(rng.integers(2, 8)))
    return pil


def make_sample(seed: int, index: int, size: int = 64) -> tuple[np.ndarray, int, np.ndarray]:
    """Make sample ``index`` of the dataset with seed ``seed``.

    Args:
        seed: the dataset's seed (non-negative).
        index: the sample's index (non-negative); its label is ``index % 10``.
        size: image side in pixels (at least 32).

    Returns:
        ``(image, label, mask)``: the RGB image, uint8 ``(size, size, 3)``; the class index
        into :data:`CLASS_NAMES`; the boolean ``(size, size)`` mask of the object's visible
        pixels (never empty).
    """
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    rng = _rng(seed, index)
    label = int(index) % len(CLASS_NAMES)
    background = _background(rng, size)
    poly, centre, radius = _place(rng, label, size, RADIUS_RANGE)
    mask = _polygon_mask(poly, size)
    colour = _colour_against(rng, background, mask)
    pil = _cluttered_canvas(rng, size, background)  # clutter under the object
    pixels = np.array(pil)
    _paint(pixels, mask, colour, rng, float(centre[1]), radius)
    # A few thin lines over it; the mask keeps only the pixels that stay visible.
    pil = Image.fromarray(pixels)
    visible = mask & ~_lines_over(pil, rng, size)
    if visible.any():
        mask = visible
    return _with_noise(pil, rng, size), label, mask


def iter_dataset(
    n: int, seed: int, size: int = 64, *, batch: int = 64, start: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Samples ``start … start+n-1`` of the dataset with seed ``seed``, ``batch`` at a time:
    the arrays of :func:`make_dataset` for each run of ``batch`` samples (the last may be
    shorter), made as they are asked for. Only one batch is held, whatever ``n``.

    Args:
        n: number of samples.
        seed: the dataset's seed (non-negative).
        size: image side in pixels.
        batch: samples per batch (at least 1).
        start: index of the first sample.

    Yields:
        ``(images, labels, masks)``: uint8 ``(b, size, size, 3)``, int64 ``(b,)``, bool
        ``(b, size, size)``.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    for first in range(start, start + n, batch):
        yield make_dataset(min(batch, start + n - first), seed, size, start=first)


def make_dataset(n: int, seed: int, size: int = 64, *, start: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Make samples ``start … start+n-1`` of the dataset with seed ``seed``.

    Args:
        n: number of samples.
        seed: the dataset's seed (non-negative).
        size: image side in pixels.
        start: index of the first sample (so a long run can be made in chunks).

    Returns:
        ``(images, labels, masks)``: uint8 ``(n, size, size, 3)``, int64 ``(n,)`` and bool
        ``(n, size, size)``, allocated at once (for a large ``n``, :func:`iter_dataset`).
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.empty((n,), dtype=np.int64)
    masks = np.empty((n, size, size), dtype=bool)
    for k in range(n):
        images[k], labels[k], masks[k] = make_sample(seed, start + k, size)
    return images, labels, masks
