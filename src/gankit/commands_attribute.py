"""``gankit attribute``: attribution maps of a trained model (VA-GAN, Baumgartner et al. 2018)
for an image, a folder of images or an array, written as a PNG grid, a folder of PNGs or .npy."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from .options import weights_option

__all__ = ["attribute", "displayable", "register"]


def displayable(maps: torch.Tensor) -> torch.Tensor:
    """Maps scaled for PNG output: each map divided by its largest absolute value, so it spans
    at most [-1, 1] and 0 stays mid-grey (an all-zero map stays zero)."""
    peak = maps.abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, *[1] * (maps.dim() - 1))
    return maps / peak


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--input", "input_", type=click.Path(path_type=Path), required=True,
              help="An image file, a folder of images, or a .npy/.npz array.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="A folder (one PNG per input, same names), a .png grid or a .npy file of the "
                   "raw maps. PNG maps are scaled per map by their largest absolute value "
                   "(0 is mid-grey).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of any randomness.")
@weights_option
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
def attribute(run_dir: Path, input_: Path, out: Path, seed: int, weights: str,
              batch_size: int) -> None:
    """Attribution maps of RUN_DIR's model for --input images (VA-GAN: M(x), the change that
    makes each image look healthy; the disease effect is its negation)."""
    from .api import load
    from .data.inputs import read_inputs
    from .outputs import check_target, write_output

    check_target(out)
    g = load(run_dir, weights=weights)
    g.model.require("attribute")
    x, names = read_inputs(input_, g.model.info)
    maps = g.attribute(x, seed=seed, batch_size=batch_size)
    as_file = out.suffix in (".png", ".npy")
    write_output(maps if out.suffix == ".npy" else displayable(maps), out, len(maps),
                  None if as_file else names)


def register(cli: click.Group) -> None:
    cli.add_command(attribute)
