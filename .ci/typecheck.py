"""Type-check the package as it is installed: softmax_multi/ with backends/ and conformance/ inside it.

setuptools' package-dir maps ``softmax_multi.backends`` to backends/ and ``softmax_multi.conformance``
to conformance/; mypy knows no such mapping, so this lays the package out in a temporary directory
of symbolic links (nothing is copied) and runs mypy there with pyproject.toml's settings.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile

import tomllib

root = pathlib.Path(__file__).resolve().parents[1]
config = tomllib.loads((root / "pyproject.toml").read_text())
mapping = config["tool"]["setuptools"]["package-dir"]
with tempfile.TemporaryDirectory() as tmp:
    package = pathlib.Path(tmp) / "softmax_multi"
    package.mkdir()
    for entry in (root / "softmax_multi").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, directory in mapping.items():
        (pathlib.Path(tmp) / name.replace(".", "/")).symlink_to(root / directory, target_is_directory=True)
    command = [sys.executable, "-m", "mypy", "--config-file", str(root / "pyproject.toml"), "-p", "softmax_multi"]
    sys.exit(subprocess.run(command, cwd=tmp, env={**os.environ, "MYPYPATH": tmp}).returncode)
