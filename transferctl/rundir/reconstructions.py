"""`reconstructions.png`: input images beside what the autoencoder makes of them.

One column per image; rows: the input, the noisy input the encoder saw (denoising only), the
reconstruction. Matplotlib is imported inside the functions and drawn with its Agg canvas (no
display, no pyplot global state), as the other pictures of a run are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transferctl.errors import printable
from transferctl.rundir import layout as rundir

FILE_NAME = "reconstructions.png"
INCHES_PER_IMAGE = 1.25


def reconstructions_figure(
    inputs: np.ndarray,
    reconstructions: np.ndarray,
    noisy: np.ndarray | None = None,
    title: str = "Reconstructions",
) -> Any:
    """A matplotlib `Figure`: a grid of images, one column each, a row per kind.

    Example:
        figure = reconstructions_figure(inputs, outputs, title="val: mse 0.012")
        figure.savefig("reconstructions.png")

    Args:
        inputs: images [N, H, W, 3] in [0, 1].
        reconstructions: the autoencoder's outputs for them, same shape.
        noisy: the inputs with noise, as the encoder saw them; None draws no such row.
        title: drawn above the grid.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if inputs.shape != reconstructions.shape:
        raise ValueError(
            "`reconstructions` must have the shape of `inputs`. Received: "
            f"inputs.shape={inputs.shape}, reconstructions.shape={reconstructions.shape}"
        )
    rows = [("input", inputs)]
    if noisy is not None:
        rows.append(("with noise", noisy))
    rows.append(("reconstruction", reconstructions))
    columns = max(len(inputs), 1)
    figure = Figure(
        figsize=(columns * INCHES_PER_IMAGE + 0.6, len(rows) * INCHES_PER_IMAGE + 0.5),
        dpi=110,
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    figure.suptitle(printable(title), fontsize=10)  # no control glyphs
    grid = figure.subplots(len(rows), columns, squeeze=False)
    for row, (label, images) in enumerate(rows):
        for column in range(columns):
            axes = grid[row][column]
            if column < len(images):
                axes.imshow(np.clip(images[column], 0.0, 1.0), interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            for spine in axes.spines.values():
                spine.set_visible(False)
        grid[row][0].set_ylabel(label, fontsize=9)
    return figure


def save_reconstructions(
    path: Path,
    inputs: np.ndarray,
    reconstructions: np.ndarray,
    noisy: np.ndarray | None = None,
    title: str = "Reconstructions",
) -> None:
    """Draw `reconstructions_figure` into a PNG file at `path`, atomically."""
    figure = reconstructions_figure(inputs, reconstructions, noisy, title)
    with rundir.atomic_path(path, suffix=".png") as temporary:
        figure.savefig(str(temporary), format="png")
