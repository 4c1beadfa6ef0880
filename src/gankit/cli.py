"""The ``gankit`` command. It mirrors the Python API: flags map to config keys, ``--set a.b=c``
overrides any key, unknown keys are rejected. User errors print one line and exit with code 2."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import click

from .errors import GankitError
from .options import weights_option
from .outputs import check_target, write_output
from .outputs import console as _console


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gankit")
def cli() -> None:
    """Train, sample, evaluate and diagnose generative adversarial networks."""


@cli.command()
@click.argument("model")
@click.option("--data", "data", default=None, help="Built-in name (gankit datasets), image folder or .zip, prepared folder (gankit prepare), .npy/.npz, or NIfTI/DICOM volumes (a file or folder; see data.window).")
@click.option("--steps", type=int, default=None, help="Generator steps (train.steps).")
@click.option("--batch-size", type=int, default=None, help="Global batch size (train.batch_size).")
@click.option("--seed", type=int, default=None, help="The one seed that drives the run (train.seed).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run directory (default runs/MODEL-DATA-TIME).")
@click.option("--config", "config", type=click.Path(path_type=Path), default=None, help="YAML/JSON config file.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. --set optim.lr_d=4e-4.")
@click.option("--eval-every", type=int, default=None, help="Evaluate every N steps (train.eval_every); best weights kept in best/.")
@click.option("--init-from", "init_from", type=click.Path(path_type=Path), default=None,
              help="Start from another run's networks (train.init_from); freeze some with --set train.freeze=[G].")
@click.option("--image-size", type=int, default=None,
              help="Resize images to N x N (data.image_size; default: chosen from the data).")
@click.option("--progress/--no-progress", default=True, help="Show the progress bar.")
@click.option("--overwrite", is_flag=True,
              help="Reuse an --out that holds a run with no checkpoint (one that failed or was "
                   "stopped early); a run with checkpoints is never overwritten.")
@click.option("--devices", type=int, default=None,
              help="Train in N processes (one per GPU; on CPU, N gloo processes) with data "
                   "parallelism; only the first prints.")
def train(model: str, data: str | None, steps: int | None, batch_size: int | None,
          seed: int | None, out: Path | None, config: Path | None, sets: tuple[str, ...],
          eval_every: int | None, init_from: Path | None, image_size: int | None,
          progress: bool, overwrite: bool, devices: int | None) -> None:
    """Train MODEL (see `gankit models`) on --data."""
    from .api import train as api_train
    from .config import load_config_file

    cfg_layer = load_config_file(config) if config else None
    if _launched(devices):
        return
    if data is None:
        data = ((cfg_layer or {}).get("data") or {}).get("name") or "mnist5k"
    over = list(sets) + ([f"train.eval_every={eval_every}"] if eval_every is not None else [])
    over += [f"data.image_size={image_size}"] if image_size is not None else []
    with _interruptible():
        run = api_train(model, data, steps=steps, batch_size=batch_size, seed=seed, out=out,
                        config=cfg_layer, overrides=over, progress=progress,
                        init_from_run=init_from, overwrite=overwrite)
    _done(run)


_ARGV: list[str] = []  # this invocation's arguments (for --devices to relaunch them)


def _launched(devices: int | None) -> bool:
    """``--devices N`` (N > 1) outside a launch: run this command in N processes, exit with
    their code. False when this process should do the work itself."""
    if devices is None:
        return False
    from .launch import check_devices, launch

    check_devices(devices)
    if devices == 1 or "WORLD_SIZE" in os.environ:
        return False
    sys.exit(launch(_ARGV, devices))


@contextlib.contextmanager
def _interruptible():
    """Ctrl-C during training: say truthfully what was saved and how to continue, exit 130."""
    from .errors import Interrupted

    try:
        yield
    except Interrupted as e:
        click.echo(e.message(), err=True)
        sys.exit(130)


def _done(run) -> None:
    if not run.trainer.dist.is_main:
        return
    last = next((r for r in reversed(run.metrics()) if "it_s" in r), {})
    c = _console()
    c.print(f"[green]done[/green]: {run.run_dir}  (step {run.trainer.step}, "
            f"{last.get('it_s', 0):.1f} it/s)")
    samples = sorted((run.run_dir / "samples").glob("*.png"))
    if samples:
        c.print(f"samples: {samples[-1]}   curves: {run.run_dir / 'curves.png'}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--steps", type=int, default=None, help="New total number of steps.")
@click.option("--data", "data", default=None,
              help="The run's data at a new place (same shape); recorded for later resumes.")
@click.option("--progress/--no-progress", default=True)
@click.option("--devices", type=int, default=None,
              help="Continue in N processes (may differ from the run's: same weights, optimizer "
                   "and data position, not bit-identical).")
def resume(run_dir: Path, steps: int | None, data: str | None, progress: bool,
           devices: int | None) -> None:
    """Continue RUN_DIR from its newest intact checkpoint (bit-identical on CPU with the same
    number of processes). Nothing is written unless everything checks out."""
    from .api import resume as api_resume

    if _launched(devices):
        return
    with _interruptible():
        run = api_resume(run_dir, steps=steps, progress=progress, data=data)
    _done(run)


def _sample_options(items: tuple[str, ...]) -> dict:
    """``("steps=50", ...)`` -> ``{"steps": 50}`` (values parsed as in ``--set``)."""
    from .config import parse_value
    from .errors import ConfigError

    out = {}
    for item in items:
        key, eq, val = item.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ConfigError(f"--option expects KEY=VALUE with a plain key, got '{item}'")
        out[key.strip()] = parse_value(val)
    return out


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--n", "n", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("samples.png"), show_default=True,
              help="A .png grid, a folder (one PNG per image) or a .npy file.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--labels", type=str, default=None, help="Class for conditional models: one int or a comma list.")
@click.option("--truncation", type=float, default=None, help="GANs: redraw latent components with |z| above this.")
@weights_option
@click.option("--interpolate", type=int, default=None, metavar="K",
              help="Write a latent interpolation grid (K slerp steps per row) to --out (.png) and a GIF beside it.")
@click.option("--rows", type=int, default=4, show_default=True, help="With --interpolate: rows (pairs of seeds).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A sampling option of the model (repeatable), e.g. a diffusion model's "
                   "steps=50; the model refuses options it does not have.")
def sample(run_dir: Path, n: int, out: Path, seed: int, labels: str | None,
           truncation: float | None, weights: str, interpolate: int | None, rows: int,
           options: tuple[str, ...]) -> None:
    """Draw N samples from RUN_DIR's model (RUN_DIR may be a `gankit export` folder)."""
    from .api import load
    from .errors import ConfigError

    check_target(out)
    g = load(run_dir, weights=weights)
    g.model.require("sample")
    lab = None
    if labels is not None:
        try:
            parts = [int(s) for s in labels.split(",")]
        except ValueError:
            raise ConfigError(f"--labels must be an int or a comma list of ints, got '{labels}'") from None
        lab = parts[0] if len(parts) == 1 else parts
    if interpolate is not None:
        from .commands_share import write_interpolation_cli

        write_interpolation_cli(g, out, interpolate, rows, seed, lab)
        return
    opts = {"truncation": truncation} if truncation is not None else {}
    opts |= _sample_options(options)
    x = g.sample(n, seed=seed, labels=lab, **opts)
    write_output(x, out, n)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--input", "input_", type=click.Path(path_type=Path), required=True,
              help="An image file, a folder of images, or a .npy/.npz array of the input domain.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="A folder (one PNG per input, same names), a .png grid or a .npy file.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of any randomness (pix2pix's dropout).")
@weights_option
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--direction", type=click.Choice(["AB", "BA"]), default=None,
              help="AB: domain A -> B (the default); BA: B -> A, for two-way models (CycleGAN).")
def translate(run_dir: Path, input_: Path, out: Path, seed: int, weights: str,
              batch_size: int, direction: str | None) -> None:
    """Translate images with RUN_DIR's model (pix2pix, CycleGAN, ...)."""
    import inspect

    from .api import load
    from .data.inputs import read_inputs
    from .errors import ConfigError

    check_target(out)
    g = load(run_dir, weights=weights)
    g.model.require("translate")
    two_way = "direction" in inspect.signature(g.model.translate).parameters
    if direction == "BA" and not two_way:
        raise ConfigError(f"model '{g.model.name}' translates one way (A -> B); --direction BA "
                          f"needs a two-way model such as cyclegan")
    info = g.model.info
    if direction == "BA":  # the inputs are of domain B: the target domain's shape
        info = {**info, "a_shape": info["shape"]}
    x, names = read_inputs(input_, info)
    options = {"direction": direction} if direction and two_way else {}
    y = g.translate(x, seed=seed, batch_size=batch_size, **options)
    write_output(y, out, len(y), names if out.suffix not in (".png", ".npy") else None)


@cli.command()
@click.argument("name", required=False)
@click.option("--to", "to", type=click.Path(path_type=Path), default=None,
              help="Write dataset NAME as an image folder there (class sub-folders; A/ and B/ "
                   "for paired and unpaired data), the layouts --data reads.")
@click.option("--n", "n", type=int, default=None, help="Only the first N images.")
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True)
def datasets(name: str | None, to: Path | None, n: int | None, split: str) -> None:
    """List the built-in datasets, or write one out as a folder: gankit datasets mnist5k --to DIR.

    Any image folder, zip of images, paired:DIR, unpaired:DIR or .npy/.npz also works as --data.
    """
    from rich.table import Table

    from .data import DATASETS
    from .errors import ConfigError

    if name is not None or to is not None:
        if name is None or to is None:
            raise ConfigError("write a dataset out with both a name and a folder: "
                              "gankit datasets mnist5k --to ./images")
        if name not in DATASETS:
            from .registry import did_you_mean

            raise ConfigError(f"unknown dataset '{name}'{did_you_mean(name, DATASETS.names())}")
        from .data import load_data
        from .data.folders import write_folder

        counts = write_folder(load_data(name), to, n=n, split=split)
        parts = ", ".join(f"{v} in {k}/" if k != "." else str(v) for k, v in counts.items())
        _console().print(f"wrote {sum(counts.values())} images to {to} ({parts})")
        return
    t = Table("dataset", "kind", "description")
    for e in DATASETS:
        if e.meta.get("listed", True):  # variants (mnist-anomaly-K) are named by their family
            t.add_row(e.name, e.meta.get("kind", ""), e.description)
    _console().print(t)
    _console().print("Also: a folder of images or a .zip of one (class sub-folders become "
                     "labels); a folder written by gankit prepare (uint8 shards); paired:DIR "
                     "(DIR/A and DIR/B with matching names, or side-by-side A|B images); "
                     "unpaired:DIR (DIR/A and DIR/B); a .npy/.npz file.")


@cli.command()
@click.option("--markdown", is_flag=True, help="Print a Markdown table (as in the README).")
def models(markdown: bool) -> None:
    """List the registered models with what a trained one can do."""
    from rich.table import Table

    from .models import MODELS

    rows = [(e.name, ", ".join(sorted(e.obj.capabilities)), e.description) for e in MODELS]
    if markdown:
        click.echo("| model | can | what |\n|---|---|---|")
        for name, can, what in rows:
            click.echo(f"| `{name}` | {can} | {what} |")
        return
    t = Table("model", "can", "description")
    for row in rows:
        t.add_row(*row)
    _console().print(t)


@cli.command()
def losses() -> None:
    """List the registered adversarial losses and regularisers."""
    from rich.table import Table

    from .registry import LOSSES, REGULARIZERS

    t = Table("name", "kind", "description")
    for e in LOSSES:
        t.add_row(e.name, "loss (loss.name)", e.description)
    for e in REGULARIZERS:
        t.add_row(e.name, "penalty (loss.gp)", e.description)
    _console().print(t)


@cli.command()
@click.argument("name", required=False)
@click.option("--out", type=click.Path(path_type=Path), default=Path("theory"), show_default=True,
              help="Folder for NAME.png and NAME.json.")
@click.option("--all", "run_all", is_flag=True, help="Run every experiment.")
def theory(name: str | None, out: Path, run_all: bool) -> None:
    """Reproduce a worked argument of the GAN literature with its numbers and a figure (omit NAME to list them)."""
    from rich.table import Table

    from . import theory as lab

    if name is None and not run_all:
        t = Table("experiment", "what it shows")
        for e in lab.EXPERIMENTS:
            t.add_row(e.name, e.description)
        _console().print(t)
        return
    for n in lab.names() if run_all else [name]:
        res = lab.run(n, out)
        _console().print(f"[bold]{n}[/bold]: {res.get('summary') or res.get('explanation', '')}")
        nums = res.get("numbers") or {}
        for k, v in list(nums.items())[:8]:
            if isinstance(v, (int, float)):
                _console().print(f"  {k} = {v:.6g}")
        _console().print(f"  -> {out / (n + '.png')}, {out / (n + '.json')}")


def _parse_list(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


@cli.command(name="eval")
@click.argument("run_dir", type=click.Path(path_type=Path), required=False)
@click.option("--metrics", default=None, help="Comma list of fid,fid-inf,kid,is,pr,dc,modes,stacked-modes,mem (any two sets), psnr,ssim,mae,ncc,dice,jaccard (each output against its target: translating runs, or --real/--fake of equal size), auroc (runs that score), cas,aug (runs of conditional models); default by data.")
@click.option("--n", "n", type=click.IntRange(min=1), default=5000, show_default=True, help="Generated (and at most real) samples.")
@click.option("--features", default=None, help="raw, random-cnn, lenet-mnist, inception-v3 (default by data).")
@click.option("--inception-weights", type=click.Path(path_type=Path), default=None,
              help="The FID Inception weights file (or set GANKIT_INCEPTION_WEIGHTS); never downloaded.")
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--real", type=str, default=None, help="With --fake: a dataset name, image folder or .npy/.npz.")
@click.option("--fake", type=str, default=None, help="With --real: image folder or .npy/.npz of samples.")
@click.option("--image-size", type=int, default=None, help="Resize both sets (with --real/--fake).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Where to write eval.json.")
@weights_option
def eval_cmd(run_dir: Path | None, metrics: str | None, n: int, features: str | None,
             inception_weights: Path | None, split: str, seed: int, real: str | None,
             fake: str | None, image_size: int | None, out: Path | None, weights: str) -> None:
    """Evaluate RUN_DIR's generator, or two sample sets given with --real and --fake."""
    import json

    from .api import evaluate_run
    from .errors import ConfigError
    from .metrics.evaluate import evaluate_sets

    opts = {"path": str(inception_weights)} if inception_weights else None
    check_target(out if out is not None else (run_dir or Path(".")) / "eval.json", file=True)
    if run_dir is not None:
        if real or fake:
            raise ConfigError("give either RUN_DIR or --real/--fake, not both")
        res = evaluate_run(run_dir, metrics=_parse_list(metrics), n=n, features=features,
                           feature_options=opts, split=split, seed=seed, weights=weights,
                           write=out is None)
        dest = out or run_dir / "eval.json"
    else:
        if not (real and fake):
            raise ConfigError("give a RUN_DIR, or both --real and --fake")
        from .data import load_data

        r = load_data(real, image_size=image_size)
        f = load_data(fake, image_size=image_size)
        from .metrics.evaluate import _subsample  # reads only those rows of a streamed set

        rx, fx = _subsample(r.x, n, seed), _subsample(f.x, n, seed)
        res = evaluate_sets(rx, fx, metrics=_parse_list(metrics), features=features,
                            feature_options=opts, dataset=r.name, info=r.info, seed=seed)
        res["protocol"] |= {"real": real, "fake": fake}
        dest = out or Path("eval.json")
    if out is not None or run_dir is None:
        dest.write_text(json.dumps(res, indent=2) + "\n")
    _print_eval(res)
    _console().print(f"wrote {dest}")


def _print_eval(res: dict) -> None:
    from rich.table import Table

    p = res["protocol"]
    feats = p.get("features") or {"extractor": "-", "checksum": "-"}
    t = Table("metric", "value", title=f"features: {feats['extractor']} "
              f"({feats['checksum'][:12]}), n_real={p.get('n_real', '-')}, "
              f"n_fake={p.get('n_fake', '-')}, seed={p.get('seed', '-')}")
    for k, v in res["results"].items():
        t.add_row(k, f"{v:.6g}" if isinstance(v, float) else str(v))
    _console().print(t)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary rows as JSON instead of a table.")
def doctor(run_dir: Path, as_json: bool) -> None:
    """Re-diagnose RUN_DIR from its metrics.jsonl, probes.jsonl and diagnostics.jsonl."""
    import json

    from .doctor import analyse_run, print_report

    res = analyse_run(run_dir)
    if as_json:
        click.echo(json.dumps(res["rows"], indent=2, default=str))
    else:
        print_report(res, _console())


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="The HTML file (default RUN_DIR/report.html).")
def report(run_dir: Path, out: Path | None) -> None:
    """Write one self-contained HTML report of RUN_DIR (curves, samples, diagnoses, protocol)."""
    from .report import write_report

    check_target(out if out is not None else run_dir / "report.html", file=True)
    path = write_report(run_dir, out)
    _console().print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    """Entry point. Every way out is one line on stderr at most: user errors (bad input, an
    unwritable path, a full disk) -> ``error: ...``, exit code 2; Ctrl-C -> what was saved,
    exit 130; a bug -> one line naming it, exit 1 (``GANKIT_DEBUG=1`` shows the traceback).
    Under a multi-process launch only rank 0 writes to stdout."""
    global _ARGV
    _ARGV = list(argv) if argv is not None else sys.argv[1:]
    if os.environ.get("RANK", "0") != "0" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (only rank 0 prints)
    try:
        ok = False
        try:
            cli.main(args=argv, prog_name="gankit", standalone_mode=False)
            ok = True
        finally:
            if "WORLD_SIZE" in os.environ:
                from .train.distributed import shutdown

                shutdown(ok)
    except GankitError as e:
        click.echo(f"error: {_one_line(e)}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:
        cmd = e.ctx.command_path if e.ctx is not None else "gankit"
        click.echo(f"error: {_one_line(e.format_message())} (see: {cmd} --help)", err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"error: {_one_line(e.format_message())}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as e:  # an unwritable or full disk, a path that is not what it should be
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        click.echo(f"error: cannot read or write{where}: {e.strerror or e}", err=True)
        sys.exit(2)
    except Exception as e:  # a bug: still one line, the traceback on request
        if os.environ.get("GANKIT_DEBUG"):
            raise
        click.echo(f"error: internal error {type(e).__name__}: {_one_line(str(e))} (a bug in "
                   f"gankit; GANKIT_DEBUG=1 shows the traceback)", err=True)
        sys.exit(1)


def _one_line(text: object) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return " ".join(lines)[:500] if lines else type(text).__name__


# Commands that live in modules of their own, one per area.
from .commands_attribute import register as _register_attribute  # attribute
from .commands_bench import register as _register_bench  # bench
from .commands_data import register as _register_data  # prepare
from .commands_latent import register as _register_latent  # truncation, invert
from .commands_score import register as _register_score  # score
from .commands_segment import register as _register_segment  # segment
from .commands_share import register as _register_share  # export
from .commands_track import register as _register_track  # runs, compare

for _register in (_register_attribute, _register_bench, _register_data, _register_latent,
                  _register_score, _register_segment, _register_share, _register_track):
    _register(cli)

if __name__ == "__main__":
    main()
