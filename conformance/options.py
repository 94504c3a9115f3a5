"""The conformance suite's options, in one table: the pytest plugin's and ``softmax-multi
conformance``'s, spelled the same and with the same defaults (this module imports no pytest)."""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_MAX_EXAMPLES", "DEFAULT_TIER", "OPTIONS", "TIERS"]

TIERS = ("quick", "full")
DEFAULT_TIER = "quick"  # rows of 1e6 and longer only with --smx-tier full
DEFAULT_MAX_EXAMPLES = 50

OPTIONS: dict[str, dict[str, Any]] = {
    "--smx-backend": {
        "action": "append",
        "default": [],
        "metavar": "NAME",
        "help": "backend to certify: a registered name or module:attr of a BackendSpec; repeatable; default: every ready backend",
    },
    "--smx-tier": {
        "choices": TIERS,
        "default": DEFAULT_TIER,
        "help": f"quick leaves out rows of 1e6 and longer; full runs them too (default: {DEFAULT_TIER})",
    },
    "--smx-max-examples": {
        "type": int,
        "default": DEFAULT_MAX_EXAMPLES,
        "metavar": "N",
        "help": f"Hypothesis examples per property and fuzz test (default: {DEFAULT_MAX_EXAMPLES})",
    },
    "--smx-known-failures": {
        "action": "append",
        "default": [],
        "metavar": "FILE",
        "help": "a file of known failures, one pattern per line (a check, check:function or a test id "
        "pattern), '#' starts a reason; applies to every backend under test; repeatable",
    },
}
