"""Conntrack facts for a flow through a middlebox, and keepalive with a peer that answers:
worked by hand from tcp_keepalive_timer() and nf_ct_is_expired()."""

from __future__ import annotations

import pytest

from tcpdoctor.errors import InputError
from tcpdoctor.kernel import constants as k
from tcpdoctor.kernel.conntrack import Midstream, idle_flow, midstream_state
from tcpdoctor.kernel.sysctls import SYSCTLS
from tcpdoctor.kernel.timing import keepalive_answered


def test_answered_keepalive_probes_every_max_of_idle_and_interval() -> None:
    # intvl <= time: the firing after a probe finds the connection idle for ~intvl only
    # and re-arms for the rest of `time`, so probes come every `time`.
    ka = keepalive_answered(5, 1)
    assert (ka.first_probe, ka.period) == (5.0, 5.0)
    # intvl > time: the next firing already finds idle >= time and probes at once.
    assert keepalive_answered(2, 7).period == 7.0
    assert keepalive_answered().first_probe == k.TCP_KEEPALIVE_TIME
    assert keepalive_answered().period == k.TCP_KEEPALIVE_TIME


@pytest.mark.parametrize(("time", "intvl"), [(0, 1), (1, 0), (32768, 1), (1, 32768)])
def test_answered_keepalive_takes_the_setsockopt_ranges(time: float, intvl: float) -> None:
    with pytest.raises(InputError):
        keepalive_answered(time, intvl)


def test_an_idle_flow_is_forgotten_once_the_pause_reaches_the_timeout() -> None:
    assert idle_flow(7, 5).forgotten is True
    assert idle_flow(5, 5).forgotten is True  # expired at exactly timeout: timeout - now <= 0
    assert idle_flow(4.9, 5).forgotten is False
    flow = idle_flow(7, 5)
    assert (flow.probes, flow.longest_silence, flow.survives) == (0, 7.0, False)


def test_keepalive_shorter_than_the_timeout_keeps_the_entry() -> None:
    flow = idle_flow(7, 5, keepalive_answered(2, 2))
    assert flow.probes == 3  # at 2, 4 and 6 s
    assert flow.longest_silence == pytest.approx(2.0)
    assert flow.survives is True


def test_keepalive_longer_than_the_timeout_does_not_help() -> None:
    flow = idle_flow(20, 5, keepalive_answered(6, 1))
    assert flow.probes == 3  # at 6, 12 and 18 s: too late, the first silence killed the entry
    assert flow.forgotten is True


def test_timer_slack_can_make_it_too_close_to_call() -> None:
    ka = keepalive_answered(4, 4)
    assert idle_flow(9, 5, ka).forgotten is False
    assert idle_flow(9, 5, ka, slack=0.5).forgotten is False
    assert idle_flow(9, 5, ka, slack=1.5).forgotten is None  # a late probe could miss
    # The silence after the last probe ends with the pause, not with a timer: no slack.
    assert idle_flow(4.5, 5, keepalive_answered(4, 4), slack=1.0).forgotten is False


def test_bad_arguments() -> None:
    with pytest.raises(InputError):
        idle_flow(-1, 5)
    with pytest.raises(InputError):
        idle_flow(1, 0)
    with pytest.raises(InputError):
        midstream_state(-1)


def test_midstream_segments_are_new_with_loose_tracking_else_invalid() -> None:
    assert midstream_state(k.NF_CT_TCP_LOOSE_DEFAULT) is Midstream.NEW
    assert midstream_state(0) is Midstream.INVALID
    loose = SYSCTLS["net.netfilter.nf_conntrack_tcp_loose"]
    assert loose.default == k.NF_CT_TCP_LOOSE_DEFAULT == 1
    assert loose.requires_module == "nf_conntrack"
