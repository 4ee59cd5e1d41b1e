"""`python -m embedclf` runs the CLI."""

from embedclf.entry import main

main()
