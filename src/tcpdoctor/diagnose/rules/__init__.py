"""One module per rule; each defines RULE. Modules are found by listing this package, so
adding a rule is adding a file."""

from __future__ import annotations

import functools
import importlib
import pkgutil

from tcpdoctor.diagnose.model import Rule


@functools.cache  # the package's modules do not change while the process runs
def all_rules() -> tuple[Rule, ...]:
    rules = []
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module.name.startswith("_"):
            continue
        loaded = importlib.import_module(f"{__name__}.{module.name}")
        rule = getattr(loaded, "RULE", None)
        if not isinstance(rule, Rule):
            raise TypeError(f"{loaded.__name__} defines no RULE")
        rules.append(rule)
    return tuple(rules)
