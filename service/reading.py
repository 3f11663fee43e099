"""Reading a number: a picture of several digits in a row, segmented into one MNIST-style 28x28
image per digit, left to right.

The ink is found as for a single digit (``imaging.find_ink``: illumination removed, specks and
paper edges dropped); its connected components are grouped into digits by the columns they
cover (a 5's detached bar, a broken stroke join the digit under or over them); marks much
smaller than the tallest digit (a dot, a comma) are left out. Touching digits stay one
component and so one segment: they are not split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service import imaging

#: Components whose column spans overlap by this share of the narrower one belong to one digit.
_OVERLAP = 0.5
#: Groups less tall than this share of the tallest group are punctuation or dirt.
_MIN_HEIGHT = 0.3


@dataclass(frozen=True)
class Segment:
    """One digit: its box in the uploaded picture's pixels (top, left, bottom, right; bottom and
    right exclusive) and its 28x28 MNIST-style image in [0, 1]."""

    box: tuple[int, int, int, int]
    image: np.ndarray


def segment_row(gray: np.ndarray, field: str = "file") -> list[Segment]:
    """The digits of a grayscale picture (in [0, 1]) of a row of digits, left to right."""
    ink = imaging.find_ink(gray, field)
    order = sorted(range(len(ink.boxes)), key=lambda k: ink.boxes[k][1])
    groups: list[list[int]] = []
    for k in order:
        _, left, _, right = ink.boxes[k]
        if groups:
            g_left = min(ink.boxes[j][1] for j in groups[-1])
            g_right = max(ink.boxes[j][3] for j in groups[-1])
            overlap = min(right, g_right) - max(left, g_left)
            if overlap >= _OVERLAP * min(right - left, g_right - g_left):
                groups[-1].append(k)
                continue
        groups.append([k])
    boxes = [_union([ink.boxes[k] for k in group]) for group in groups]
    tallest = max(b[2] - b[0] for b in boxes)
    segments = []
    for group, box in zip(groups, boxes, strict=True):
        if box[2] - box[0] < _MIN_HEIGHT * tallest:
            continue
        keep = np.isin(ink.labels, [k + 1 for k in group])
        top, left, bottom, right = box
        # The rim of a neighbour's stroke may reach into this box: only this group's ink.
        crop = (ink.image * keep)[top:bottom, left:right]
        if not crop.any():
            continue
        original = tuple(round(v / ink.scale) for v in box)
        segments.append(Segment(box=original, image=imaging.frame_digit(crop)))  # type: ignore[arg-type]
    return segments


def _union(boxes: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
