"""Commands run one after another in a new Python process, to see what they import: a
command that says a mistake, or only reads results, should not wait for torch to load."""

from __future__ import annotations

import subprocess
import sys

_MARK = "exited:"


def exits_in_a_fresh_process(*commands: list[str]) -> tuple[list[str], str]:
    """``"<exit code> <torch loaded>"`` after each command, and everything printed."""
    probe = (
        "import sys\nfrom psicbatch.cli import main\n"
        f"for argv in {list(commands)!r}:\n"
        "    try:\n        main(argv)\n    except SystemExit as e:\n"
        f"        print({_MARK!r}, e.code, 'torch' in sys.modules, flush=True)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    lines = result.stdout.splitlines()
    exits = [line.removeprefix(_MARK).strip() for line in lines if line.startswith(_MARK)]
    return exits, result.stdout + result.stderr
