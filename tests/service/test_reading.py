"""Segmenting a picture of a row of digits into MNIST-style digit images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from service import reading
from service.errors import InvalidInput


def _row(gaps: list[int], detached_bar: bool = False) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Pen-drawn strokes (dark on white, in [0, 1]) as digits separated by ``gaps`` px; the
    (left, right) column span of each."""
    width = 30 + sum(gaps) + 24 * (len(gaps) + 1)
    image = Image.new("L", (width, 60), 255)
    draw = ImageDraw.Draw(image)
    spans, x = [], 15
    for i in range(len(gaps) + 1):
        if i % 2:
            draw.ellipse([x, 12, x + 24, 48], outline=0, width=4)  # a '0'
        else:
            draw.line([(x + 2, 12), (x + 22, 12), (x + 8, 48)], fill=0, width=4)  # a '7'
        spans.append((x, x + 25))
        x += 24 + (gaps[i] if i < len(gaps) else 0)
    if detached_bar:  # a '5'-like top bar, apart from the first digit's strokes
        draw.line([(17, 4), (37, 4)], fill=0, width=3)
    return np.asarray(image, np.float32) / 255.0, spans


@pytest.mark.parametrize("gaps", [[4, 4, 4], [3, 12, 25, 6], [40]])
def test_segment_row_finds_each_digit_left_to_right(gaps: list[int]) -> None:
    picture, spans = _row(gaps)

    segments = reading.segment_row(picture)

    assert len(segments) == len(spans)
    for segment, (left, right) in zip(segments, spans, strict=True):
        top, s_left, bottom, s_right = segment.box
        assert abs(s_left - left) <= 3 and abs(s_right - right) <= 3
        assert top >= 8 and bottom <= 52
        assert segment.image.shape == (28, 28) and segment.image.max() == pytest.approx(1.0)


def test_segment_row_joins_detached_stroke_to_its_digit() -> None:
    picture, _spans = _row([6, 6], detached_bar=True)

    segments = reading.segment_row(picture)

    assert len(segments) == 3
    assert segments[0].box[0] <= 4  # the bar is part of the first digit's box


def test_segment_row_scales_boxes_back_to_the_uploaded_picture() -> None:
    picture, spans = _row([10, 10])
    big = np.asarray(
        Image.fromarray(picture, mode="F").resize((picture.shape[1] * 4, 240)), np.float32
    )

    segments = reading.segment_row(big)

    assert [s.box[1] // 4 for s in segments] == pytest.approx([s[0] for s in spans], abs=3)


def test_segment_row_refuses_blank_picture() -> None:
    with pytest.raises(InvalidInput, match="no digit found"):
        reading.segment_row(np.full((40, 200), 0.9, np.float32))
