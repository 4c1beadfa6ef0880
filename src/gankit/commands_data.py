"""``gankit prepare``: decode a folder (or zip) of images once into uint8 shards.

The idea of StyleGAN2-ADA's ``dataset_tool.py`` (Karras et al. 2020): decoding, cropping and
resizing happen once; training then reads fixed-size uint8 rows (see
:mod:`gankit.data.store` for the format) and ``gankit train MODEL --data PREPARED`` streams
them when the set is large.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click


def prepare_images(src: Path, out: Path, size: int | None = None, channels: int | None = None,
                   progress: bool = False) -> dict:
    """Write the images of the folder or zip ``src`` (class sub-folders become labels) to the
    prepared folder ``out``, centre-cropped and resized to ``size`` (default: chosen from the
    data among the sizes the convolutional families take). Returns the prepared set's meta."""
    import numpy as np

    from .data.decode import header_channels, image_headers, scan_images
    from .data.files import _check_size_options
    from .data.sizes import STAGED
    from .data.store import FileStore, write_prepared

    src = Path(src).expanduser()
    _check_size_options(size, channels)
    files, labels, classes = scan_images(src)
    heads = image_headers(files)
    if size is None:
        shorts = sorted(min(w, h) for w, h, _ in heads)
        size = STAGED.choose(shorts[len(shorts) // 2])
    c = channels or header_channels(heads)
    store = FileStore(files, c, size, str(src))
    y = np.asarray(labels, dtype=np.int64) if labels is not None else None
    chunk = 256

    def batches():
        starts = range(0, len(files), chunk)
        if progress:
            from rich.progress import track

            starts = track(starts, description=f"Preparing {len(files)} images",
                           transient=True)
        for i in starts:
            idx = np.arange(i, min(i + chunk, len(files)), dtype=np.int64)
            yield store.read(idx), (y[idx] if y is not None else None)

    return write_prepared(out, batches(), size=size, channels=c,
                          classes=classes if labels is not None else None,
                          source=str(src.resolve()))


@click.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="The prepared folder to write (must not exist or be empty).")
@click.option("--size", type=int, default=None,
              help="Side of the square images (centre crop + Lanczos resize); default: chosen "
                   "from the data.")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None,
              help="Force grayscale (1) or RGB (3); default: 1 only if every image is grey.")
def prepare(src: Path, out: Path, size: int | None, channels: str | None) -> None:
    """Decode the images of folder (or .zip) SRC once into uint8 shards in --out; train on them
    with `gankit train MODEL --data OUT` (streamed when large)."""
    t0 = time.time()
    meta = prepare_images(src, out, size, int(channels) if channels else None,
                          progress=sys.stderr.isatty())
    k = len(meta["classes"] or [])
    click.echo(f"wrote {meta['count']} images ({meta['channels']}x{meta['size']}x{meta['size']} "
               f"uint8{f', {k} classes' if k else ''}) in {len(meta['shards'])} shard(s) to "
               f"{out} in {time.time() - t0:.1f}s; train with: gankit train MODEL --data {out}")


def register(cli: click.Group) -> None:
    cli.add_command(prepare)
