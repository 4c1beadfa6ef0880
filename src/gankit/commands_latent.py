"""``gankit truncation``: the fidelity/variety trade-off of a generator's truncation trick."""

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


def register(cli: click.Group) -> None:
    cli.add_command(truncation)
