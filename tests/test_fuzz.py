"""Fuzzing the ways a user can go wrong (issue 10, item 9): config values, YAML files, CLI inputs
and damaged run directories. Whatever the input: exit code 0 or 2, never a traceback, at most one
``error:`` line (other stderr lines are ``warning:``/``note:``), and a run directory left as it
was when the command fails. Derandomised, so every run tries the same cases (~30 s in all)."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from helpers import cli_output
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gankit
from gankit.config import SECTIONS, Config, load_config_file, parse_overrides, resolve_config
from gankit.errors import GankitError

FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
OVER = {"model.width": 8, "train.batch_size": 16, "train.ckpt_every": 2,
        "train.sample_every": 100, "train.log_every": 2, "train.keep_ckpts": 5}
TINY = ["--data", "digits", "--steps", "1", "--batch-size", "16", "--no-progress",
        "--set", "model.width=8", "--set", "train.sample_every=100", "--set", "train.doctor=false"]

KEYS = [f"{sec}.{k}" for sec, c in SECTIONS.items() for k in c.model_fields] + \
    ["model.width", "model.latent_dim", "model.name", "train.stpes", "bogus.key", "optim.nets.G.lr",
     "optim.nets.X.lr", "optim.nets.G.bogus"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=12), st.sampled_from(["cpu", "auto", "cuda:7", "fid", "r1",
                                                           "hinge", "cosine", "bf16", "[fid]"]))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3),
                   st.dictionaries(st.text(max_size=5), SCALARS, max_size=2))


cli = cli_output


def check_outcome(code, err, allowed=(0, 2)):
    assert code in allowed, err
    assert not any("Traceback" in ln for ln in err), err
    assert all(ln.startswith(("error: ", "warning: ", "note: ", "interrupted")) for ln in err), err
    assert sum(ln.startswith("error: ") for ln in err) == (1 if code == 2 else 0), err


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(Path(d).rglob("*"))
            if p.is_file()}


def nested(key: str, value):
    d: dict = {}
    cur = d
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return d


@settings(FUZZ, max_examples=150)
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=4))
def test_fuzz_config_values_are_valid_or_one_line_errors(items):
    """Any values for any keys: a validated Config or a one-line ConfigError, as a dict layer
    and as ``--set`` text."""
    layer: dict = {}
    for k, v in items:
        layer = {**layer, **nested(k, v)}
    for build in (lambda: resolve_config("dcgan", layer),
                  lambda: resolve_config("dcgan", parse_overrides(
                      [f"{k}={json.dumps(v)}" for k, v in items]))):
        try:
            cfg = build()
        except GankitError as e:
            assert "\n" not in str(e) and str(e)
        else:
            assert isinstance(cfg, Config)
            assert all(lr is None or lr > 0 for lr in (cfg.optim.lr, cfg.optim.lr_g,
                                                       cfg.optim.lr_d))
            assert 0 <= cfg.train.ema_decay < 1


TRAIN_KEYS = ["optim.lr_g", "optim.lr_d", "optim.lr", "optim.n_critic", "optim.grad_accum",
              "optim.schedule", "optim.warmup", "train.batch_size", "train.ema_decay",
              "train.ema_start", "train.amp", "train.device", "train.eval_metrics", "loss.name",
              "loss.gp", "loss.lambda_gp", "loss.clip", "tricks.label_smoothing",
              "tricks.instance_noise", "tricks.d_every", "tricks.minibatch_stddev",
              "tricks.diffaugment", "data.channels", "data.image_size", "model.latent_dim"]
SMALL = st.one_of(st.integers(-3, 40), st.floats(-2, 2), st.none(), st.booleans(),
                  st.sampled_from(["cpu", "cuda", "adam", "hinge", "wgan-gp", "r1", "bf16",
                                   "linear", "[fid]", "color", "x", "", "[fid, kid]"]))


@settings(FUZZ, max_examples=12)
@given(st.lists(st.tuples(st.sampled_from(TRAIN_KEYS), SMALL), min_size=1, max_size=3))
def test_fuzz_train_inputs_exit_0_or_2_and_leave_nothing_on_failure(capsys, items):
    """The ``train`` command with fuzzed ``--set`` values: it trains (one step) or refuses in
    one line, and a refused run leaves no folder behind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r"
        sets = [a for k, v in items for a in ("--set", f"{k}={v}")]
        code, _, err = cli(capsys, "train", "dcgan", *TINY, *sets, "--out", out)
        check_outcome(code, err)
        if code == 2:
            assert not out.exists(), err


YAML_DOCS = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=80),
    st.dictionaries(st.sampled_from(["data", "train", "optim", "model", "loss", "bogus", "1"]),
                    st.one_of(SCALARS, st.dictionaries(st.sampled_from(
                        ["name", "steps", "batch_size", "lr_g", "width", "image_size", "seed",
                         "stepz"]), SCALARS, max_size=3)), max_size=3).map(
        lambda d: yaml.safe_dump(d).encode()),
)


@settings(FUZZ, max_examples=40)
@given(YAML_DOCS)
def test_fuzz_yaml_config_files(capsys, doc):
    """``--config FILE`` with any bytes, text or near-config YAML."""
    doc = doc if isinstance(doc, bytes) else doc.encode("utf-8", "surrogatepass")
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "c.yaml"
        f.write_bytes(doc)
        try:
            layer = load_config_file(f)
        except GankitError as e:
            assert "\n" not in str(e)
        else:
            assert isinstance(layer, dict)
            assert all(isinstance(v, dict) for v in layer.values())
        out = Path(tmp) / "r"
        code, _, err = cli(capsys, "train", "dcgan", "--config", f, *TINY, "--out", out)
        check_outcome(code, err)
        if code == 2:
            assert not out.exists(), err


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzzbase") / "run"
    gankit.train("dcgan", "digits", steps=4, out=out, overrides=OVER, progress=False)
    return out


ARG_VALUES = st.one_of(st.integers(-5, 80).map(str), st.text(max_size=6),
                       st.sampled_from(["ema", "raw", "last", "best", "G", "0,1", "1.5", "nan",
                                        "-1", "fid", "fid,kid", "bogus", "test", "train"]))
OPTIONS = {"sample": ["--n", "--seed", "--weights", "--labels", "--truncation"],
           "eval": ["--n", "--seed", "--weights", "--metrics", "--split"],
           "resume": ["--steps"], "report": []}


@settings(FUZZ, max_examples=15)
@given(st.sampled_from(sorted(OPTIONS)), st.data(),
       st.sampled_from(["file.png", "file.npy", "folder", "missing/x.png", "EXISTING_FILE",
                        "EXISTING_FILE/x.png"]))
def test_fuzz_cli_inputs_on_a_run(capsys, base_run, cmd, data, out):
    """``sample``/``eval``/``resume``/``report`` with fuzzed options and outputs."""
    opts = data.draw(st.lists(st.tuples(st.sampled_from(OPTIONS[cmd]), ARG_VALUES), max_size=3)
                     if OPTIONS[cmd] else st.just([]))
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(base_run, run)
        (Path(tmp) / "EXISTING_FILE").write_text("x")
        before = snapshot(run)
        args = [a for k, v in opts for a in (k, v)]
        if cmd == "eval":
            args = ["--metrics", "fid", "--n", "32", *args]  # later options win
        if cmd == "resume":
            args += ["--no-progress"]
        else:
            o = Path(tmp) / out
            args += ["--out", o.with_suffix(".json" if cmd == "eval" else ".html")
                     if cmd in ("eval", "report") and o.suffix else o]
        code, _, err = cli(capsys, cmd, run, *args)
        check_outcome(code, err)
        if code == 2:
            assert snapshot(run) == before, err


DAMAGE = st.sampled_from(["truncate", "garbage", "delete", "flip", "append", "empty"])


@settings(FUZZ, max_examples=15)
@given(st.lists(st.tuples(st.integers(0, 10**6), DAMAGE, st.binary(min_size=1, max_size=16)),
                min_size=1, max_size=3),
       st.sampled_from(["resume", "resume8", "sample", "load", "eval"]))
def test_fuzz_damaged_run_directories(capsys, base_run, damages, cmd):
    """Random files of a run cut, overwritten, deleted or bit-flipped, then resumed, sampled,
    loaded or evaluated: it works (falling back to an intact checkpoint when it must) or fails
    in one line leaving the directory as it was."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(base_run, run)
        files = sorted(p for p in run.rglob("*") if p.is_file())
        vital = [p for p in files if p.suffix in (".json", ".pt", ".safetensors", "")
                 and p.parent.name != "samples"]
        files = vital * 3 + files  # mostly the files that matter
        for i, op, junk in damages:
            f = files[i % len(files)]
            if not f.exists():
                continue
            b = f.read_bytes()
            if op == "truncate":
                f.write_bytes(b[:i % max(len(b), 1)])
            elif op == "garbage":
                f.write_bytes(junk)
            elif op == "delete":
                f.unlink()
            elif op == "flip" and b:
                j = i % len(b)
                f.write_bytes(b[:j] + bytes([b[j] ^ (1 << (i % 8))]) + b[j + 1:])
            elif op == "append":
                f.write_bytes(b + junk)
            elif op == "empty":
                f.write_bytes(b"")
        before = snapshot(run)
        if cmd == "load":  # the Python API: a GankitError of one line, stderr only warnings
            try:
                g = gankit.load(run)
                assert g.sample(2, seed=0).shape[0] == 2
                code, raised = 0, []
            except GankitError as e:
                assert "\n" not in str(e)
                code, raised = 2, [f"error: {e}"]
            err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()] + raised
        else:
            args = {"resume": ["resume", run, "--no-progress"],
                    "resume8": ["resume", run, "--steps", "6", "--no-progress"],
                    "sample": ["sample", run, "--n", "4", "--out", Path(tmp) / "s.png"],
                    "eval": ["eval", run, "--metrics", "fid", "--n", "32",
                             "--out", Path(tmp) / "e.json"]}[cmd]
            code, _, err = cli(capsys, *args)
        check_outcome(code, err)
        if code == 2:
            assert snapshot(run) == before, err
