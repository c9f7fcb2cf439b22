"""Every rule is registered once, documented, and listed in docs/rules.md."""

from __future__ import annotations

import importlib
import re

from support.scripts import ROOT, load_script
from tcpdoctor.diagnose.rules import all_rules


def test_rule_ids_are_unique_kebab_case_and_match_their_module() -> None:
    rules = all_rules()
    ids = [rule.id for rule in rules]
    assert len(ids) == len(set(ids))
    for rule in rules:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", rule.id), rule.id
        assert rule.check.__module__.rsplit(".", 1)[-1] == rule.id.replace("-", "_")


def test_every_rule_module_documents_what_it_looks_for() -> None:
    for rule in all_rules():
        doc = importlib.import_module(rule.check.__module__).__doc__ or ""
        assert len(doc.split()) >= 20, f"{rule.id}: module docstring too thin for docs/rules.md"


def test_rules_doc_is_generated_from_the_rules() -> None:
    expected = load_script("gen_rules_docs").render_rules()
    actual = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/rules.md is stale: run scripts/gen_rules_docs.py"
