"""Test helpers: calling a family's phase losses outside the Trainer."""

import contextlib
from types import SimpleNamespace

import torch
from torch import nn


class FixedOutput(nn.Module):
    """A stand-in generator that returns a given batch whatever its input."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, *args):
        return self.out


def stub_ctx(model, batch, fake, c_fake=None, latent=None, step=0):
    """The part of the Trainer's StepContext a game's phases read, with a fixed fake batch.

    ``batch`` is the step's batch (``{"x": real, "y": labels}``); the D step's fake comes from a
    stand-in G returning ``fake``; the G step finds ``(fake, c_fake, latent)`` where a D step
    that kept its fake would have left it.
    """
    nets = {**model.networks(), "G": FixedOutput(fake)}
    ctx = SimpleNamespace(model=model, step=step, micro=0, keep_fake=False, batch=batch,
                          stash={("", 0): (fake, c_fake, latent)}, nets=nets, n=len(fake),
                          device=torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                          real=batch.get("x"), c=batch.get("y") if model.conditional else None)
    ctx.net = nets.__getitem__
    ctx.grad_for = lambda *names: contextlib.nullcontext()
    return ctx


def run_cli(*args) -> int:
    """Run the ``gankit`` command in this process; its exit code (0 when it returns)."""
    from gankit.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


def cli_output(capsys, *args):
    """Run the ``gankit`` command in this process: (exit code, stdout, non-blank stderr lines)."""
    code = run_cli(*args)
    out, err = capsys.readouterr()
    return code, out, [ln for ln in err.splitlines() if ln.strip()]


def checkpoint_tensors(ck, with_lr: bool = False) -> dict:
    """Every tensor of a checkpoint folder: all networks, EMA copies and optimizer state (and
    each parameter group's learning rate with ``with_lr``), by a flat name."""
    from safetensors.torch import load_file

    out = {}
    for f in sorted(ck.glob("*.safetensors")):
        out |= {f"{f.stem}.{k}": v for k, v in load_file(f).items()}
    optim = torch.load(ck / "optim.pt", weights_only=True)
    for net, st in optim["opts"].items():
        for i, s in st["state"].items():
            out |= {f"opt.{net}.{i}.{k}": v for k, v in s.items() if torch.is_tensor(v)}
        if with_lr:
            out |= {f"lr.{net}.{i}": torch.tensor(g["lr"])
                    for i, g in enumerate(st["param_groups"])}
    return out
