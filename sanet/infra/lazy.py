"""Lazy attributes of a package (PEP 562): its public names load their module on first use.

The CLI imports `sanet.hpo` and `sanet.registry` at start-up for their error classes and names; their functions need
torch, optuna or mlflow, which take seconds to import. A package lists which module holds each public name, and its
`__getattr__` imports that module only when the name is first used.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, modules: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level `__getattr__` for `package`: `modules` maps a public name to the module that defines it."""

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        setattr(sys.modules[package], name, value)  # cached: the next use is a plain attribute
        return value

    return __getattr__
