"""``python -m llcompile``: the CLI, e.g. under torchrun (``torchrun ... -m llcompile train ...``)."""

from llcompile.cli import main

main()
