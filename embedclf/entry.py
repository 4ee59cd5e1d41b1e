"""The ``embedclf`` command: the admin CLI when the ``worker`` extra is installed, else one clear line."""

from __future__ import annotations

import sys

#: what the admin CLI's commands import (lazily, inside the commands): the ``worker`` extra
WORKER_MODULES = ("sqlalchemy", "numpy", "torch")


def main() -> None:
    from importlib.util import find_spec

    missing = next((m for m in WORKER_MODULES if find_spec(m) is None), None)
    try:
        if missing is not None:  # the light producer install: celery and redis only
            raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)
        from embedclf.cli import main as cli_main
    except ImportError as exc:
        print(f"Error: the embedclf command needs the worker extra (missing: {exc.name}): "
              "pip install 'embedclf[worker]'", file=sys.stderr)
        sys.exit(1)
    cli_main()


if __name__ == "__main__":  # pragma: no cover
    main()
