"""Running `headprune` sub-commands in-process."""
from __future__ import annotations

from headprune.cli import main


def run(capsys, argv):
    """`headprune argv...` in this process: (exit code, captured stdout/stderr)."""
    code = main([str(a) for a in argv])
    return code, capsys.readouterr()
