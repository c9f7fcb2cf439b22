"""Middlebox idle-timeout presets and the --idle-timeout parser."""

from __future__ import annotations

import pytest

from tcpdoctor.diagnose.idle_timeouts import (
    PRESETS,
    USER_SOURCE,
    VENDOR_CAVEAT,
    parse_duration,
    parse_idle_timeout,
    preset,
    preset_names,
)
from tcpdoctor.errors import InputError
from tcpdoctor.kernel.constants import NF_CT_TCP_TIMEOUT_ESTABLISHED


def test_presets_are_named_once_and_complete() -> None:
    names = [p.name for p in PRESETS]
    assert len(names) == len(set(names))
    for p in PRESETS:
        assert p.seconds > 0, p.name
        assert p.what and p.source and p.notes, p.name
        assert p.name == p.name.lower() and " " not in p.name


@pytest.mark.parametrize(
    ("name", "seconds"),
    [
        ("aws-nlb", 350),
        ("aws-alb", 60),
        ("aws-nat", 350),
        ("gcp-nat", 1200),
        ("gcp-ilb", 600),
        ("gcp-alb", 610),
        ("azure-lb", 240),
        ("azure-nat", 240),
        ("conntrack", 432_000),
    ],
)
def test_documented_defaults(name: str, seconds: int) -> None:
    found = preset(name)
    assert found is not None
    assert found.seconds == seconds


def test_conntrack_is_the_kernel_constant_not_a_vendor_value() -> None:
    conntrack = preset("conntrack")
    assert conntrack is not None
    assert conntrack.seconds == NF_CT_TCP_TIMEOUT_ESTABLISHED == 5 * 24 * 3600
    assert not conntrack.vendor
    assert "nf_conntrack_tcp_timeout_established" in conntrack.source


def test_vendor_values_carry_the_caveat_and_a_web_source() -> None:
    for p in PRESETS:
        if p.vendor:
            assert p.caveat == VENDOR_CAVEAT
            assert "check your configuration" in p.caveat
            assert p.source.startswith("https://"), p.name


def test_proxies_do_not_count_keepalive_probes() -> None:
    proxies = {p.name for p in PRESETS if not p.keepalive_resets}
    assert proxies == {"aws-alb", "aws-clb", "gcp-alb"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("350", 350.0),
        ("350s", 350.0),
        (" 90 s ", 90.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("2d", 172_800.0),
        ("0.5", 0.5),
        ("2", 2.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_idle_timeout(text) == (seconds, USER_SOURCE)


@pytest.mark.parametrize("text", ["aws-nlb", "AWS-NLB", "aws_nlb", " aws-nlb "])
def test_preset_names_are_forgiving(text: str) -> None:
    assert parse_idle_timeout(text) == (350.0, "aws-nlb")


def test_conntrack_preset_gives_the_default_and_its_name() -> None:
    assert parse_idle_timeout("conntrack") == (432_000.0, "conntrack")


@pytest.mark.parametrize(
    "text",
    ["", " ", "0", "0s", "-5", "abc", "5x", "1h30", "5m5m", "m", "nan", "inf", "1e3", "aws"],
)
def test_bad_input_is_one_line_listing_the_presets(text: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_idle_timeout(text)
    message = str(caught.value)
    assert "\n" not in message
    assert repr(text) in message
    assert preset_names() in message
    assert "aws-nlb" in message and "conntrack" in message


def test_parse_duration_rejects_mixed_bare_numbers() -> None:
    assert parse_duration("1h30") is None
    assert parse_duration("30m1h") == 5400.0
    assert parse_duration("") is None
