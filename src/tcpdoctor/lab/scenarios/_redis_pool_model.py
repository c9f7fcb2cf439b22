"""redis-pool without the kernel: what to expect and how it compares (pure, unit-tested).

Two variants make the same INCR commands against one redis-server: `new` builds a redis-py
client per command and closes it, `pool` shares one ConnectionPool. Expectations:

* handshakes: one per command for `new`; at most one per worker for `pool` (a pool opens
  a connection only when no idle one is free).
* who closes: redis-py's Connection.disconnect() shuts the socket down itself, and
  redis-server never closes an idle client while its `timeout` is 0, so the client's FIN
  comes first. Checked against the capture, and the TIME_WAIT expectations are built from
  what the capture shows, through the kernel rule (_closes.time_wait_expected): one client
  TIME_WAIT per command for `new`; none while the pool is open, one per pooled connection
  once it is closed; none on the server.
* throughput: a pooled command skips the handshake and the client set-up, so the pool is
  at least as fast (checked as a ratio >= 1, no exact figure: it depends on the CPU).
* redis counted every INCR exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

from tcpdoctor.lab.model import Check, Measure, at_least
from tcpdoctor.lab.scenarios._closes import Closer
from tcpdoctor.lab.scenarios._variant_model import (
    ESTABLISHED,
    Knobs,
    VariantFacts,
    closer_check,
    count_check,
    failures_check,
    merged,
    range_check,
    tw_check,
)

NEW, POOL = "new", "pool"
VARIANTS = (
    (NEW, "new connection per command"),
    (POOL, "ConnectionPool"),
)
REDIS_PY_CLOSES = (
    "redis-py's Connection.disconnect() calls shutdown(SHUT_RDWR) then close(); "
    "redis-server with timeout 0 never closes an idle client"
)


@dataclass(frozen=True)
class Plan:
    commands: int  # per variant
    workers: int  # threads per variant, and the pool's max_connections

    def as_dict(self) -> dict[str, Measure]:
        return {
            "commands_per_variant": self.commands,
            "workers": self.workers,
            "new_handshakes": self.commands,
            "pool_handshakes_max": self.workers,
            "first_fin_by": Closer.CLIENT.label,
            "server_time_wait": 0,
        }


def compare(
    plan: Plan, new: VariantFacts, pool: VariantFacts, counter: int | None, knobs: Knobs
) -> tuple[Check, ...]:
    return (
        *_new_checks(plan, new, knobs),
        *_pool_checks(plan, pool, knobs),
        _speedup_check(new, pool),
        count_check(
            "redis_counter",
            "INCRs redis counted",
            new.successes + pool.successes,
            counter,
            "every acknowledged INCR was executed once",
        ),
    )


def _new_checks(plan: Plan, facts: VariantFacts, knobs: Knobs) -> tuple[Check, ...]:
    return (
        failures_check(facts),
        count_check(
            "new_handshakes",
            f"{facts.label}: handshakes",
            plan.commands,
            facts.handshakes,
            "a new redis.Redis client per command opens its own TCP connection",
        ),
        closer_check(facts, Closer.CLIENT.label, REDIS_PY_CLOSES),
        tw_check(facts, Closer.CLIENT, "after", knobs),
        tw_check(facts, Closer.SERVER, "after", knobs),
    )


def _pool_checks(plan: Plan, facts: VariantFacts, knobs: Knobs) -> tuple[Check, ...]:
    return (
        failures_check(facts),
        range_check(
            "pool_handshakes",
            f"{facts.label}: handshakes",
            1,
            plan.workers,
            facts.handshakes,
            f"ConnectionPool(max_connections={plan.workers}) opens a connection only when "
            "no idle one is free, and keeps it",
        ),
        tw_check(facts, Closer.CLIENT, "held", knobs),
        count_check(
            "pool_client_established_held",
            f"{facts.label}: client ESTABLISHED while the pool is open",
            facts.handshakes,
            facts.held[0].get(ESTABLISHED),
            "every connection the pool opened is still open",
        ),
        closer_check(facts, Closer.CLIENT.label, REDIS_PY_CLOSES + " (pool.disconnect())"),
        tw_check(facts, Closer.CLIENT, "after", knobs),
        tw_check(facts, Closer.SERVER, "after", knobs),
    )


def speedup(new: VariantFacts, pool: VariantFacts) -> float | None:
    if new.rate is None or pool.rate is None or new.rate <= 0:
        return None
    return pool.rate / new.rate


def _speedup_check(new: VariantFacts, pool: VariantFacts) -> Check:
    ratio = speedup(new, pool)
    return at_least(
        "pool_speedup",
        "commands per second, pool / new connection",
        1.0,
        None if ratio is None else round(ratio, 2),
        unit="x",
        basis="a pooled command skips the handshake, the client set-up and the close",
    )


def measured(new: VariantFacts, pool: VariantFacts, counter: int | None) -> dict[str, Measure]:
    values = merged((new, pool))
    ratio = speedup(new, pool)
    values["pool_speedup"] = None if ratio is None else round(ratio, 2)
    values["redis_counter"] = counter
    return values


__all__ = ["NEW", "POOL", "VARIANTS", "Knobs", "Plan", "compare", "measured", "speedup"]
