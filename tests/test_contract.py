"""The family contract, over the whole registry: every registered family, built from its own
declared tiny configuration, runs every phase (start/every offsets included), round-trips every
network and EMA copy through save/load, and does what its capabilities declare, and nothing
else."""

import pytest
import torch
from conftest import (
    make_tiny_images,
    make_tiny_paired,
    make_tiny_points,
    make_tiny_unpaired,
    make_tiny_unpaired_labelled,
    make_tiny_volumes,
)

import gankit
from gankit.config import parse_overrides, resolve_config
from gankit.models.base import CAPABILITIES, CapabilityError
from gankit.registry import MODELS
from gankit.train.trainer import Callback

FAST = {"train.log_every": 1, "train.sample_every": 1000, "train.batch_size": 8,
        "train.ema_decay": 0.9}


def tiny_data(kind: str):
    return {"images": make_tiny_images, "points": make_tiny_points,
            "paired": make_tiny_paired, "unpaired": make_tiny_unpaired,
            "unpaired-labelled": make_tiny_unpaired_labelled,
            "volumes": make_tiny_volumes}[kind]()


class PhaseLog(Callback):
    """Which phases ran at which steps."""

    def __init__(self):
        self.ran = []

    def on_phase_end(self, tr, phase):
        self.ran.append((tr.step, phase.name))


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", MODELS.names())
def test_family_contract(name, tmp_path):
    family = MODELS.get(name)
    ds = tiny_data(family.tiny_data)
    over = {**FAST, **family.tiny}
    cfg = resolve_config(name, parse_overrides([f"{k}={v}" for k, v in over.items()]))
    phases = family(cfg, ds.describe()).phases()
    assert phases, name
    # enough steps for every phase to run at least once, offsets included
    steps = max(2, *(ph.start + ph.every for ph in phases))
    log = PhaseLog()
    run = gankit.train(name, ds, out=tmp_path / name, progress=False, callbacks=[log],
                       overrides={**over, "train.steps": steps, "train.ckpt_every": steps})
    ran = {p for _, p in log.ran}
    assert ran == {ph.name for ph in run.trainer.phases}, (name, ran)
    for step, ph_name in log.ran:
        ph = next(p for p in run.trainer.phases if p.name == ph_name)
        assert ph.active(step), (name, ph_name, step)
    logged = [r["step"] for r in run.metrics() if "it_s" in r]
    assert logged == list(range(1, steps + 1))
    # every trained network's optimizer stepped
    for k, opt in run.trainer.opts.items():
        assert any(opt.state.values()), (name, k)  # Adam/RMSprop keep state once they step
    # save/load: raw weights, EMA copies, family buffers
    raw = gankit.load(run.run_dir, weights="raw").model
    for k, net in run.trainer.nets.items():
        assert _states_equal(getattr(raw, k), net), (name, k)
    ema = gankit.load(run.run_dir).model
    copies = run.trainer.sampling_nets()
    for k, net in run.trainer.nets.items():
        assert _states_equal(getattr(ema, k), copies.get(k, net)), (name, k)
    assert not ema.training
    bufs = run.model.family_buffers()
    assert all(torch.equal(bufs[k], v) for k, v in ema.family_buffers().items())
    # the offline tools read every family's run directory
    from gankit.doctor import analyse_run
    from gankit.report import write_report

    assert analyse_run(run.run_dir)["last_step"] == steps
    assert write_report(run.run_dir).stat().st_size > 1000
    # every declared capability works, through the live run and the loaded model alike
    g, live = gankit.load(run.run_dir), run.generator
    caps = family.capabilities
    assert caps <= set(CAPABILITIES), name
    if "sample" in caps:
        x = g.sample(4, seed=1)
        assert x.shape == (4, *ds.shape) and torch.isfinite(x).all()
        assert torch.equal(x, g.sample(4, seed=1)) and torch.equal(x, live.sample(4, seed=1))
    if "translate" in caps:
        a = ds.a_test[:3] if ds.a_test is not None else ds.a[:3]
        y = g.translate(a, seed=2)
        assert y.shape == (3, *ds.shape) and torch.equal(y, live.translate(a, seed=2))
    if "log_prob" in caps:
        lp = g.log_prob(ds.x[:4], seed=0)
        assert lp.shape == (4,) and torch.isfinite(lp).all()
    if "encode" in caps:
        z = g.encode(ds.x[:4])
        assert z.shape[0] == 4
        if "decode" in caps:
            assert g.decode(z).shape == (4, *ds.shape)
    for cap in ("score", "attribute", "segment"):
        if cap in caps:
            assert getattr(g, cap)(ds.x[:4]).shape[0] == 4
    # and nothing it does not declare: one-line capability errors
    for cap in set(CAPABILITIES) - caps:
        with pytest.raises(CapabilityError, match=f"cannot {cap.replace('_', ' ')}"):
            if cap == "sample":
                g.sample(2)
            else:
                getattr(g, cap)(ds.x[:2])


def test_every_family_declares_a_tiny_config_and_cites_its_paper():
    for e in MODELS:
        assert e.obj.tiny, e.name  # the contract test must not train a full-size model
        assert any(str(y) in e.description for y in range(1950, 2027)), e.name


def test_a_family_must_implement_what_it_declares():
    from typing import ClassVar

    from gankit.models.base import ModelFamily
    from gankit.models.dcgan import DCGAN

    with pytest.raises(TypeError, match="declares translate but does not implement it"):
        class Liar(DCGAN):
            capabilities: ClassVar[frozenset[str]] = frozenset({"sample", "translate"})
    with pytest.raises(TypeError, match="unknown capabilities"):
        class Typo(DCGAN):
            capabilities: ClassVar[frozenset[str]] = frozenset({"smaple"})

    class NoPhases(ModelFamily):
        def networks(self):
            return {}

    with pytest.raises(TypeError, match="abstract"):
        NoPhases(None, {"shape": [2]})
