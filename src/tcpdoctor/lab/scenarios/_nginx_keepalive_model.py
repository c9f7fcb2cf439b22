"""nginx-keepalive without the kernel: what to expect and how it compares (pure).

One HTTP/1.1 client makes the same N GET requests to two nginx server blocks, one with
`keepalive_timeout 0`, one with keep-alive on. Expectations:

* close (keepalive_timeout 0): nginx answers "Connection: close" and closes after every
  response (ngx_http_finalize_connection() without keep-alive), so there is one handshake
  per request and nginx sends the first FIN every time.
* keep-alive: nginx keeps the connection until keepalive_requests requests were served on
  it (then it closes it itself, after the response that says "Connection: close") or the
  client stays idle longer than keepalive_timeout (our client never does). So there are
  ceil(N / keepalive_requests) handshakes; nginx closes every connection that reached the
  limit (floor(N / keepalive_requests) of them, the last one too when N is a multiple) and
  our client closes the one still open at the end, if any.
* TIME_WAIT lands on whichever side the capture shows sending the first FIN, for 60 s
  (_closes.time_wait_expected): N on the server for close, none anywhere during the
  keep-alive run except nginx's own closes, one on the client once it closes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tcpdoctor.lab.model import Check, Measure
from tcpdoctor.lab.scenarios._closes import Closer
from tcpdoctor.lab.scenarios._variant_model import (
    Knobs,
    VariantFacts,
    closer_check,
    count_check,
    failures_check,
    merged,
    tw_check,
)

CLOSE, KEEPALIVE = "close", "keepalive"
# ngx_http_core_module: keepalive_requests defaults to 1000 since nginx 1.19.10 (100 before),
# keepalive_timeout to 75 s.
NGINX_KEEPALIVE_REQUESTS = 1000
NGINX_KEEPALIVE_TIMEOUT = 75
NGINX_CLOSES_WITHOUT_KEEPALIVE = (
    "keepalive_timeout 0 disables keep-alive: nginx sends 'Connection: close' and closes "
    "after each response"
)


def variants(keepalive_timeout: int) -> tuple[tuple[str, str], tuple[str, str]]:
    return (
        (CLOSE, "keepalive_timeout 0"),
        (KEEPALIVE, f"keepalive_timeout {keepalive_timeout}"),
    )


@dataclass(frozen=True)
class Plan:
    requests: int  # per variant
    keepalive_timeout: int  # s, the keep-alive variant's
    keepalive_requests: int

    @property
    def keepalive_connections(self) -> int:
        """Connections the keep-alive variant needs: nginx closes one after
        keepalive_requests requests (ngx_http_set_keepalive() is skipped once
        r->connection->requests reaches it)."""
        return max(1, math.ceil(self.requests / self.keepalive_requests))

    @property
    def closed_by_server(self) -> int:
        """Every connection that reached keepalive_requests, the last one too when N is a
        multiple of it: its last response already says "Connection: close"."""
        return self.requests // self.keepalive_requests

    @property
    def closed_by_client(self) -> int:
        """The connection still open at the end, if nginx did not close it already."""
        return self.keepalive_connections - self.closed_by_server

    def as_dict(self) -> dict[str, Measure]:
        return {
            "requests_per_variant": self.requests,
            "close_handshakes": self.requests,
            "close_first_fin_by": Closer.SERVER.label,
            "keepalive_handshakes": self.keepalive_connections,
            "keepalive_closed_by_server": self.closed_by_server,
            "keepalive_closed_by_client": self.closed_by_client,
        }


def compare(
    plan: Plan, close: VariantFacts, keepalive: VariantFacts, knobs: Knobs
) -> tuple[Check, ...]:
    return (*_close_checks(plan, close, knobs), *_keepalive_checks(plan, keepalive, knobs))


def _close_checks(plan: Plan, facts: VariantFacts, knobs: Knobs) -> tuple[Check, ...]:
    return (
        failures_check(facts),
        count_check(
            "close_handshakes",
            f"{facts.label}: handshakes",
            plan.requests,
            facts.handshakes,
            NGINX_CLOSES_WITHOUT_KEEPALIVE + ": one connection per request",
        ),
        closer_check(facts, Closer.SERVER.label, NGINX_CLOSES_WITHOUT_KEEPALIVE),
        tw_check(facts, Closer.SERVER, "after", knobs),
        tw_check(facts, Closer.CLIENT, "after", knobs),
    )


def _keepalive_checks(plan: Plan, facts: VariantFacts, knobs: Knobs) -> tuple[Check, ...]:
    limit = (
        f"nginx closes a connection itself after keepalive_requests = "
        f"{plan.keepalive_requests} requests; our client never idles "
        f"{plan.keepalive_timeout} s"
    )
    return (
        failures_check(facts),
        count_check(
            "keepalive_handshakes",
            f"{facts.label}: handshakes",
            plan.keepalive_connections,
            facts.handshakes,
            f"ceil(requests / keepalive_requests): {limit}",
        ),
        count_check(
            "keepalive_closed_by_server",
            f"{facts.label}: connections nginx closed first",
            plan.closed_by_server,
            facts.closed_by(Closer.SERVER),
            limit,
        ),
        count_check(
            "keepalive_closed_by_client",
            f"{facts.label}: connections the client closed first",
            plan.closed_by_client,
            facts.closed_by(Closer.CLIENT),
            "the client closes the connection it still holds at the end (none when the "
            "last request used up keepalive_requests)",
        ),
        count_check(
            "keepalive_client_time_wait_during",
            f"{facts.label}: client TIME_WAIT while requests ran (sampled peak)",
            0,
            facts.client_tw_before_close,
            "the client closed nothing before the end",
        ),
        tw_check(facts, Closer.SERVER, "held", knobs),
        tw_check(facts, Closer.CLIENT, "after", knobs),
    )


def measured(close: VariantFacts, keepalive: VariantFacts) -> dict[str, Measure]:
    values = merged((close, keepalive))
    values["keepalive_closed_by_server"] = keepalive.closed_by(Closer.SERVER)
    values["keepalive_closed_by_client"] = keepalive.closed_by(Closer.CLIENT)
    values["keepalive_client_time_wait_during"] = keepalive.client_tw_before_close
    return values


__all__ = [
    "CLOSE",
    "KEEPALIVE",
    "NGINX_KEEPALIVE_REQUESTS",
    "Knobs",
    "Plan",
    "compare",
    "measured",
    "variants",
]
