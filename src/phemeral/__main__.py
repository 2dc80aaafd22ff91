"""`python -m phemeral` runs the CLI."""

from phemeral.cli import main

main()
