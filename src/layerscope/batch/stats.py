"""Per-item map statistics for the manifest and the per-class mean maps of a run.

Pure numpy (and Pillow for the grid picture): no framework.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

#: Side of the mean maps of the summary: every layer's normalised map is resized to it.
SUMMARY_SIDE = 32
#: The prediction groups of the summary.
GROUPS = ("correct", "wrong", "unlabelled")


def map_stats(cam: np.ndarray) -> dict[str, float | None]:
    """Peak value and place, and the normalised entropy, of one ``(h, w)`` map.

    Returns:
        ``peak``: the largest value; ``peak_y``, ``peak_x``: the peak cell's centre as a
        fraction of the height and width (0..1, first maximal cell in row-major order);
        ``entropy``: the Shannon entropy of the map read as a distribution (its values
        divided by their sum), divided by ``log(h·w)``: 0 when all mass is on one cell, 1 for
        a uniform map; ``None`` for a map with no mass (all zero).
    """
    cam = _finite(np.asarray(cam, dtype=np.float64))
    h, w = cam.shape
    flat = cam.ravel()
    k = int(np.argmax(flat))
    positive = np.maximum(flat, 0.0)
    total = float(positive.sum())
    entropy: float | None = None
    if total > 0 and h * w > 1:
        p = positive / total
        nz = p[p > 0]
        entropy = float(-(nz * np.log(nz)).sum() / np.log(h * w))
    elif total > 0:
        entropy = 0.0
    return {
        "peak": float(flat[k]),
        "peak_y": (k // w + 0.5) / h,
        "peak_x": (k % w + 0.5) / w,
        "entropy": entropy,
    }


def normalised_small(cam: np.ndarray, side: int = SUMMARY_SIDE) -> np.ndarray:
    """A map divided by its maximum (0 for a map without a positive value), resized to
    ``side``²; for ``(n, h, w)`` maps, each map so."""
    from layerscope.resize import resize_bilinear

    cam = _finite(np.asarray(cam, dtype=np.float64))
    if not cam.size:
        return resize_bilinear(np.zeros_like(cam), (side, side))
    hi = cam.max(axis=(-2, -1), keepdims=True)
    norm = np.where(hi > 0, cam / np.where(hi > 0, hi, 1.0), 0.0)
    return resize_bilinear(norm, (side, side))


def _finite(a: np.ndarray) -> np.ndarray:
    """``a`` with NaN and infinities set to 0 (copied only when there are any)."""
    return a if np.isfinite(a).all() else np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)


class SummarySums:
    """Running sums of normalised maps per ``(layer, class, group)``, mergeable and savable."""

    def __init__(self) -> None:
        self.sums: dict[tuple[str, int, str], np.ndarray] = {}
        self.counts: dict[tuple[str, int, str], int] = {}

    def add(self, layer: str, cls: int, group: str, cam: np.ndarray, small: np.ndarray | None = None) -> None:
        """Add one item's map of ``layer`` to class ``cls``'s ``group`` (``small``: its
        :func:`normalised_small`, when computed with its batch's)."""
        key = (layer, int(cls), group)
        small = normalised_small(cam) if small is None else np.array(small, dtype=np.float64)
        if key in self.sums:
            self.sums[key] += small
            self.counts[key] += 1
        else:
            self.sums[key] = small
            self.counts[key] = 1

    def merge(self, other: SummarySums) -> None:
        """Add another set of sums into this one."""
        for key, s in other.sums.items():
            if key in self.sums:
                self.sums[key] = self.sums[key] + s
                self.counts[key] += other.counts[key]
            else:
                self.sums[key] = s.copy()
                self.counts[key] = other.counts[key]

    def __bool__(self) -> bool:
        return bool(self.sums)

    def to_bytes(self) -> bytes:
        """The sums as a compressed ``.npz``."""
        arrays = {}
        for (layer, cls, group), s in self.sums.items():
            name = f"{layer}|{cls}|{group}"
            arrays[f"sum/{name}"] = s.astype(np.float64)
            arrays[f"count/{name}"] = np.asarray(self.counts[(layer, cls, group)], dtype=np.int64)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_file(cls, path: str) -> SummarySums:
        """Read sums written by :meth:`to_bytes`."""
        out = cls()
        with np.load(path, allow_pickle=False) as z:
            for name in z.files:
                if not name.startswith("sum/"):
                    continue
                layer, c, group = name[4:].rsplit("|", 2)
                key = (layer, int(c), group)
                out.sums[key] = z[name]
                out.counts[key] = int(z[f"count/{name[4:]}"])
        return out

    def means(self, layers: Sequence[str], num_classes: int) -> dict[str, np.ndarray]:
        """``{"<group>/<layer>": (num_classes, side, side) mean map}`` and ``{"count/<group>": (num_classes,)}``
        (a class with no item in a group has a zero map and count 0)."""
        out: dict[str, np.ndarray] = {}
        for group in GROUPS:
            counts = np.zeros(num_classes, dtype=np.int64)
            present = False
            for layer in layers:
                arr = np.zeros((num_classes, SUMMARY_SIDE, SUMMARY_SIDE), dtype=np.float32)
                for c in range(num_classes):
                    key = (layer, c, group)
                    if key in self.sums:
                        arr[c] = self.sums[key] / self.counts[key]
                        counts[c] = self.counts[key]
                        present = True
                out[f"{group}/{layer}"] = arr
            out[f"count/{group}"] = counts
            if not present:
                for layer in layers:
                    del out[f"{group}/{layer}"]
                del out[f"count/{group}"]
        return out


def grid_png(
    means: Mapping[str, np.ndarray],
    layers: Sequence[str],
    class_names: Sequence[str],
    colormap: str = "jet",
    cell: int = 48,
) -> bytes:
    """A class × layer picture of the mean maps: one row per class and group (correct / wrong /
    unlabelled) with at least one item, one column per layer, captioned."""
    from PIL import Image, ImageDraw, ImageFont

    from layerscope.render import colormap_lut

    lut = colormap_lut(colormap)
    rows: list[tuple[str, str, int, int]] = []
    for group in ("correct", "wrong", "unlabelled"):
        counts = means.get(f"count/{group}")
        if counts is None:
            continue
        for c, n in enumerate(counts):
            if n:
                rows.append((group, class_names[c] if c < len(class_names) else f"class {c}", c, int(n)))
    font = ImageFont.load_default(size=11)
    left, top, pad = 170, 40, 2
    width = left + len(layers) * (cell + pad) + pad + 40  # room for the last column title
    height = top + max(len(rows), 1) * (cell + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, layer in enumerate(layers):
        x = left + j * (cell + pad)
        draw.text((x, 4 + (j % 2) * 14), layer[-14:], fill=(0, 0, 0), font=font)
    if not rows:
        draw.text((4, top), "no item was explained", fill=(0, 0, 0), font=font)
    for i, (group, name, c, n) in enumerate(rows):
        y = top + i * (cell + pad)
        draw.text((4, y + cell // 2 - 12), f"{name}", fill=(0, 0, 0), font=font)
        draw.text((4, y + cell // 2 + 2), f"{group}, n = {n}", fill=(90, 90, 90), font=font)
        for j, layer in enumerate(layers):
            m = np.asarray(means[f"{group}/{layer}"][c], dtype=np.float64)
            hi = m.max()
            idx = np.clip(np.round((m / hi if hi > 0 else m) * 255), 0, 255).astype(np.uint8)
            tile = Image.fromarray(lut[idx]).resize((cell, cell), Image.Resampling.BILINEAR)
            canvas.paste(tile, (left + j * (cell + pad), y))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def class_count(labels: Iterable[int | None], class_names: Sequence[str] | None) -> int:
    """How many classes the summary needs: the class names, else the largest index seen + 1."""
    seen = [int(x) for x in labels if x is not None]
    return max(len(class_names or ()), (max(seen) + 1) if seen else 0)
