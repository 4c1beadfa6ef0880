"""``gankit score``: anomaly scores of images under a trained model that can score (f-AnoGAN,
Schlegl et al. 2019), as CSV, with optional per-pixel residual maps."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import click

from .options import weights_option

__all__ = ["register", "score", "write_maps"]


def write_maps(maps, out: Path, names: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Residual maps ``[N, C, H, W]`` (>= 0) as a ``.npy`` array (raw values) or a folder of
    PNGs named after the inputs, grey level = residual on a fixed scale: 0 black, >= 1 (half
    the [-1, 1] intensity range) white, so maps of different images compare."""
    import numpy as np

    if out.suffix == ".npy":
        np.save(out, maps.numpy())
        return
    from .data.images import save_images

    save_images(maps.clamp(0.0, 1.0) * 2.0 - 1.0, out, names=names)


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--input", "input_", type=click.Path(path_type=Path), required=True,
              help="An image file, a folder of images, or a .npy/.npz array.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write the scores to this CSV file (default: print them).")
@click.option("--maps", type=click.Path(path_type=Path), default=None,
              help="Also write the residual maps |x - G(E(x))|: a folder (one PNG per input, "
                   "same names) or a .npy file.")
@click.option("--kappa", type=float, default=None,
              help="Weight of the feature residual in the score (default: the model's, 1 for "
                   "f-AnoGAN's izi_f score; 0: the image residual alone).")
@weights_option
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
def score(run_dir: Path, input_: Path, out: Path | None, maps: Path | None,
          kappa: float | None, weights: str, batch_size: int) -> None:
    """Anomaly score of each input image (higher = more anomalous) under RUN_DIR's model, as
    CSV rows `name,score`; --maps writes the residual maps."""
    from rich.console import Console

    from .api import load
    from .data.inputs import read_inputs
    from .errors import ConfigError
    from .outputs import check_target

    if out is not None:
        if out.suffix.lower() != ".csv":
            raise ConfigError(f"--out {out}: give a .csv file name")
        check_target(out, file=True)
    if maps is not None:
        if maps.suffix and maps.suffix not in (".npy",):
            raise ConfigError(f"--maps {maps}: give a folder or a .npy file")
        check_target(maps)
    if kappa is not None and kappa < 0:
        raise ConfigError(f"--kappa must be >= 0, got {kappa}")
    g = load(run_dir, weights=weights)
    g.model.require("score")
    x, names = read_inputs(input_, g.model.info)
    opts = {"kappa": kappa} if kappa is not None else {}
    s = g.score(x, seed=0, batch_size=batch_size, **opts)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "score"])
    for n, v in zip(names, s.tolist()):
        w.writerow([n, f"{v:.6g}"])
    con = Console(soft_wrap=True, stderr=out is None)  # stdout stays pure CSV
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(buf.getvalue())
        con.print(f"wrote {len(names)} scores to {out}")
    else:
        click.echo(buf.getvalue(), nl=False)
    if maps is not None:
        write_maps(g.score(x, seed=0, batch_size=batch_size, map=True), maps, names)
        con.print(f"wrote {len(names)} residual maps to {maps}")


def register(cli: click.Group) -> None:
    cli.add_command(score)
