"""One-line messages from onnxruntime's exceptions.

ORT's text starts with a C++ source location, a function signature and the failed check
("/onnxruntime_src/...cc:632 onnxruntime::...(...) largest <= 1 was false. Can broadcast ..."),
and a kernel's failure is nested inside the session's. Kept: the failing node and the message.
"""

from __future__ import annotations

import re

from llcompile.errors import LLCompileError

_NO_GRADIENT = re.compile(r"The gradient builder has not been registered: (\S+) for node (.*)$")
_FAILED_NODE = re.compile(r"while running (\w+) node\. Name:'([^']*)'")
_STATUS = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : ")
_CHECK = " was false. "


def ort_message(exc: BaseException) -> str:
    """The gist of ``exc``'s text on one line: what failed, where (node) and why."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    missing = _NO_GRADIENT.search(text)
    if missing:
        return f"no gradient for {missing[1]} (node {missing[2]!r})"
    # the innermost status's message, after the failed check that a C++ location and signature precede
    detail = _STATUS.split(text)[-1].rsplit("Status Message: ", 1)[-1].rsplit(_CHECK, 1)[-1]
    node = _FAILED_NODE.search(text)
    return f"{node[1]} node {node[2]!r}: {detail}" if node else detail


def ort_error(context: str, exc: BaseException) -> LLCompileError:
    """``context: <ort_message(exc)>`` as the user-facing error."""
    return LLCompileError(f"{context}: {ort_message(exc)}")
