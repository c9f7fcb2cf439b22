"""The catalogue of lab scenarios: name -> module, each module loaded only when used."""

from __future__ import annotations

import importlib

from tcpdoctor.errors import InputError
from tcpdoctor.lab.model import ScenarioSpec

# name -> module under tcpdoctor.lab.scenarios that defines SCENARIO
_SCENARIOS = {
    "close-wait-leak": "close_wait_leak",
    "fin-wait2-timeout": "fin_wait2_timeout",
    "idle-timeout-middlebox": "idle_timeout_middlebox",
    "keepalive-dead-peer": "keepalive_dead_peer",
    "linger-reset": "linger_reset",
    "nginx-keepalive": "nginx_keepalive",
    "port-exhaustion": "port_exhaustion",
    "redis-pool": "redis_pool",
    "retransmission-timeout": "retransmission_timeout",
    "syn-retries": "syn_retries",
    "time-wait-duration": "time_wait_duration",
    "time-wait-restart": "time_wait_restart",
    "tw-bucket-overflow": "tw_bucket_overflow",
}


def names() -> list[str]:
    return sorted(_SCENARIOS)


def get(name: str) -> ScenarioSpec:
    module_name = _SCENARIOS.get(name)
    if module_name is None:
        known = ", ".join(names())
        raise InputError(f"unknown scenario {name!r} (known: {known}; see 'tcpdoctor lab list')")
    module = importlib.import_module(f"tcpdoctor.lab.scenarios.{module_name}")
    spec = module.SCENARIO
    assert isinstance(spec, ScenarioSpec) and spec.name == name
    return spec


def all_specs() -> list[ScenarioSpec]:
    return [get(name) for name in names()]
