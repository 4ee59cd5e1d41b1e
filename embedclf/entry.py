"""The ``embedclf`` command: the admin CLI when the ``worker`` extra is installed, else one clear line."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from embedclf.cli import main as cli_main
    except ImportError as exc:  # the light producer install: celery and redis only
        print(f"Error: the embedclf command needs the worker extra (missing: {exc.name}): "
              "pip install 'embedclf[worker]'", file=sys.stderr)
        sys.exit(1)
    cli_main()


if __name__ == "__main__":  # pragma: no cover
    main()
