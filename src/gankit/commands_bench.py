"""``gankit bench``: train a set of generative models on one dataset under one time budget each
and write a leaderboard (:mod:`gankit.bench`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

__all__ = ["bench", "register"]

#: Keys of a bench config file (YAML or JSON) and the flags they stand for.
CONFIG_KEYS = ("data", "models", "budget", "budget_kind", "seeds", "max_steps", "n", "nll_n",
               "set")


def _read_config(path: Path) -> dict[str, Any]:
    """A bench config (YAML or JSON: a mapping of :data:`CONFIG_KEYS`)."""
    import yaml

    from .errors import ConfigError

    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read as text ({e})") from None
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{path}: not valid YAML/JSON ({first})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a bench config is a mapping with keys "
                          f"{', '.join(CONFIG_KEYS)}")
    unknown = sorted(set(raw) - set(CONFIG_KEYS))
    if unknown:
        from .registry import did_you_mean

        raise ConfigError(f"{path}: unknown bench key '{unknown[0]}'"
                          f"{did_you_mean(unknown[0], list(CONFIG_KEYS))}; keys: "
                          f"{', '.join(CONFIG_KEYS)}")
    return raw


@click.command()
@click.option("--data", default=None, help="The dataset (a built-in such as mnist5k, ring8).")
@click.option("--models", default=None,
              help="Comma-separated models, e.g. dcgan,vae,wgan-gp (each must sample).")
@click.option("--budget", default=None,
              help="Training time per (model, seed): 120s, 2m, 1.5h [default: 120s].")
@click.option("--budget-kind", type=click.Choice(["wall", "cpu"]), default=None,
              help="Count wall-clock time or this process's CPU time [default: wall].")
@click.option("--seeds", default=None, help="Comma-separated seeds [default: 0].")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench"),
              show_default=True, help="The bench folder; an existing one is continued.")
@click.option("--set", "sets", multiple=True,
              help="MODEL:key=value for one model, key=value for all: config keys "
                   "(model.width=32), or sample.OPTION / log_prob.OPTION (vae:log_prob.k=100).")
@click.option("--config", "config", type=click.Path(path_type=Path), default=None,
              help="A YAML/JSON bench config with keys " + ", ".join(CONFIG_KEYS) + " (flags "
                   "win).")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Cap on the steps of each training [default: no cap in practice].")
@click.option("--n", "n", type=click.IntRange(min=10), default=None,
              help="Samples (and test examples) for the sample metrics and Parzen "
                   "[default: 1000].")
@click.option("--nll-n", type=click.IntRange(min=1), default=None,
              help="Test examples for the held-out likelihood [default: 1000].")
def bench(data: str | None, models: str | None, budget: str | None, budget_kind: str | None,
          seeds: str | None, out: Path, sets: tuple[str, ...], config: Path | None,
          max_steps: int | None, n: int | None, nll_n: int | None) -> None:
    """Train each model (per seed) for one time budget, evaluate all with one protocol (FID/KID,
    precision/recall, density/coverage, modes, held-out NLL, Parzen, sharpness, cost) and
    write OUT/leaderboard.md, OUT/leaderboard.html and OUT/bench.json."""
    from .bench import (
        DEFAULT_MAX_STEPS,
        THEIS_CAVEAT,
        BenchSpec,
        parse_budget,
        parse_seeds,
        parse_sets,
        run_bench,
    )
    from .errors import ConfigError
    from .outputs import console

    cfg = _read_config(config) if config is not None else {}
    data = data or cfg.get("data")
    if not data:
        raise ConfigError("gankit bench needs --data (e.g. --data mnist5k)")
    mlist = [m.strip() for m in models.split(",") if m.strip()] if models is not None else \
        [str(m) for m in cfg.get("models") or []]
    if not mlist:
        raise ConfigError("gankit bench needs --models (e.g. --models dcgan,vae)")
    per = parse_sets(cfg.get("set"), mlist)
    for m, extra in parse_sets(list(sets), mlist).items():
        per[m] += extra
    spec = BenchSpec(data=data, models=mlist,
                     seeds=parse_seeds(seeds if seeds is not None else cfg.get("seeds", "0")),
                     budget=parse_budget(budget if budget is not None else cfg.get("budget",
                                                                                   "120s")),
                     budget_kind=budget_kind or cfg.get("budget_kind", "wall"),
                     max_steps=max_steps or cfg.get("max_steps", DEFAULT_MAX_STEPS),
                     n=n or cfg.get("n", 1000), nll_n=nll_n or cfg.get("nll_n", 1000), sets=per)
    con = console()
    run_bench(spec, out, say=con.print)
    con.print(f"wrote {out / 'leaderboard.md'}, {out / 'leaderboard.html'} and "
              f"{out / 'bench.json'}")
    con.print(f"note: Parzen log-likelihoods: {THEIS_CAVEAT}")


def register(cli: click.Group) -> None:
    cli.add_command(bench)
