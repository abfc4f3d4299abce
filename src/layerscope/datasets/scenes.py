"""Multi-object shapes scenes: 1–4 shapes per image, their boxes and masks known.

The same ten classes, outlines, colours, clutter and noise as :mod:`layerscope.datasets.shapes`
(its drawing code, reused), but several smaller objects per image, placed so that their
boxes do not overlap (a box then holds one object, and its mask is the object's visible
pixels). As in the single-object set, thin lines are drawn over everything at the end; each
mask leaves out what they hide, and each box is the tight box of its mask.

Scene ``i`` of seed ``s`` is a pure function of ``(s, i, size)`` (its generator is seeded
with ``numpy.random.SeedSequence([s, i, 1])``, apart from the single-object set's), so it
never depends on which scenes were made before it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image

from layerscope.datasets.shapes import (
    CLASS_NAMES,
    _background,
    _cluttered_canvas,
    _colour_against,
    _lines_over,
    _paint,
    _place,
    _polygon_mask,
    _with_noise,
)

#: Object size in a scene, as :data:`~layerscope.datasets.shapes.RADIUS_RANGE` (a fraction
#: of the image side): smaller than the single objects', so four fit side by side.
SCENE_RADIUS_RANGE: tuple[float, float] = (0.08, 0.14)
#: Objects per scene (inclusive).
MAX_OBJECTS = 4
#: Default side of a scene, in pixels.
SCENE_SIZE = 128
#: Free pixels kept between two objects' boxes.
GAP = 2
#: Placements tried per object before the scene settles for fewer objects.
TRIES = 40

#: A scene's annotation: ``(boxes, labels)``, float32 ``(K, 4)`` ``x0, y0, x1, y1`` pixel
#: edges (``x1``, ``y1`` exclusive: a box of one pixel is 1 wide) and int64 ``(K,)``.
Annotation = tuple[np.ndarray, np.ndarray]


def mask_box(mask: np.ndarray) -> np.ndarray:
    """The tight box of a non-empty bool mask: ``[x0, y0, x1, y1]`` float32, pixel edges
    (``x1 = last column + 1``)."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not len(rows):
        raise ValueError("an empty mask has no box")
    return np.asarray([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def _apart(poly: np.ndarray, taken: list[np.ndarray]) -> bool:
    lo, hi = poly.min(axis=0) - GAP, poly.max(axis=0) + GAP
    return all(np.any(hi <= t[:2]) or np.any(lo >= t[2:]) for t in taken)


def make_scene(seed: int, index: int, size: int = SCENE_SIZE) -> tuple[np.ndarray, Annotation, np.ndarray]:
    """Make scene ``index`` of the scenes with seed ``seed``.

    Args:
        seed: the scenes' seed (non-negative).
        index: the scene's index (non-negative).
        size: image side in pixels (at least 64).

    Returns:
        ``(image, (boxes, labels), masks)``: uint8 ``(size, size, 3)``; float32 ``(K, 4)``
        boxes (xyxy pixel edges, tight around each mask) and int64 ``(K,)`` labels into
        :data:`CLASS_NAMES`, ``1 ≤ K ≤ 4``; bool ``(K, size, size)`` visible-pixel masks
        (never empty, pairwise disjoint).
    """
    if size < 64:
        raise ValueError(f"size must be at least 64 pixels, got {size}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 1]))
    background = _background(rng, size)
    wanted = int(rng.integers(1, MAX_OBJECTS + 1))
    placed: list[tuple[int, np.ndarray, np.ndarray, float]] = []  # label, polygon, centre, radius
    extents: list[np.ndarray] = []
    for _ in range(wanted):
        label = int(rng.integers(len(CLASS_NAMES)))
        for _ in range(TRIES):
            poly, centre, radius = _place(rng, label, size, SCENE_RADIUS_RANGE)
            if _apart(poly, extents):
                placed.append((label, poly, centre, radius))
                extents.append(np.concatenate([poly.min(axis=0), poly.max(axis=0)]))
                break
    full = [_polygon_mask(poly, size) for _, poly, _, _ in placed]
    colours = [_colour_against(rng, background, m) for m in full]
    pil = _cluttered_canvas(rng, size, background)
    pixels = np.array(pil)
    for (_, _, centre, radius), mask, colour in zip(placed, full, colours, strict=True):
        _paint(pixels, mask, colour, rng, float(centre[1]), radius)
    pil = Image.fromarray(pixels)
    covered = _lines_over(pil, rng, size)
    masks = np.stack([m & ~covered if (m & ~covered).any() else m for m in full])
    boxes = np.stack([mask_box(m) for m in masks])
    labels = np.asarray([label for label, _, _, _ in placed], dtype=np.int64)
    return _with_noise(pil, rng, size), (boxes, labels), masks


def make_scenes(
    n: int, seed: int, size: int = SCENE_SIZE, *, start: int = 0
) -> tuple[np.ndarray, list[Annotation], list[np.ndarray]]:
    """Make scenes ``start … start+n-1`` of the scenes with seed ``seed``.

    Returns:
        ``(images, annotations, masks)``: uint8 ``(n, size, size, 3)``; one
        ``(boxes, labels)`` per scene (:func:`make_scene`); one bool ``(K, size, size)``
        mask stack per scene.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    annotations: list[Annotation] = []
    masks: list[np.ndarray] = []
    for k in range(n):
        images[k], ann, m = make_scene(seed, start + k, size)
        annotations.append(ann)
        masks.append(m)
    return images, annotations, masks


def iter_scenes(
    n: int, seed: int, size: int = SCENE_SIZE, *, batch: int = 64, start: int = 0
) -> Iterator[tuple[np.ndarray, list[Annotation], list[np.ndarray]]]:
    """:func:`make_scenes` ``batch`` scenes at a time (the last batch may be shorter)."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    for first in range(start, start + n, batch):
        yield make_scenes(min(batch, start + n - first), seed, size, start=first)
