"""Lazy package exports (PEP 562): a package's public names are imported on first use.

Importing ``mlp`` or ``mlp.train`` then loads neither numpy nor scikit-learn, so a script can
import its command-line helper first and run every heavy import inside it (where a Ctrl-C ends
in one line, not a traceback).
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any


class _Package(types.ModuleType):
    """A package whose exported names keep their meaning when a submodule of the same name is
    imported (``mlp.contract`` stays the function, as when the package imported it eagerly)."""

    _exports: frozenset[str] = frozenset()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._exports and isinstance(value, types.ModuleType):
            return  # the import system binding the submodule: the exported name wins
        super().__setattr__(name, value)


def lazy_exports(package: str, exports: Mapping[str, Sequence[str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: a name of ``exports`` (module -> names) from its
    module, else the submodule ``package.name``; kept in the package once imported."""
    source = {name: module for module, names in exports.items() for name in names}
    module = sys.modules[package]
    module.__class__ = _Package
    module._exports = frozenset(source)  # type: ignore[attr-defined]

    def __getattr__(name: str) -> Any:
        if name in source:
            value = getattr(importlib.import_module(source[name]), name)
        else:
            try:
                value = importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as err:
                if err.name != f"{package}.{name}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        types.ModuleType.__setattr__(module, name, value)
        return value

    return __getattr__
