"""Scenario parameters and `--sysctl` arguments: parsing, normalising, validating."""

from __future__ import annotations

import pytest

from tcpdoctor.errors import InputError
from tcpdoctor.lab import registry
from tcpdoctor.lab.model import Param, resolve_params
from tcpdoctor.lab.runner import prepare
from tcpdoctor.lab.scenarios import port_exhaustion as pe
from tcpdoctor.lab.sysctl_args import normalise_name, parse_setting, parse_settings

PARAMS = (
    Param("ports", int, 64, 32, "ports", 1, 100),
    Param("rate", float, 50.0, 64.0, "rate", 0.1, 1000.0),
    Param("tw_reuse", int, None, None, "reuse", choices=(0, 1, 2)),
    Param("pool", bool, False, False, "pool"),
)


def test_defaults_quick_values_and_given_values() -> None:
    assert resolve_params(PARAMS, {}) == {
        "ports": 64,
        "rate": 50.0,
        "tw_reuse": None,
        "pool": False,
    }
    quick = resolve_params(PARAMS, {}, quick=True)
    assert quick["ports"] == 32 and quick["rate"] == 64.0
    given = resolve_params(PARAMS, {"ports": 10, "tw_reuse": 1, "pool": True}, quick=True)
    assert given == {"ports": 10, "rate": 64.0, "tw_reuse": 1, "pool": True}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"ports": 0}, "--ports must be at least 1"),
        ({"ports": 101}, "--ports must be at most 100"),
        ({"rate": float("nan")}, "--rate must be a finite number"),
        ({"tw_reuse": 3}, "--tw-reuse must be one of 0, 1, 2"),
        ({"bogus": 1}, "unknown scenario parameter"),
    ],
)
def test_bad_parameters_are_input_errors(given: dict[str, float], message: str) -> None:
    with pytest.raises(InputError, match=message):
        resolve_params(PARAMS, given)


@pytest.mark.parametrize(
    "name",
    ["tcp_tw_reuse", "net.ipv4.tcp_tw_reuse", "net/ipv4/tcp_tw_reuse", "  tcp_tw_reuse "],
)
def test_sysctl_names_as_users_write_them(name: str) -> None:
    assert normalise_name(name) == "net.ipv4.tcp_tw_reuse"


def test_sysctl_outside_ipv4_keeps_its_prefix() -> None:
    assert normalise_name("net.core.somaxconn") == "net.core.somaxconn"
    assert normalise_name("somaxconn") == "net.core.somaxconn"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tcp_bogus=1", "unknown sysctl 'tcp_bogus'"),
        ("net.ipv4.nonsense=1", "unknown sysctl"),
        ("tcp_tw_reuse", "NAME=VALUE"),
        ("=1", "needs a name"),
        ("tcp_fin_timeout=abc", "expected an integer"),
        ("ip_local_port_range=40000", "two port numbers"),
        ("fs.file-max=100", "host-wide"),
        ("tcp_max_orphans=10", "host-wide"),
    ],
)
def test_bad_sysctl_arguments(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_setting(text)


@pytest.mark.parametrize("text", ["40000 40063", "40000-40063", "40000,40063", " 40000\t40063 "])
def test_port_range_spellings(text: str) -> None:
    setting = parse_setting(f"ip_local_port_range={text}")
    assert setting.value == (40000, 40063)
    assert setting.text == "40000 40063"


def test_later_sysctl_replaces_earlier() -> None:
    settings = parse_settings(["tcp_tw_reuse=1", "tcp_fin_timeout=5", "net.ipv4.tcp_tw_reuse=0"])
    assert {s.name: s.text for s in settings} == {
        "net.ipv4.tcp_fin_timeout": "5",
        "net.ipv4.tcp_tw_reuse": "0",
    }


# --- port-exhaustion's own rules ----------------------------------------------------------


def test_port_range_follows_ports_unless_given_as_sysctl() -> None:
    values = resolve_params(pe.PARAMS, {"ports": 10, "tw_reuse": 1})
    chosen = {s.name: s.text for s in pe.client_settings(values, ())}
    assert chosen["net.ipv4.ip_local_port_range"] == "32768 32777"
    assert chosen["net.ipv4.tcp_tw_reuse"] == "1"
    user = parse_settings(["ip_local_port_range=50000-50099"])
    chosen = {s.name: s.text for s in pe.client_settings(values, user)}
    assert chosen["net.ipv4.ip_local_port_range"] == "50000 50099"


@pytest.mark.parametrize(
    ("given", "sysctls", "message"),
    [
        ({"pool": True, "server_closes_first": True}, [], "exclude each other"),
        ({"tw_reuse": 1}, ["tcp_tw_reuse=0"], "contradicts"),
        ({}, ["ip_local_port_range=1000 1100"], "1024 or above"),
    ],
)
def test_port_exhaustion_rejects_contradictions(
    given: dict[str, object], sysctls: list[str], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        prepare("port-exhaustion", given, sysctls)  # type: ignore[arg-type]


def test_same_tw_reuse_twice_is_fine() -> None:
    run = prepare("port-exhaustion", {"tw_reuse": 1}, ["tcp_tw_reuse=1"], quick=True)
    assert run.values["tw_reuse"] == 1


def test_unknown_scenario() -> None:
    with pytest.raises(InputError, match="unknown scenario 'nope'"):
        registry.get("nope")
    assert "port-exhaustion" in registry.names()
