"""Hydra's own errors (an unknown option, a missing config, an unparsable override) and overrides of the wrong
type end every Hydra command as the commands' own errors do: one line, ``error: ...``, exit status 1
(``cxr_ldm/utils/cli.py::hydra_command``)."""

from __future__ import annotations

import os
import sys

import pytest
from helpers import command_exit, run_module
from hydra.core.global_hydra import GlobalHydra

from cxr_ldm.utils.cli import HYDRA_FULL_ERROR

COMMANDS = ["train", "prepare", "phantom", "cache_latents", "sample", "evaluate", "export", "demo", "app"]
UNKNOWN = "error: Could not override 'nosuch'. To append to your config use +nosuch=1 (Key 'nosuch' is not in struct)"


def run_main(monkeypatch, command: str, *args: str) -> SystemExit:
    monkeypatch.delenv(HYDRA_FULL_ERROR, raising=False)
    ended = command_exit(command, *args)
    assert HYDRA_FULL_ERROR not in os.environ  # the environment is as it was given
    return ended


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_option_is_one_line_in_every_command(monkeypatch, command):
    assert run_main(monkeypatch, command, "nosuch=1").code == UNKNOWN


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data=nope"], "error: In 'train': Could not find 'data/nope'. Available options in 'data': mimic, phantom"),
        (["trainer.max_epochs=["], "error: trainer.max_epochs=[: no viable alternative at input '['. See "
                                   "https://hydra.cc/docs/1.2/advanced/override_grammar/basic for details"),
        (["~nosuch"], "error: Could not delete from config. 'nosuch' does not exist"),
        (["--cfg", "job", "model.nosuch=3"],
         "error: Could not override 'model.nosuch'. To append to your config use +model.nosuch=3 "
         "(Key 'nosuch' is not in struct)"),
    ],
)  # fmt: skip
def test_hydra_composition_errors_of_train(monkeypatch, args, message):
    assert run_main(monkeypatch, "train", *args).code == message


def test_hydra_full_error_given_by_the_user_shows_hydra_s_exception(monkeypatch):
    from hydra.errors import ConfigCompositionException

    from cxr_ldm.sample import main

    monkeypatch.setattr(sys, "argv", ["cxr_ldm.sample", "nosuch=1"])
    monkeypatch.setenv(HYDRA_FULL_ERROR, "1")
    try:
        with pytest.raises(ConfigCompositionException, match="Could not override 'nosuch'"):
            main()
    finally:
        GlobalHydra.instance().clear()
    assert os.environ[HYDRA_FULL_ERROR] == "1"


def test_the_command_prints_the_line_and_ends_with_status_1(tmp_path):
    proc = run_module("cxr_ldm.sample", "nosuch=1", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (1, UNKNOWN + "\n")


def test_a_value_of_the_wrong_type_is_refused_naming_the_command_s_own_option(tmp_path):
    """The demo passes n_studies on to training; the refusal names the demo's option, before any step runs."""
    proc = run_module("cxr_ldm.demo", f"out_dir={tmp_path / 'demo'}", "n_studies=abc", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (1, "error: n_studies=abc: expected an integer, like its default 2000\n")
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [".demo_logs"]  # no step started
