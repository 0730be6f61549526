"""The layer map's extent (report/layermap.py): robust to outliers, clipping only them."""

from __future__ import annotations

import base64

import numpy as np

from nnsig_core.report.layermap import GRID, _bounds, encode_xy

NO_CENTRES = np.zeros((0, 2))


def beyond(points: np.ndarray, bounds: list[float]) -> np.ndarray:
    x0, x1, y0, y1 = bounds
    return ((points[:, 0] < x0) | (points[:, 0] > x1) | (points[:, 1] < y0) | (points[:, 1] > y1))


def on_border(points: np.ndarray, bounds: list[float]) -> np.ndarray:
    q = np.frombuffer(base64.b64decode(encode_xy(points, bounds)), dtype="<u2").reshape(-1, 2)
    return ((q == 0) | (q == GRID)).any(axis=1)


def test_the_extent_covers_the_tails_of_a_spread():
    """No point of a normal spread is clipped (the central 99% alone left about 15 of
    2,000 out, drawn on the border as if they were outliers)."""
    for seed in range(10):
        pts = np.random.default_rng(seed).normal(size=(2000, 2)) * [3.0, 1.0] + [5, -2]
        b = _bounds([pts[:1500], pts[1500:]], NO_CENTRES)
        assert not beyond(pts, b).any(), seed
        assert not on_border(pts, b).any(), seed


def test_the_extent_leaves_out_far_outliers_and_they_go_on_the_border():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(2000, 2))
    far = np.array([[60.0, 0.0], [0.0, -80.0], [50.0, 50.0]])
    b = _bounds([np.vstack([pts, far])], NO_CENTRES)
    assert b[1] - b[0] < 12 and b[3] - b[2] < 12  # not stretched 10 times by three points
    assert beyond(far, b).all() and not beyond(pts, b).any()
    assert on_border(far, b).all()
    # A point just past the tails is covered, one a whole spread away is not.
    near = np.array([[4.5, 0.0]])
    b = _bounds([np.vstack([pts, near, far])], NO_CENTRES)
    assert not beyond(near, b).any() and beyond(far, b).all()


def test_few_points_and_the_centres_are_always_inside():
    rng = np.random.default_rng(1)
    pts = np.vstack([rng.normal(size=(150, 2)), [[40.0, 40.0]]])  # under 200: no outliers
    centres = np.array([[-30.0, 5.0]])
    b = _bounds([pts], centres)
    assert not beyond(pts, b).any() and not beyond(centres, b).any()
    b = _bounds([rng.normal(size=(3000, 2))], centres * 10)
    assert not beyond(centres * 10, b).any()
