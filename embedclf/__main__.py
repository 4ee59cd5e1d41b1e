"""`python -m embedclf` runs the CLI."""

from embedclf.cli import main

main()
