"""Every command of the README's command table works as printed; ``--help`` is written for users (issue 15).

The table is parsed from README.md.  Its placeholders are filled from a tiny data root: ``D`` the root,
``N`` the seed, ``F``/``H`` the fingerprint and parameter_hash of the run the first row makes; of
``a|b|c`` the small choice (``tiny``, ``30m``), the whole run (``s9``) or else the first; an optional ``[...]`` group is kept when all
of it can be filled this way (``[--raster pop.tif]`` needs a file of the user's and is left out).  The
commands run in-process, as printed, on the tests' cluster (Dask config
``segment1b.cluster.scheduler-address``, which every command honours), from a folder where relative outputs
(``out.parquet``) land.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import dask
import pytest

from jobs.cli import build_parser
from jobs.cli import main as cli_main
from runs import fresh_root, prepared_root

pytestmark = pytest.mark.cluster

README = Path(__file__).resolve().parent.parent / "README.md"
PREFERRED = ("tiny", "30m", "s9")  # the small scale, the grid the other tests prepare, the whole run
FILES = ("pop.tif", "file")  # placeholders for the user's own files: optional groups holding them are left out
MARKUP = ("``", ":func:", ":mod:", ":class:", ":data:", ":meth:", "issue #", "issue 1", "(#")


def readme_commands() -> list[str]:
    """The ``segment1b ...`` commands of the README's command table, in order, as printed."""
    section = README.read_text().split("## Commands", 1)[1].split("\n## ", 1)[0]
    out = []
    for line in section.splitlines():
        if line.startswith("| `segment1b"):
            first_cell = re.split(r"(?<!\\)\|", line)[1]
            out += [c.replace("\\|", "|") for c in re.findall(r"`(segment1b [^`]+)`", first_cell)]
    return out


def fill(command: str, values: dict[str, str]) -> list[str]:
    """argv of a table command with its placeholders filled (see the module docstring)."""
    def choose(word: str) -> str | None:
        if word in FILES:
            return None
        if "|" in word:
            options = word.split("|")
            return next((o for o in options if o in PREFERRED), options[0])
        return values.get(word, word)

    argv: list[str] = []
    for optional, words in re.findall(r"\[([^\]]+)\]|(\S+)", command):
        chosen = [choose(w) for w in (optional or words).split()]
        if None in chosen:
            assert optional, f"a required argument needs a file of the user's: {command}"
            continue
        argv += chosen
    assert argv[0] == "segment1b"
    return argv[1:]


def test_the_table_is_parsed_and_names_every_command():
    commands = readme_commands()
    names = {c.split()[1] for c in commands}
    assert names == set(build_parser()._subparsers._group_actions[0].choices), names
    assert all("..." not in c for c in commands), "a command of the table leaves flags out"


@pytest.mark.timeout(600)
def test_every_command_of_the_readme_table_exits_0(client, tmp_path, monkeypatch):
    from segment1b.contracts import path_for
    from segment1b.storage import Storage

    root = fresh_root(prepared_root(client)[0], str(tmp_path / "root"))
    monkeypatch.chdir(tmp_path)
    values = {"D": root, "N": "42"}
    with dask.config.set({"segment1b.cluster.scheduler-address": client.scheduler.address}):
        for command in readme_commands():
            argv = fill(command, values)
            assert cli_main(argv) == 0, f"{command}\n  ran as: segment1b {shlex.join(argv)}"
            if argv[0] == "run":  # F and H of the run the other commands read
                run = Storage(root).fs.glob(Storage(root).abspath(path_for(
                    "run_folder", seed=42, manifest_fingerprint="0" * 64, parameter_hash="0" * 64).split(
                    "/fingerprint=")[0]) + "/fingerprint=*/parameter_hash=*")
                assert len(run) == 1, run
                values["F"], values["H"] = re.findall(r"=([0-9a-f]{64})", run[0])
    assert (tmp_path / "out.parquet").is_file()


def _subparsers():
    parser = build_parser()
    return parser, parser._subparsers._group_actions[0].choices


@pytest.mark.parametrize("name", sorted(_subparsers()[1]))
def test_help_is_for_users_with_one_example(name):
    text = _subparsers()[1][name].format_help()
    found = [m for m in MARKUP if m in text]
    assert not found, f"`segment1b {name} --help` shows developer markup {found}:\n{text}"
    assert re.search(rf"^example:\n  segment1b {name} --", text, flags=re.M), text


def test_the_command_list_is_for_users():
    text = _subparsers()[0].format_help()
    assert not [m for m in MARKUP if m in text], text
