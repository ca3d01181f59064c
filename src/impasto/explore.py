"""Layer exploration, as in Gatys et al.'s figures: the content reconstructed from each block
of the network (relu1_1 ... relu5_1 for VGG), and textures synthesised from growing sets of
style layers (relu1_1; relu1_1 + relu2_1; ...). Built from the cells of ``sweep``.
"""
from __future__ import annotations

from pathlib import Path

from . import sweep
from .config import Config

def blocks(model: str) -> list[str]:
    """One layer per block of ``model``, shallow to deep: its default style layers."""
    return list(Config.for_task("texture", model=model).with_model_layers().style_layers)


def _for(task: str, options: dict) -> dict:
    known = sweep.known_fields(task)
    return {k: v for k, v in options.items() if k in known}


def cells(options: dict, layers: list[str]) -> tuple[list, list]:
    """(reconstruction cells, texture cells) for ``layers``, with the user's ``options``."""
    recon = [sweep.Cell(f"reconstruct_{layer}", "reconstruct",
                        {**_for("reconstruct", options), "content_layers": [layer]},
                        label=layer, col=i + 1)
             for i, layer in enumerate(layers)]
    textures = []
    for k in range(1, len(layers) + 1):
        label = layers[0] if k == 1 else f"{layers[0]} ... {layers[k - 1]} ({k} layers)"
        textures.append(sweep.Cell(f"texture_{k}_{layers[k - 1]}", "texture",
                                   {**_for("texture", options), "style_layers": layers[:k]},
                                   label=label, col=k))
    return recon, textures


def figure(source, source_label: str, row: list, outdir: Path, title: str, tile: int):
    """One row: the source image, then each cell's image with its label and loss."""
    from . import figures
    tiles = [figures.Tile(source, (source_label,))]
    tiles += [figures.Tile(sweep.load_image(c, outdir), sweep.tile_lines(c)) for c in row]
    return figures.contact_sheet([tiles], tile=tile, title=title)
