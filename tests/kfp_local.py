"""Running a compiled pipeline with kfp's local runner, with its condition evaluation fixed.

kfp 2.16's local orchestrator evaluates a `dsl.If` condition by pasting values into the compiled expression and
calling `eval`: `inputs.parameter_values['pipelinechannel--gate-Output'] == true` becomes
`inputs.parameter_values['True'] == true`, which fails, and a failed evaluation counts as False, so every branch
is silently skipped (string conditions break on the quotes the same way). `fixed_conditions()` replaces that one
evaluator, for the duration of a test, by one that resolves each `inputs.parameter_values[...]` reference to its
value and maps the CEL literals and operators to Python; an unresolvable reference raises instead of skipping.
The pipeline spec itself is untouched: what a cluster runs is what the test runs.

The local runner also indents task output by replacing `builtins.print` for the duration of each task. Tasks of a
`dsl.ParallelFor` run in threads, and one thread can put back another's replacement (a race in kfp 2.16): every
later `print` of the test session would be indented. `print_restored()` puts the real `print` back.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_REFERENCE = re.compile(r"inputs\.parameter_values\['(pipelinechannel--[A-Za-z0-9_\-]+)'\]")
_CEL_TO_PYTHON = ((r"&&", " and "), (r"\|\|", " or "), (r"!(?!=)", " not "), (r"\btrue\b", "True"),
                  (r"\bfalse\b", "False"), (r"\bnull\b", "None"))  # fmt: skip


_PRINT = builtins.print  # the real one, before any local run


@contextmanager
def print_restored() -> Iterator[None]:
    """Put the real `builtins.print` back after the block (see the module docstring)."""
    try:
        yield
    finally:
        builtins.print = _PRINT


def evaluate(condition: str, resolve: Any) -> bool:
    """Evaluate a compiled KFP condition; `resolve(channel)` gives the value of `pipelinechannel--...`."""
    values: dict[str, Any] = {}

    def name_for(match: re.Match[str]) -> str:
        name = f"_v{len(values)}"
        value = resolve(match.group(1))
        if value is None:
            raise ValueError(f"condition {condition!r}: {match.group(1)} has no value")
        values[name] = value
        return name

    expression = _REFERENCE.sub(name_for, condition)
    for pattern, replacement in _CEL_TO_PYTHON:
        expression = re.sub(pattern, replacement, expression)
    return bool(eval(expression, {"__builtins__": {}}, values))  # a compiled pipeline's condition, no builtins


@contextmanager
def fixed_conditions() -> Iterator[None]:
    """Patch kfp's local condition evaluator (see the module docstring); restored on exit, with `print`."""
    from kfp.local.orchestrator import enhanced_dag_orchestrator as orchestrator

    evaluator = orchestrator.ConditionEvaluator
    original = evaluator.__dict__["evaluate_condition"]

    def evaluate_condition(condition: str, io_store: Any) -> bool:
        if not condition or not condition.strip():
            return True
        return evaluate(condition, lambda channel: evaluator._resolve_pipeline_channel(channel, io_store))

    evaluator.evaluate_condition = staticmethod(evaluate_condition)
    try:
        with print_restored():
            yield
    finally:
        evaluator.evaluate_condition = original
