"""The one exception type users see: a one-line message, exit code 2 on the CLI."""


class LLCompileError(Exception):
    """A problem with the user's input (model, options, paths), reported without a traceback."""

    exit_code = 2
