"""The README stays true to the code: its model table is the registry's, and every command of
its tours names a real gankit command, model and dataset."""

import re
import shlex
import sys
from pathlib import Path

from click.testing import CliRunner

from gankit.cli import cli
from gankit.data import DATASETS
from gankit.models import MODELS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from tour import SECTIONS, tour_commands


def test_readme_model_table_is_the_registry():
    table = CliRunner().invoke(cli, ["models", "--markdown"]).output.strip()
    readme = (ROOT / "README.md").read_text()
    assert table in readme, "README's model table differs from `gankit models --markdown`"
    assert len(re.findall(r"^\| `", table, flags=re.MULTILINE)) == len(list(MODELS))


def test_every_tour_command_names_a_real_command_model_and_dataset():
    for section in SECTIONS:
        cmds = tour_commands(section=section)
        assert cmds, section
        for c in cmds:
            words = shlex.split(c)
            if words[0] != "gankit":
                continue
            assert words[1] in cli.commands, c
            if words[1] == "train" and not words[2].startswith("-"):
                assert words[2] in MODELS, c
            if "--data" in words:
                data = words[words.index("--data") + 1]
                assert data in DATASETS or not re.fullmatch(r"[a-z0-9-]+", data) \
                    or (ROOT / data).exists() or data in {"images", "images-32"}, c
