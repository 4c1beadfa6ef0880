"""Command-line options shared by the commands of several modules (one definition each)."""

from __future__ import annotations

import click

#: Which checkpointed weights a command loads (``gankit.load(weights=...)``); G_ema / G are
#: the older names of ema / raw, still accepted.
WEIGHT_CHOICES = click.Choice(["ema", "raw", "last", "best", "G_ema", "G"])
WEIGHTS_HELP = ("ema: the latest checkpoint's EMA copies (where kept), raw: its trained weights, "
                "last: same as ema, best: those kept by --eval-every. A damaged latest "
                "checkpoint is skipped for the newest intact one.")

#: ``@weights_option`` on a command adds ``--weights`` (argument ``weights``).
weights_option = click.option("--weights", type=WEIGHT_CHOICES, default="ema", show_default=True,
                              help=WEIGHTS_HELP)
