"""Runs the rules over a Context and collects what they found, and what they could not see."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import NamedTuple

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.model import Finding, Rule, RuleSkipped, Severity
from tcpdoctor.diagnose.rules import all_rules
from tcpdoctor.errors import TcpDoctorError

log = logging.getLogger(__name__)


class SkippedRule(NamedTuple):
    rule: str
    reason: str


class Diagnosis(NamedTuple):
    findings: tuple[Finding, ...]  # most severe first
    skipped: tuple[SkippedRule, ...]
    limitations: tuple[str, ...]
    rules_run: tuple[str, ...]

    @property
    def worst(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def at_least(self, severity: Severity) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity >= severity)


def diagnose(ctx: Context, rules: Iterable[Rule] | None = None) -> Diagnosis:
    chosen = tuple(rules) if rules is not None else all_rules()
    findings: list[Finding] = []
    skipped: list[SkippedRule] = []
    for rule in chosen:
        try:
            findings.extend(rule.check(ctx))
        except RuleSkipped as why:
            skipped.append(SkippedRule(rule.id, str(why)))
        except TcpDoctorError as err:
            skipped.append(SkippedRule(rule.id, str(err)))
        except Exception as err:  # a broken rule must not hide the other findings
            log.debug("rule %s failed", rule.id, exc_info=True)
            skipped.append(SkippedRule(rule.id, f"internal error: {type(err).__name__}: {err}"))
    order = {rule.id: index for index, rule in enumerate(chosen)}
    findings.sort(key=lambda f: (-f.severity, order.get(f.rule, 0)))
    return Diagnosis(
        findings=tuple(findings),
        skipped=tuple(skipped),
        limitations=tuple(dict.fromkeys(ctx.limitations)),
        rules_run=tuple(rule.id for rule in chosen),
    )
