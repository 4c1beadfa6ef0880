"""``gankit export`` (a portable model folder with a model card, optionally ONNX) and the latent
interpolation behind ``gankit sample RUN --interpolate K``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .options import weights_option

__all__ = ["export", "register", "write_interpolation_cli"]


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="The export folder (must not exist, or be empty).")
@weights_option
@click.option("--onnx", "with_onnx", is_flag=True,
              help="Also write model.onnx of the sampling network, checked with ONNX Runtime.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the card's sample grid and of the ONNX check batch.")
def export(run_dir: Path, out: Path, weights: str, with_onnx: bool, seed: int) -> None:
    """Export RUN_DIR's model to a portable folder: safetensors weights, config, model card
    (README.md with a sample grid) and, with --onnx, an ONNX model. gankit.load(OUT),
    `gankit sample OUT` and `gankit translate OUT` read it."""
    from rich.console import Console

    from .export import export_run

    m = export_run(run_dir, out, weights=weights, onnx=with_onnx, seed=seed)
    c = Console(soft_wrap=True)
    c.print(f"exported {m['model']} (step {m['step']}, {m['weights']} weights, "
            f"{len(m['networks'])} networks) to {out}")
    if "onnx" in m:
        ox = m["onnx"]
        c.print(f"onnx: {out / ox['file']} (batch {ox['batch']}); ONNX Runtime vs PyTorch on "
                f"batches of {' and '.join(map(str, ox['checked_batches']))}: max abs diff {ox['max_abs_diff']:.3g} "
                f"(tolerance {ox['tolerance']:g})")
    c.print(f"model card: {out / 'README.md'}")


def write_interpolation_cli(g: Any, out: Path, steps: int, rows: int, seed: int,
                            labels: Any) -> None:
    """``gankit sample --interpolate K``: the grid at ``out`` (.png) and a GIF beside it."""
    from rich.console import Console

    from .interpolate import write_interpolation

    if out.suffix.lower() != ".png":
        out = out.with_suffix(".png") if out.suffix else out / "interpolation.png"
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    png, gif = write_interpolation(g, out, n_rows=rows, steps=steps, seed=seed, labels=labels)
    Console(soft_wrap=True).print(f"wrote a {rows}x{steps} latent interpolation grid to {png} and its "
                    f"animation to {gif}")


def register(cli: click.Group) -> None:
    cli.add_command(export)
