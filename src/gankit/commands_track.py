"""``gankit runs`` and ``gankit compare``: many runs at once (gankit.runs)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("folder", type=click.Path(path_type=Path), default=Path("runs"), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def runs(folder: Path, as_json: bool) -> None:
    """List the runs under FOLDER (default ./runs): status, step, model, data, best metric."""
    import json

    from .runs import list_runs

    rows = list_runs(folder)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    style = {"finished": "green", "running": "cyan", "failed": "red", "interrupted": "yellow"}
    t = Table("run", "status", "step", "model", "data", "best", "modified",
              title=f"{len(rows)} run(s) in {folder}")
    for r in rows:
        st = r["status"]
        t.add_row(r["run"], f"[{style.get(st, 'white')}]{st}[/]",
                  f"{r['step']}/{r['total']}" if r["total"] is not None else "-",
                  r["model"], r["data"], r["best"] or "-", r["modified"] or "-")
    Console().print(t)


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("compare.html"),
              show_default=True, help="The HTML file to write.")
def compare(run_dirs: tuple[Path, ...], out: Path) -> None:
    """Write one self-contained HTML page overlaying the curves and eval results of RUN_DIRS."""
    from .runs import write_compare

    path = write_compare(list(run_dirs), out)
    click.echo(f"wrote {path} ({len(run_dirs)} runs)")


def register(cli: click.Group) -> None:
    cli.add_command(runs)
    cli.add_command(compare)
