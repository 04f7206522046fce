"""Loaded into `schemathesis run` (SCHEMATHESIS_HOOKS) by tests/integration/test_openapi.py.

CPython 3.11 keeps the AST constructor's recursion-depth bookkeeping in state the threads share: two
threads in `ast.parse` at once can fail with `SystemError: AST constructor recursion depth mismatch`.
Hypothesis parses whole source files to describe filter lambdas, and the fuzzer's two workers are
threads, so now and then a run stopped on that error (a "Runtime Error", not a finding). Parsing one
at a time costs nothing measurable.
"""

from __future__ import annotations

import ast
import threading
from typing import Any

_parse = ast.parse
_lock = threading.Lock()


def _serialized_parse(*args: Any, **kwargs: Any) -> Any:
    with _lock:
        return _parse(*args, **kwargs)


if getattr(ast.parse, "__name__", "") != "_serialized_parse":
    ast.parse = _serialized_parse  # type: ignore[assignment]
