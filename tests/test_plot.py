"""Training plots: what a reader sees on the first checkpoint must already make sense."""

from __future__ import annotations

import numpy as np

from evafusion_core.plot import plot_panels


def test_a_single_evaluation_is_drawn_in_the_middle_of_its_panel():
    img = np.asarray(plot_panels({"val": {"PLCC": ([500], [0.8])}}, width=360, height=200))
    coloured = np.argwhere((img[..., 2] > 150) & (img[..., 0] < 100))  # the first line colour is blue
    assert len(coloured), "the point was not drawn"
    assert abs(coloured[:, 1].mean() - 180) < 30  # centred, not stuck on the left edge at step 500
