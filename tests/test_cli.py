"""The softmax-multi command."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from softmax_multi import cli


def test_backends_table(capsys):
    assert cli.main(["backends"]) == 0
    out = capsys.readouterr().out
    header, _, *rows = out.splitlines()
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


def _conformance(cwd, *args, env=None):
    import os

    exe = str(__import__("pathlib").Path(sys.executable).parent / "softmax-multi")
    return subprocess.run(
        [exe, "conformance", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600
    )


def test_conformance_matrix_and_json(tmp_path):
    import json

    out = _conformance(tmp_path, "--smx-backend", "numpy", "--smx-tier", "quick", "--smx-max-examples", "5", "--json", "m.json")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["check", "numpy"]
    assert any(line.startswith("finite_input") and "pass" in line for line in lines)
    assert "/" in out.stderr and "]" in out.stderr  # the progress bar
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["tier"] == "quick" and report["tolerance_eps"]["float32"] == 16
    assert report["checks"]["finite_input"]["numpy"]["status"] == "passed"
    assert report["checks"]["finite_input"]["numpy"]["max_eps"] < 16


def test_conformance_from_the_repository_root():
    """The README's first command runs it here, where pyproject.toml's pytest options apply."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    out = _conformance(root, "--smx-backend", "array_api_strict", "--smx-max-examples", "5")
    assert out.returncode == 0, out.stdout + out.stderr
    assert any(line.startswith("finite_input") and "pass" in line for line in out.stdout.splitlines())


@pytest.mark.parametrize(
    "name,reason",
    [
        ("nosuch", "no backend named 'nosuch'"),
        ("nosuch_module:spec", "cannot load nosuch_module:spec: ModuleNotFoundError: No module named 'nosuch_module'"),
        ("fakearr:nothing", "cannot load fakearr:nothing: AttributeError"),
        ("fakearr:calls", "fakearr:calls is a list, not a BackendSpec"),
        ("broken", "no backend named 'broken' (failed: ZeroDivisionError: division by zero)"),
    ],
)
def test_conformance_says_why_a_backend_cannot_be_certified(tmp_path, name, reason):
    from .conftest import plugin_env, write_distribution

    write_distribution(tmp_path, "broken-plugin", {"broken": "broken_zero:spec"})
    out = _conformance(tmp_path, "--smx-backend", name, env=plugin_env(tmp_path))
    assert out.returncode == 2, out.stdout + out.stderr
    assert reason in out.stderr, out.stderr


def test_conformance_refuses_the_old_spellings(tmp_path):
    for args, new in (
        (["--backend", "numpy"], "--smx-backend"),
        (["--quick"], "--smx-tier quick"),
        (["--max-examples", "5"], "--smx-max-examples"),
    ):
        out = _conformance(tmp_path, *args)
        assert out.returncode == 2 and f"is spelled {new}" in out.stderr, out.stderr


def test_one_spelling_and_one_default_in_the_cli_and_pytest(capsys):
    """The CLI's options are the pytest plugin's (one table), and the README names them so."""
    import pathlib

    from softmax_multi.conformance.options import OPTIONS

    with pytest.raises(SystemExit):
        cli.main(["conformance", "--help"])
    usage = capsys.readouterr().out
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name, kwargs in OPTIONS.items():
        assert name in usage and name in readme
        if "choices" in kwargs:
            assert f"(default: {kwargs['default']})" in usage


def test_version(capsys):
    import softmax_multi

    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"softmax-multi {softmax_multi.__version__}"


def test_bench_grid_writes_json_and_png_and_replots(tmp_path, capsys):
    import json

    out, png = tmp_path / "b.json", tmp_path / "b.png"
    args = [
        "bench",
        "--shapes",
        "64x1000",
        "--dtypes",
        "float32",
        "--funcs",
        "softmax,logsumexp",
        "--rounds",
        "1",
        "--settle",
        "0.005",
    ]
    assert cli.main([*args, "--json", str(out), "--plot", str(png)]) == 0
    printed = capsys.readouterr()
    assert "scipy / numpy" in printed.out and "(64, 1000)" in printed.out
    assert "] 2/2" in printed.err  # the progress bar reached the end
    saved = json.loads(out.read_text())
    methods = saved["results"][0]["seconds"]
    for name in (
        "smx[numpy]",
        "smx[numpy] out=",
        "scipy.special.softmax",
        "NumPy expression",
        "copy (bandwidth bound)",
        "smx[torch]",
        "torch.softmax, 1 thread",
        "torch.softmax, 2 threads",
        "torch.softmax out=, 2 threads",
        "smx[jax] jit",
        "jax.nn.softmax jit",
    ):
        assert methods[name] > 0, name
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png.unlink()
    assert cli.main(["bench", "--from-json", str(out), "--plot", str(png)]) == 0
    assert png.exists()


def test_bench_shapes_option_is_checked():
    import pytest

    with pytest.raises(SystemExit, match="cannot read 'ten'"):
        cli.main(["bench", "--shapes", "ten"])


def test_time_interleaved_settles_fast_methods_only():
    """Before each timed sample, a fast method runs untimed for ``settle`` seconds (steady state);
    a method slower than that is timed straight after the pause."""
    import time

    from softmax_multi.bench import time_interleaved

    calls = {"fast": 0, "slow": 0}

    def fast():
        calls["fast"] += 1

    def slow():
        calls["slow"] += 1
        time.sleep(0.03)

    times = time_interleaved({"fast": fast, "slow": slow}, rounds=3, number=1, warmup=1, pause=0, settle=0.02)
    assert set(times) == {"fast", "slow"} and times["slow"] >= 0.03 > times["fast"]
    assert calls["slow"] == 1 + 1 + 3  # warm-up, the estimate, one timed call per round: no settling
    assert calls["fast"] > 100  # settled for 20 ms before each of the 3 rounds


def test_bench_first_call_report_checks_its_limits(tmp_path, capsys):
    """A saved first-call run is judged against the limits, import + first call: warm 0.15 s,
    empty 1.5 s."""
    import json

    saved = tmp_path / "first.json"
    results = [["warm", 0.12, 0.04, 0.8], ["empty", 0.09, 0.01, 30.0]]
    saved.write_text(json.dumps({"group": "first-call", "results": results}))
    assert cli.main(["bench", "--from-json", str(saved)]) == 0
    printed = capsys.readouterr().out
    assert "0.160 s" in printed and "0.100 s" in printed
    assert "targets: 1 met, 1 missed" in printed
    assert "Numba cache warm   -     0.160 s   <= 0.15 s  MISSED" in printed
