"""``python -m llcompile``: the CLI, e.g. under torchrun (``torchrun ... -m llcompile train ...``)."""

from llcompile.cli.commands import main

if __name__ == "__main__":
    main()
