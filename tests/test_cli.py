"""The softmax-multi command."""

from __future__ import annotations

import shutil
import subprocess
import sys

from softmax_multi import cli


def test_backends_table(capsys):
    assert cli.main(["backends"]) == 0
    out = capsys.readouterr().out
    header, rule, *rows = out.splitlines()
    assert header.split() == ["backend", "version", "status", "devices"]
    by_name = {r.split()[0]: r.split() for r in rows}
    assert by_name["numpy"][2:] == ["ready", "cpu"]
    assert by_name["array_api_strict"][2] == "ready"


def test_worked_example(capsys):
    assert cli.main(["example"]) == 0
    out = capsys.readouterr().out
    assert out.count("[0.0064, 0.0471, 0.9465]") >= 2  # numpy and array_api_strict at least
    assert out.count("[0.09, 0.2447, 0.6652]") >= 6


def test_console_script_is_installed():
    exe = shutil.which("softmax-multi", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe is not None, "the softmax-multi console script is not installed beside this Python"
    out = subprocess.run([exe, "backends"], check=True, capture_output=True, text=True).stdout
    assert "numpy" in out and "ready" in out
