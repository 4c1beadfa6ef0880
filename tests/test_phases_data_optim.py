"""The core's contract pieces: phase scheduling (start/stop/every/closed form), one batch per
step with explicit fresh draws, the data sources, per-network optimizer specs, schedules and the
lazy-regularisation correction."""

import math
from types import SimpleNamespace

import pytest
import torch

import gankit
from gankit.config import parse_overrides, resolve_config
from gankit.data.base import Dataset
from gankit.data.sources import build_source
from gankit.errors import ConfigError, DataError
from gankit.games.phase import Phase
from gankit.models.dcgan import DCGAN
from gankit.models.infogan import InfoGAN
from gankit.train.optim import Schedule
from gankit.train.trainer import Callback, Trainer

FAST = {"train.log_every": 1, "train.batch_size": 8, "train.ema": False, "train.doctor": False,
        "model.width": 8}


def cfg_of(name="dcgan", **over):
    return resolve_config(name, parse_overrides([f"{k}={v}" for k, v in {**FAST, **over}.items()]))


class PhaseLog(Callback):
    def __init__(self):
        self.ran = []

    def on_phase_end(self, tr, phase):
        self.ran.append((tr.step, phase.name))


# --- phases -----------------------------------------------------------------------------------
class Staged(DCGAN):
    """DCGAN plus phases that start late, stop early, run at an offset, and a closed form."""

    def __init__(self, cfg, info):
        super().__init__(cfg, info)
        self.register_buffer("count", torch.zeros(()))
        self.grad_seen = []

    def phases(self):
        def d_extra(ctx):
            return self.D(ctx.batch["x"]).pow(2).mean(), {}

        def g_extra(ctx):
            return self.G(ctx.z(ctx.n)).pow(2).mean(), {}

        def count(ctx):  # a closed-form update: no graph, no optimizer
            self.grad_seen.append(torch.is_grad_enabled())
            self.count += 1
            return None, {"count": self.count.clone()}

        return [*super().phases(),
                Phase("late", "D", d_extra, start=3),
                Phase("early", "G", g_extra, stop=2),
                Phase("offset", "D", d_extra, start=1, every=2),
                Phase("count", (), count, kind="closed_form")]


def test_phases_start_stop_every_offsets_and_closed_form(tiny_images):
    cfg = cfg_of()
    torch.manual_seed(0)
    m = Staged(cfg, tiny_images.describe())
    log = PhaseLog()
    tr = Trainer(cfg, m, tiny_images, None, [log])
    tr.fit(6)
    steps = {name: [s for s, n in log.ran if n == name] for _, name in log.ran}
    assert steps["late"] == [3, 4, 5]
    assert steps["early"] == [0, 1]
    assert steps["offset"] == [1, 3, 5]
    assert steps["count"] == list(range(6)) and steps["D"] == list(range(6))
    assert float(m.count) == 6 and m.grad_seen == [False] * 6  # no gradients recorded
    # D's optimizer stepped 6 (D) + 3 (late) + 3 (offset) times
    assert max(float(s["step"]) for s in tr.opts["D"].state.values()) == 12


def test_phase_validation():
    with pytest.raises(ValueError, match="closed-form"):
        Phase("x", "D", lambda ctx: None, kind="closed_form")
    with pytest.raises(ValueError, match="stop"):
        Phase("x", "D", lambda ctx: None, start=4, stop=4)
    with pytest.raises(ValueError, match="names the networks"):
        Phase("x", (), lambda ctx: None)
    assert [t for t in range(12) if Phase("x", "D", None, start=2, every=3, stop=9).active(t)] \
        == [2, 5, 8]


def test_one_batch_per_step_shared_by_phases_and_fresh_for_each_critic_step(tiny_images):
    """Alg. 1 of Goodfellow et al. draws a new minibatch for each of the k D steps; the G step
    then sees the batch its (reused) fake was made with."""
    cfg = cfg_of(**{"optim.n_critic": 3})
    torch.manual_seed(0)
    m = DCGAN(cfg, tiny_images.describe())
    tr = Trainer(cfg, m, tiny_images, None)
    seen = []
    for ph in tr.phases:
        inner = ph.loss_fn

        def wrapped(ctx, inner=inner, name=ph.name):
            seen.append((ctx.step, name, ctx.batch["x"].data_ptr(), ctx.batch["x"].sum().item()))
            return inner(ctx)

        ph.loss_fn = wrapped
    tr.fit(2)
    for step in (0, 1):
        d = [s for s in seen if s[0] == step and s[1] == "D"]
        g = [s for s in seen if s[0] == step and s[1] == "G"]
        assert len(d) == 3 and len(g) == 1
        assert len({s[3] for s in d}) == 3  # three different real batches
        assert g[0][2:] == d[-1][2:]  # G saw the last D step's batch


# --- data sources -----------------------------------------------------------------------------
def _draws(src, k):
    return [src.draw() for _ in range(k)]


def _same(a, b):
    return all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
               for x, y in zip(a, b))


def test_sources_are_seeded_checkpointed_and_exact_on_resume(tiny_images, tiny_paired):
    cpu = torch.device("cpu")
    a_other = torch.rand(30, 1, 16, 16) * 2 - 1
    unpaired = Dataset("u", tiny_images.x, a=a_other, pairing="unpaired")
    for name, ds, opts in (("samples", tiny_images, {}), ("paired", tiny_paired, {}),
                           ("unpaired", unpaired, {}),
                           ("classes", tiny_images, {"streams": {"zero": [0], "rest": [1, 2]}})):
        src = build_source(name, ds, 8, cpu, seed=3, **opts)
        _draws(src, 7)  # across an epoch boundary
        state = src.state_dict()
        ahead = _draws(src, 9)
        again = build_source(name, ds, 8, cpu, seed=3, **opts)
        again.load_state_dict(state)
        assert _same(ahead, _draws(again, 9)), name
        other = build_source(name, ds, 8, cpu, seed=4, **opts)
        assert not _same(_draws(build_source(name, ds, 8, cpu, seed=3, **opts), 3),
                         _draws(other, 3)), name


def test_source_contents(tiny_images, tiny_paired):
    cpu = torch.device("cpu")
    b = build_source("paired", tiny_paired, 8, cpu, 0).draw()
    assert set(b) == {"a", "b", "y"}
    rows = [int((tiny_paired.x == x).flatten(1).all(1).nonzero()) for x in b["b"]]
    assert torch.equal(tiny_paired.a[rows], b["a"])  # aligned pairs stay aligned
    src = build_source("classes", tiny_images, 6, cpu, 0, streams={"zero": [0], "rest": [1, 2]})
    for _ in range(5):
        d = src.draw()
        assert set(d) == {"zero", "zero_y", "rest", "rest_y"}
        assert (d["zero_y"] == 0).all() and (d["rest_y"] > 0).all()
    with pytest.raises(ConfigError, match="classes"):
        build_source("classes", tiny_images, 4, cpu, 0, streams={"bad": [7]})
    with pytest.raises(DataError, match="aligned pairs"):
        build_source("paired", tiny_images, 4, cpu, 0)
    with pytest.raises(ConfigError, match="did you mean 'paired'"):
        build_source("pairs", tiny_images, 4, cpu, 0)


def test_data_parallel_ranks_take_disjoint_shares_of_one_global_batch(tiny_images):
    cpu = torch.device("cpu")
    full = build_source("samples", tiny_images, 8, cpu, 0).draw()["x"]
    r0 = build_source("samples", tiny_images, 8, cpu, 0, rank=0, world=2).draw()["x"]
    r1 = build_source("samples", tiny_images, 8, cpu, 0, rank=1, world=2).draw()["x"]
    assert torch.equal(torch.cat([r0, r1]), full)


# --- optimizers and schedules -------------------------------------------------------------------
def test_per_network_optimizer_overrides(tiny_images):
    cfg = cfg_of("infogan", **{**InfoGAN.tiny, "optim.nets.Q.lr": 1e-3,
                               "optim.nets.Q.betas": [0.9, 0.99], "optim.nets.G.name": "adamw",
                               "optim.nets.G.weight_decay": 0.01})
    torch.manual_seed(0)
    tr = Trainer(cfg, InfoGAN(cfg, tiny_images.describe()), tiny_images, None)
    q, g, d = (tr.opts[k].param_groups[0] for k in "QGD")
    assert q["lr"] == 1e-3 and q["betas"] == (0.9, 0.99)
    assert isinstance(tr.opts["G"], torch.optim.AdamW) and g["weight_decay"] == 0.01
    assert d["lr"] == cfg.optim.lr_d and isinstance(tr.opts["D"], torch.optim.Adam)
    bad = cfg_of("infogan", **{**InfoGAN.tiny, "optim.nets.Qq.lr": 1e-3})
    with pytest.raises(ConfigError, match="did you mean 'Q'"):
        Trainer(bad, InfoGAN(bad, tiny_images.describe()), tiny_images, None)
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        cfg_of("infogan", **{"optim.nets.Q.lrr": 1e-3})


def test_lazy_regularisation_gets_stylegan2_adam_correction(tiny_images):
    cfg = cfg_of(**{"loss.gp": "r1", "loss.gp_every": 4, "optim.betas_d": [0.0, 0.99]})
    torch.manual_seed(0)
    tr = Trainer(cfg, DCGAN(cfg, tiny_images.describe()), tiny_images, None)
    d, g = tr.opts["D"].param_groups[0], tr.opts["G"].param_groups[0]
    c = 4 / 5
    assert d["lr"] == pytest.approx(cfg.optim.lr_d * c)
    assert d["betas"] == pytest.approx((0.0, 0.99 ** c))
    assert g["lr"] == cfg.optim.lr_g and g["betas"] == tuple(cfg.optim.betas_g)
    eager = cfg_of(**{"loss.gp": "r1"})
    tr = Trainer(eager, DCGAN(eager, tiny_images.describe()), tiny_images, None)
    assert tr.opts["D"].param_groups[0]["lr"] == eager.optim.lr_d  # every step: no correction


def test_schedule_factors():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    from gankit.models.base import OptimSpec

    lin = Schedule(opt, OptimSpec(schedule="linear", decay_start=10), 20)
    assert [lin.factor(t) for t in (0, 9, 10, 15, 20, 25)] == [1, 1, 1, 0.5, 0, 0]
    floor = Schedule(opt, OptimSpec(schedule="linear", min_lr_ratio=0.2), 10)  # decay from 5
    assert floor.factor(10) == pytest.approx(0.2) and floor.factor(4) == 1
    cos = Schedule(opt, OptimSpec(schedule="cosine", warmup=4), 14)
    assert [cos.factor(t) for t in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cos.factor(9) == pytest.approx(0.5) and cos.factor(14) == pytest.approx(0.0)
    assert all(cos.factor(t) >= cos.factor(t + 1) for t in range(4, 14))
    const = Schedule(opt, OptimSpec(warmup=2), 10)
    assert [const.factor(t) for t in (0, 1, 5)] == [0.5, 1, 1]


def test_schedule_reaches_the_optimizers_and_resumes_bit_identically(tmp_path):
    over = {**FAST, "optim.schedule": "linear", "optim.decay_start": 2, "train.ckpt_every": 3,
            "train.steps": 7}
    full = gankit.train("dcgan", "digits", out=tmp_path / "full", progress=False,
                        overrides=over)
    lr = full.trainer.opts["G"].param_groups[0]["lr"]
    assert lr == pytest.approx(full.cfg.optim.lr_g * (1 - (6 - 2) / 5))  # set at the last step
    class StopAt3(Callback):  # Ctrl-C after step 3: checkpoint, then stop
        def on_step_end(self, tr):
            if tr.step == 3:
                tr._stop = True

    with pytest.raises(KeyboardInterrupt):
        gankit.train("dcgan", "digits", out=tmp_path / "part", progress=False,
                     overrides=over, callbacks=[StopAt3()])
    part = SimpleNamespace(run_dir=tmp_path / "part")
    resumed = gankit.resume(part.run_dir, progress=False)
    for k in ("G", "D"):
        a, b = full.trainer.nets[k].state_dict(), resumed.trainer.nets[k].state_dict()
        assert all(torch.equal(a[n], b[n]) for n in a), k
        assert resumed.trainer.opts[k].param_groups[0]["lr"] == \
            full.trainer.opts[k].param_groups[0]["lr"]


def test_rollback_scales_scheduled_rates(tiny_images, tmp_path):
    run = gankit.train("dcgan", tiny_images, out=tmp_path / "r", progress=False,
                       overrides={**FAST, "train.steps": 4, "train.ckpt_every": 2,
                                  "optim.schedule": "cosine"})
    tr = run.trainer
    base = list(tr.schedules["G"].base)
    tr.rollback(0.5)
    assert tr.step == 4 and tr.schedules["G"].base == [b * 0.5 for b in base]
    assert tr.opts["G"].param_groups[0]["lr"] == pytest.approx(
        base[0] * 0.5 * tr.schedules["G"].factor(4))
    assert math.isfinite(tr.opts["G"].param_groups[0]["lr"])


class TwoGames(DCGAN):
    """Two generator/discriminator pairs, each its own instance of the one adversarial game."""

    g_nets = ("G", "G2")  # G-side optimizer settings

    def __init__(self, cfg, info):
        super().__init__(cfg, info)
        import copy

        self.G2, self.D2 = copy.deepcopy(self.G), copy.deepcopy(self.D)

    def networks(self):
        return {"G": self.G, "D": self.D, "G2": self.G2, "D2": self.D2}

    def phases(self):
        from gankit.games.adversarial import Game, adversarial_phases

        flip = lambda ctx: (ctx.batch["x"].flip(-1), None)  # the second domain
        return [*adversarial_phases(self),
                *adversarial_phases(self, Game(G="G2", D="D2", tag="B", real=flip))]


def test_the_game_can_be_played_twice_in_one_family(tiny_images):
    cfg = cfg_of()
    torch.manual_seed(0)
    m = TwoGames(cfg, tiny_images.describe())
    tr = Trainer(cfg, m, tiny_images, None)
    assert [ph.name for ph in tr.phases] == ["D", "G", "D_B", "G_B"]
    before = {k: [p.clone() for p in n.parameters()] for k, n in tr.nets.items()}
    tr.fit(2)
    stats = tr.pop_stats()
    assert {"loss/D", "loss/G", "loss/D_B", "loss/G_B", "D_B/real"} <= set(stats)
    for k, net in tr.nets.items():  # every player trained
        assert not all(torch.equal(a, b) for a, b in zip(before[k], net.parameters())), k
    assert tr.opts["G2"].param_groups[0]["lr"] == cfg.optim.lr_g  # G2 is G-side
