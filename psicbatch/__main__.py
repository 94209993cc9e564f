"""``python -m psicbatch``: the same as the ``psicbatch`` command."""

from psicbatch.cli import entry

entry()
