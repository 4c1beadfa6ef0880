"""``gankit truncation`` (the fidelity/variety trade-off of a generator's truncation trick) and
``gankit invert`` (latents that reproduce real images)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import weights_option


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--thresholds", default="none,2,1,0.5,0.04", show_default=True,
              help="Comma list of truncation thresholds t (none: untruncated).")
@click.option("--n", "n", type=click.IntRange(min=2), default=1000, show_default=True,
              help="Samples per threshold (and real images).")
@click.option("--metrics", default="fid,pr", show_default=True,
              help="Set metrics per threshold (as gankit eval: fid, kid, pr, dc, ...).")
@click.option("--split", type=click.Choice(["train", "test"]), default="test",
              show_default=True, help="The real images compared with.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Latent seed: the same latents at every threshold.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="A folder for truncation.json and truncation.png.")
@weights_option
def truncation(run_dir: Path, thresholds: str, n: int, metrics: str, split: str, seed: int,
               out: Path, weights: str) -> None:
    """Sweep the truncation threshold of RUN_DIR's generator: precision, recall and FID of the
    same latents at each threshold (Brock et al. 2019, the truncation trick)."""
    import torch
    from rich.table import Table

    from .api import load
    from .errors import ConfigError
    from .latent import truncation_sweep, write_truncation_sweep
    from .outputs import check_target, console

    ts: list[float | None] = []
    for s in thresholds.split(","):
        s = s.strip().lower()
        try:
            ts.append(None if s in ("none", "inf") else float(s))
        except ValueError:
            raise ConfigError(f"--thresholds: '{s}' is not a number (or none)") from None
    check_target(out)
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    c = console()
    res = truncation_sweep(run_dir, ts, n=n, seed=seed, metrics=names, split=split,
                           weights=weights,
                           progress=lambda t, r: c.print(f"t={t}: " + ", ".join(
                               f"{k} {v:.4g}" for k, v in r.items()
                               if isinstance(v, float))))
    g = load(run_dir, weights=weights)
    samples = torch.stack([g.sample(8, seed=seed, **({"truncation": t} if t else {}))
                           for t in ts]) if g.model.info.get("is_image") else None
    files = write_truncation_sweep(res, out, samples)
    keys = [k for k in res["rows"][0] if k != "threshold" and isinstance(res["rows"][0][k], float)]
    tab = Table("threshold", *keys)
    for r in res["rows"]:
        tab.add_row("none" if r["threshold"] is None else f"{r['threshold']:g}",
                    *(f"{r[k]:.4g}" for k in keys))
    c.print(tab)
    c.print(f"wrote {', '.join(str(f) for f in files)}")


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--input", "input_", type=click.Path(path_type=Path), required=True,
              help="An image, a folder of images or a .npy/.npz array (the run's image size).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="A folder: NAME.png reconstructions, latents.npy and inversion.csv.")
@click.option("--labels", type=str, default=None,
              help="Conditional models: one class or a comma list (default: try every class).")
@click.option("--steps", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--restarts", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--lr", type=float, default=0.05, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the starting z.")
@weights_option
def invert(run_dir: Path, input_: Path, out: Path, labels: str | None, steps: int,
           restarts: int, lr: float, seed: int, weights: str) -> None:
    """Invert RUN_DIR's generator: for each input image the latent z whose G(z) reproduces it
    best (Adam from several seeded starts; Zhu et al. 2016)."""
    import csv

    import numpy as np

    from .api import load
    from .data.images import save_images
    from .data.inputs import read_inputs
    from .errors import ConfigError
    from .latent import invert as run_inversion
    from .outputs import check_target, console

    if out.suffix:
        raise ConfigError(f"--out {out}: give a folder")
    check_target(out)
    lab = None
    if labels is not None:
        try:
            parts = [int(s) for s in labels.split(",")]
        except ValueError:
            raise ConfigError(f"--labels must be an int or a comma list, got '{labels}'") from None
        lab = parts[0] if len(parts) == 1 else parts
    g = load(run_dir, weights=weights)
    x, names = read_inputs(input_, g.model.info)
    res = run_inversion(g, x, labels=lab, steps=steps, lr=lr, restarts=restarts, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    save_images(res["images"], out, names=names)
    np.save(out / "latents.npy", res["z"].numpy())
    with open(out / "inversion.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "mse", *(["label"] if "labels" in res else [])])
        for i, name in enumerate(names):
            w.writerow([name, f"{float(res['mse'][i]):.6g}",
                        *([int(res["labels"][i])] if "labels" in res else [])])
    console().print(f"inverted {len(names)} images (mean squared error "
                    f"{float(res['mse'].mean()):.4g}); wrote {out}")


def register(cli: click.Group) -> None:
    cli.add_command(truncation)
    cli.add_command(invert)
