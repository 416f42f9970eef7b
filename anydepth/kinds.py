"""What the numbers in a raw depth map mean.

Raw depth is data: every map carries one of these kinds so that a later step (normalisation to a
control image, export, geometry) never has to guess whether larger means nearer or farther.
"""

from __future__ import annotations

from typing import Literal

DepthKind = Literal["disparity", "metric_depth", "depth"]

DISPARITY: DepthKind = "disparity"
"""Relative inverse depth (V1/V2 relative heads): larger = nearer, no unit, arbitrary scale and shift."""

METRIC_DEPTH: DepthKind = "metric_depth"
"""Distance in metres (V2 metric heads): larger = farther."""

DEPTH: DepthKind = "depth"
"""Relative depth (Depth Anything 3): larger = farther, arbitrary scale."""

ALL_KINDS: tuple[DepthKind, ...] = (DISPARITY, METRIC_DEPTH, DEPTH)

UNITS: dict[str, str] = {DISPARITY: "relative", METRIC_DEPTH: "metres", DEPTH: "relative"}


def check_kind(kind: str) -> DepthKind:
    """Return ``kind`` if it is a known depth kind, else raise a ValueError that lists the known ones."""
    if kind not in ALL_KINDS:
        raise ValueError(f"unknown depth kind {kind!r}; expected one of {', '.join(ALL_KINDS)}")
    return kind  # type: ignore[return-value]
