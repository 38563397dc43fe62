"""The exceptions users see: a one-line message, exit code 2 on the CLI.

Every one is an ``LLCompileError``; a Python caller who needs to tell them apart catches the
subclass that says whose input was wrong.
"""


class LLCompileError(Exception):
    """A problem with the user's input (model, options, paths, data), reported without a traceback."""

    exit_code = 2


class ModelError(LLCompileError):
    """The model cannot be read, is not valid ONNX, uses what llcompile does not support, or cannot be
    compiled into a program that computes it (a static batch that cannot be made dynamic)."""


class OptionError(LLCompileError):
    """An option's value, or a combination of options, that a strategy does not accept."""


class DataError(LLCompileError):
    """A data set or data arrays that cannot be read or do not fit the program."""


class ProgramError(LLCompileError):
    """A program directory that is missing, unreadable or inconsistent."""


class TrainingDiverged(LLCompileError):
    """A stage's loss became NaN or infinite during training (the options, usually the learning rate,
    do not suit the model)."""
