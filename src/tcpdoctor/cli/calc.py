"""`tcpdoctor calc`: the kernel's timing rules as a calculator.

Each subcommand prints the answer and the schedule that produces it; `--json` prints the
record from tcpdoctor.kernel.timing instead (durations in seconds, keys as in docs/json.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from tcpdoctor.kernel import timing
from tcpdoctor.kernel.constants import (
    DEFAULT_PORT_RANGE,
    REFERENCE_HZ,
    TCP_FIN_TIMEOUT,
    TCP_KEEPALIVE_INTVL,
    TCP_KEEPALIVE_PROBES,
    TCP_KEEPALIVE_TIME,
    TCP_ORPHAN_RETRIES,
    TCP_RETR2,
    TCP_RTO_MAX,
    TCP_RTO_MAX_MS_MAX,
    TCP_RTO_MAX_MS_MIN,
    TCP_RTO_MIN,
    TCP_SYN_LINEAR_TIMEOUTS,
    TCP_SYN_RETRIES,
    TCP_SYNACK_RETRIES,
    TCP_TW_REUSE_DEFAULT,
    TCP_TW_REUSE_DELAY_MS,
    TCP_USER_TIMEOUT_MAX_MS,
    TW_SOCK_BYTES,
)
from tcpdoctor.render.json import dumps

F = TypeVar("F", bound=Callable[..., Any])

_MS = 1000.0
# Numeric positional arguments may be negative ("-1"): let them reach our validation
# instead of being mistaken for an unknown option.
_NUMERIC_ARGS = {"ignore_unknown_options": True}
# Keepalive runs can produce thousands of probes; show the head and the tail.
_HEAD_ROWS = 12
_TAIL_ROWS = 4


# --- shared options -----------------------------------------------------------------------


def _json_option(command: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON object (docs/json.md)."
    )(command)


def _rto_max_option(command: F) -> F:
    return click.option(
        "--rto-max-ms",
        type=click.IntRange(TCP_RTO_MAX_MS_MIN, TCP_RTO_MAX_MS_MAX),
        default=round(TCP_RTO_MAX * _MS),
        show_default=True,
        help="tcp_rto_max_ms (6.15+): RTO ceiling, also used by the time budget.",
    )(command)


def _initial_rto_option(command: F) -> F:
    return click.option(
        "--initial-rto-ms",
        type=float,
        default=TCP_RTO_MIN * _MS,
        show_default=True,
        help="RTO when the loss starts (200 ms on a LAN; larger on long paths).",
    )(command)


def _hz_option(command: F) -> F:
    return click.option(
        "--hz",
        type=int,
        default=REFERENCE_HZ,
        show_default=True,
        help="CONFIG_HZ, for how late the RTO timers can fire.",
    )(command)


def _user_timeout_option(command: F) -> F:
    return click.option(
        "--user-timeout-ms",
        type=click.IntRange(0, TCP_USER_TIMEOUT_MAX_MS),
        default=0,
        show_default=True,
        help="TCP_USER_TIMEOUT in ms; 0 = not set.",
    )(command)


def _user_timeout(ms: int) -> float | None:
    return ms / _MS if ms else None


# --- output helpers -----------------------------------------------------------------------


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _emit(record: object, as_json: bool, render: Callable[[Console], None]) -> None:
    if as_json:
        click.echo(dumps(record))
    else:
        render(_console())


def _num(value: float) -> str:
    """Seconds without float noise: 924.6, 0.20005, 131."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _dur(seconds: float) -> str:
    """'924.6 s (15 min 24.6 s)' for long durations, '0.7 s' for short ones."""
    text = f"{_num(seconds)} s"
    if seconds < 60:
        return text
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{int(hours)} h"] if hours else []
    parts += [f"{int(minutes)} min"] if minutes or hours else []
    parts += [f"{_num(round(secs, 6))} s"] if secs else []
    return f"{text} ({' '.join(parts)})"


def _give_up_rows(
    user_timeout: float | None, schedule: timing.RetransmitSchedule, why: str
) -> list[tuple[str, str]]:
    """The closing lines every give-up calculation prints."""
    rows = []
    if user_timeout is not None:
        rows.append(("TCP_USER_TIMEOUT", f"{_dur(user_timeout)}, replaces the budget"))
    rows += [
        ("ETIMEDOUT at", f"{_dur(schedule.gives_up_at)}: {why}"),
        ("retransmissions", str(schedule.retransmissions)),
    ]
    return rows


def _summary(console: Console, title: str, rows: Sequence[tuple[str, str]]) -> None:
    """A bold title, then aligned "label  value" lines (never wrapped mid-value)."""
    console.print(title, style="bold", markup=False)
    width = max((len(label) for label, _ in rows), default=0)
    for label, value in rows:
        console.print(f"  {label:<{width}}  {value}", markup=False, soft_wrap=True)


def _model_formula(boundary: int, base: float, rto_max: float, thresh: int) -> str:
    """The arithmetic inside tcp_model_timeout(), spelled out."""
    doubling = f"(2^{min(boundary, thresh) + 1} - 1) x {_num(base)} s"
    if boundary <= thresh:
        return doubling
    return f"{doubling} + ({boundary} - {thresh}) x {_num(rto_max)} s"


def _schedule_table(
    schedule: timing.RetransmitSchedule,
    *,
    first: str,
    sent: str,
    end: str,
    first_sent: str | None = None,
) -> Table:
    table = Table(title=None, show_edge=False, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("event")
    table.add_column("at (s)", justify="right")
    table.add_column("then waits (s)", justify="right")
    table.add_row("0", first, "0", _num(schedule.waits[0]))
    for index, at in enumerate(schedule.retransmit_times, start=1):
        event = first_sent if index == 1 and first_sent else sent
        table.add_row(str(index), event, _num(at), _num(schedule.waits[index]))
    table.add_row("", end, _num(schedule.gives_up_at), "")
    return table


def _elided(values: Sequence[float]) -> list[tuple[int, float | None]]:
    """(1-based index, value) rows with a None gap marker when the list is long."""
    rows = list(enumerate(values, start=1))
    if len(rows) <= _HEAD_ROWS + _TAIL_ROWS:
        return [(i, v) for i, v in rows]
    gap: list[tuple[int, float | None]] = [(0, None)]
    return [(i, v) for i, v in rows[:_HEAD_ROWS]] + gap + rows[-_TAIL_ROWS:]


_REASONS = {
    timing.GiveUpReason.TIME_BUDGET: "time budget used up",
    timing.GiveUpReason.USER_TIMEOUT: "TCP_USER_TIMEOUT reached",
    timing.GiveUpReason.RETRY_COUNT: "retransmission count reached",
    timing.GiveUpReason.PROBES_EXHAUSTED: "all keepalive probes unanswered",
}


# --- the group ----------------------------------------------------------------------------


@click.group()
def calc() -> None:
    """Compute the kernel's TCP timers: give-up times, lifetimes, port budgets.

    Every answer comes with the schedule behind it. Defaults are the kernel's defaults.
    """


@calc.command("retries2", context_settings=_NUMERIC_ARGS)
@click.argument("retries", type=int, default=TCP_RETR2, required=False)
@_rto_max_option
@_user_timeout_option
@_initial_rto_option
@_hz_option
@_json_option
def retries2_cmd(
    retries: int,
    rto_max_ms: int,
    user_timeout_ms: int,
    initial_rto_ms: float,
    hz: int,
    as_json: bool,
) -> None:
    """Established give-up time (tcp_retries2).

    When a connection with unacknowledged data reports ETIMEDOUT, and every RTO
    retransmission before it. The budget runs from the first RTO retransmission.
    """
    result = timing.established_give_up(
        retries,
        rto_max=rto_max_ms / _MS,
        user_timeout=_user_timeout(user_timeout_ms),
        initial_rto=initial_rto_ms / _MS,
        hz=hz,
    )

    def render(console: Console) -> None:
        formula = _model_formula(
            result.retries2, result.rto_base, result.rto_max, result.linear_backoff_thresh
        )
        rows = [
            ("time budget", _dur(result.model_budget)),
            (
                "",
                f"tcp_model_timeout({result.retries2}, {_num(result.rto_base)} s, "
                f"{_num(result.rto_max)} s) = {formula}",
            ),
            ("budget from", f"{_dur(result.budget_from)}: the first RTO retransmission"),
        ]
        rows += _give_up_rows(
            result.user_timeout,
            result.schedule,
            "the first RTO expiry with the budget used up",
        )
        rows += _late_timer_rows(result, hz)
        _summary(console, f"Established give-up, tcp_retries2 = {result.retries2}", rows)
        console.print(
            _schedule_table(
                result.schedule,
                first="data sent",
                sent="RTO retransmission",
                end="ETIMEDOUT",
                first_sent="RTO retransmission, budget starts",
            )
        )

    _emit(result, as_json, render)


def _late_timer_rows(
    result: timing.EstablishedGiveUp | timing.OrphanGiveUp, hz: int
) -> list[tuple[str, str]]:
    """Where late timers may end the schedule one expiry sooner, when they can."""
    sooner = result.sooner_give_up_at
    if sooner is None or result.headroom is None:
        return []
    return [
        (
            "late timers",
            f"may end it at {_dur(sooner)}: {_num(result.headroom)} s short of the budget "
            f"there, less than the worst-case lateness of the timers at HZ={hz}",
        )
    ]


@calc.command("syn-retries", context_settings=_NUMERIC_ARGS)
@click.argument("retries", type=int, default=TCP_SYN_RETRIES, required=False)
@click.option(
    "--linear-timeouts",
    type=int,
    default=TCP_SYN_LINEAR_TIMEOUTS,
    show_default=True,
    help="tcp_syn_linear_timeouts (6.5+). Use 0 for kernels before 6.5.",
)
@_rto_max_option
@_user_timeout_option
@_json_option
def syn_retries_cmd(
    retries: int, linear_timeouts: int, rto_max_ms: int, user_timeout_ms: int, as_json: bool
) -> None:
    """connect() give-up time (tcp_syn_retries).

    When an unanswered SYN makes connect() fail with ETIMEDOUT, and every SYN
    retransmission before it.
    """
    result = timing.syn_give_up(
        retries,
        linear_timeouts=linear_timeouts,
        rto_max=rto_max_ms / _MS,
        user_timeout=_user_timeout(user_timeout_ms),
    )

    def render(console: Console) -> None:
        rows = [
            (
                "count limit",
                f"{result.max_retransmits} retransmissions "
                f"({result.syn_retries} + {result.linear_timeouts} linear)",
            ),
            (
                "time limit",
                f"{_dur(result.model_budget)} = tcp_model_timeout("
                f"{result.syn_retries}, 1 s, {_num(result.rto_max)} s)",
            ),
        ]
        rows += _give_up_rows(
            result.user_timeout, result.schedule, _REASONS[result.schedule.reason]
        )
        title = (
            f"SYN give-up, tcp_syn_retries = {result.syn_retries}, "
            f"tcp_syn_linear_timeouts = {result.linear_timeouts}"
        )
        _summary(console, title, rows)
        console.print(
            _schedule_table(
                result.schedule, first="SYN sent", sent="SYN retransmitted", end="ETIMEDOUT"
            )
        )

    _emit(result, as_json, render)


@calc.command("synack-retries", context_settings=_NUMERIC_ARGS)
@click.argument("retries", type=int, default=TCP_SYNACK_RETRIES, required=False)
@_json_option
def synack_retries_cmd(retries: int, as_json: bool) -> None:
    """SYN-ACK give-up (tcp_synack_retries).

    When a listener drops a half-open request whose SYN-ACK is never acknowledged.
    """
    result = timing.synack_give_up(retries)

    def render(console: Console) -> None:
        schedule = result.schedule
        rows = [
            ("request dropped at", _dur(schedule.gives_up_at)),
            ("retransmissions", str(schedule.retransmissions)),
            (
                "note",
                "TCP_SYNCNT on the listener overrides the sysctl; a SYN queue more "
                "than half full lowers the count for old requests",
            ),
        ]
        _summary(console, f"SYN-ACK give-up, tcp_synack_retries = {result.synack_retries}", rows)
        console.print(
            _schedule_table(
                schedule, first="SYN-ACK sent", sent="SYN-ACK retransmitted", end="dropped"
            )
        )

    _emit(result, as_json, render)


@calc.command("orphan-retries", context_settings=_NUMERIC_ARGS)
@click.argument("retries", type=int, default=TCP_ORPHAN_RETRIES, required=False)
@_rto_max_option
@_initial_rto_option
@_hz_option
@_json_option
def orphan_retries_cmd(
    retries: int, rto_max_ms: int, initial_rto_ms: float, hz: int, as_json: bool
) -> None:
    """Orphaned socket give-up (tcp_orphan_retries).

    When a closed socket in FIN_WAIT1, LAST_ACK or CLOSING stops retransmitting its FIN.
    The budget runs from the first RTO retransmission.
    """
    result = timing.orphan_give_up(
        retries, rto_max=rto_max_ms / _MS, initial_rto=initial_rto_ms / _MS, hz=hz
    )

    def render(console: Console) -> None:
        effective = str(result.effective_retries)
        if result.orphan_retries != result.effective_retries:
            effective += f" ({result.orphan_retries} means {result.effective_retries})"
        rows = [("retries", effective)]
        if result.orphan_retries == 0 and result.effective_retries == 0:
            rows.append(("", "0 stays 0 once the RTO reaches its ceiling (not alive)"))
        rows += [
            ("time budget", _dur(result.budget)),
            ("budget from", f"{_dur(result.budget_from)}: the first RTO retransmission"),
            (
                "gives up at",
                f"{_dur(result.schedule.gives_up_at)}: the first RTO expiry with "
                "the budget used up",
            ),
            ("retransmissions", str(result.schedule.retransmissions)),
        ]
        rows += _late_timer_rows(result, hz)
        _summary(console, f"Orphan give-up, tcp_orphan_retries = {result.orphan_retries}", rows)
        console.print(
            _schedule_table(
                result.schedule,
                first="FIN sent",
                sent="FIN retransmitted",
                end="destroyed",
                first_sent="FIN retransmitted, budget starts",
            )
        )

    _emit(result, as_json, render)


@calc.command("keepalive")
@click.option(
    "--time",
    "idle",
    type=float,
    default=TCP_KEEPALIVE_TIME,
    show_default=True,
    help="tcp_keepalive_time / TCP_KEEPIDLE, seconds.",
)
@click.option(
    "--intvl",
    type=float,
    default=TCP_KEEPALIVE_INTVL,
    show_default=True,
    help="tcp_keepalive_intvl / TCP_KEEPINTVL, seconds.",
)
@click.option(
    "--probes",
    type=int,
    default=TCP_KEEPALIVE_PROBES,
    show_default=True,
    help="tcp_keepalive_probes / TCP_KEEPCNT.",
)
@_user_timeout_option
@_json_option
def keepalive_cmd(
    idle: float, intvl: float, probes: int, user_timeout_ms: int, as_json: bool
) -> None:
    """Keepalive time to detect a dead peer."""
    result = timing.keepalive_detection(
        idle, intvl, probes, user_timeout=_user_timeout(user_timeout_ms)
    )

    def render(console: Console) -> None:
        if result.user_timeout is None:
            rule = f"{_num(result.time)} + {result.probes} x {_num(result.intvl)}"
        else:
            rule = f"first firing with idle >= {_num(result.user_timeout)} s after a probe"
        rows = [
            ("peer declared dead", f"{_dur(result.detected_at)} after the last segment received"),
            ("rule", rule),
            ("probes sent", str(result.probes_sent)),
            ("outcome", f"RST sent, ETIMEDOUT ({_REASONS[result.reason]})"),
        ]
        _summary(console, "Keepalive detection", rows)
        console.print(_probe_table(result))

    _emit(result, as_json, render)


def _probe_table(result: timing.KeepaliveDetection) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("probe", justify="right")
    table.add_column("sent at idle (s)", justify="right")
    for index, at in _elided(result.probe_times):
        table.add_row(*(("...", "...") if at is None else (str(index), _num(at))))
    table.add_row("abort", _num(result.detected_at))
    return table


@calc.command("fin-wait2")
@click.option(
    "--fin-timeout",
    type=float,
    default=TCP_FIN_TIMEOUT,
    show_default=True,
    help="tcp_fin_timeout, seconds.",
)
@click.option(
    "--linger2",
    type=int,
    default=None,
    help="TCP_LINGER2 set by the application, seconds (0 = use the sysctl).",
)
@click.option(
    "--not-orphaned",
    is_flag=True,
    help="The application still holds the fd (shutdown(SHUT_WR) without close()).",
)
@click.option(
    "--rto-ms",
    type=float,
    default=TCP_RTO_MIN * _MS,
    show_default=True,
    help="The socket's RTO; the timer is never shorter than 3.5 x RTO.",
)
@_json_option
def fin_wait2_cmd(
    fin_timeout: float, linger2: int | None, not_orphaned: bool, rto_ms: float, as_json: bool
) -> None:
    """FIN_WAIT2 lifetime (tcp_fin_timeout, TCP_LINGER2)."""
    result = timing.fin_wait2_lifetime(
        fin_timeout, linger2=linger2, orphaned=not not_orphaned, rto=rto_ms / _MS
    )
    _emit(result, as_json, lambda console: _render_fin_wait2(console, result))


def _render_fin_wait2(console: Console, result: timing.FinWait2Lifetime) -> None:
    outcome = result.outcome
    rows: list[tuple[str, str]] = []
    if result.linger2 is not None:
        rows.append(("TCP_LINGER2", _linger2_text(result)))
    if outcome is timing.FinWait2Outcome.UNBOUNDED:
        rows.append(("lifetime", "unbounded: no FIN_WAIT2 timer while the fd is open"))
    elif outcome is timing.FinWait2Outcome.RESET:
        rows.append(("lifetime", "none: RST instead of entering FIN_WAIT2 (TCPAbortOnData)"))
        rows.append(("", "TCPAbortOnLinger instead when close() finds it already in FIN_WAIT2"))
    else:
        rows.append(("tcp_fin_time()", _dur(result.fin_time or 0.0)))
        if outcome is timing.FinWait2Outcome.FULL_SOCKET_THEN_MINISOCK:
            rows += [
                (
                    "phase 1",
                    f"{_dur(result.full_socket_phase)} as a full socket "
                    "(timer code 2, fin time - 60 s)",
                ),
                (
                    "phase 2",
                    f"{_dur(result.minisock_phase)} as a FIN_WAIT2 minisock "
                    "(timer code 3, fin time - 60 s again)",
                ),
            ]
        else:
            rows.append(("minisock", f"{_dur(result.minisock_phase)} (timer code 3)"))
        rows.append(("lifetime", _dur(result.lifetime or 0.0)))
    _summary(console, f"FIN_WAIT2 lifetime, tcp_fin_timeout = {_num(result.fin_timeout)}", rows)
    if outcome is timing.FinWait2Outcome.FULL_SOCKET_THEN_MINISOCK:
        console.print(
            "Above 60 s the wait happens twice, once as a full socket and once as a "
            "minisock, each for (fin time - 60 s): the total is 2 x (fin time - 60), "
            "not the fin time.",
            markup=False,
            soft_wrap=True,
        )


def _linger2_text(result: timing.FinWait2Lifetime) -> str:
    stored = result.linger2_effective
    if stored is None:
        return "0: use the sysctl"
    if stored < 0:
        return f"{result.linger2}: stored as -1 (reset)"
    clamp = " (clamped to TCP_FIN_TIMEOUT_MAX)" if stored != result.linger2 else ""
    return f"{_num(stored)} s{clamp}"


@calc.command("ports")
@click.option(
    "--range",
    "port_range",
    type=(int, int),
    default=DEFAULT_PORT_RANGE,
    show_default=True,
    metavar="LOW HIGH",
    help="ip_local_port_range.",
)
@click.option(
    "--reserved",
    default="",
    metavar="LIST",
    help="ip_local_reserved_ports, e.g. 40000-40100,50000.",
)
@click.option(
    "--bound",
    default="",
    metavar="LIST",
    help="Ports held by bind()/listeners inside the range, same syntax.",
)
@click.option(
    "--tw-reuse",
    type=int,
    default=TCP_TW_REUSE_DEFAULT,
    show_default=True,
    help="tcp_tw_reuse: 0 off, 1 on, 2 loopback only.",
)
@click.option(
    "--tw-reuse-delay-ms",
    type=int,
    default=TCP_TW_REUSE_DELAY_MS,
    show_default=True,
    help="tcp_tw_reuse_delay (6.14+).",
)
@click.option("--loopback", is_flag=True, help="The destination is a loopback address.")
@click.option("--no-timestamps", is_flag=True, help="tcp_timestamps=0 (or the peer lacks them).")
@click.option(
    "--hz",
    type=int,
    default=REFERENCE_HZ,
    show_default=True,
    help="CONFIG_HZ, for the TIME_WAIT timer's lateness.",
)
@_json_option
def ports_cmd(
    *,
    port_range: tuple[int, int],
    reserved: str,
    bound: str,
    tw_reuse: int,
    tw_reuse_delay_ms: int,
    loopback: bool,
    no_timestamps: bool,
    hz: int,
    as_json: bool,
) -> None:
    """Ports per destination and max connection rate.

    How many connections one (saddr, daddr, dport) can hold, and how many new
    connections per second the range sustains once TIME_WAIT holds ports.
    """
    capacity = timing.port_capacity(
        *port_range,
        reserved=timing.parse_port_set(reserved),
        bound=timing.parse_port_set(bound),
    )
    result = timing.max_connection_rate(
        capacity,
        tw_reuse=tw_reuse,
        tw_reuse_delay_ms=tw_reuse_delay_ms,
        timestamps=not no_timestamps,
        loopback=loopback,
        hz=hz,
    )
    _emit(result, as_json, lambda console: _render_ports(console, result))


def _render_ports(console: Console, result: timing.ConnectionRateLimit) -> None:
    ports = result.ports
    reuse = "applies" if result.tw_reuse_applies else "does not apply"
    rows = [
        ("range", f"{ports.low}-{ports.high}: {ports.range_size} ports"),
        ("reserved in range", str(ports.reserved_in_range)),
        ("bound in range", str(ports.bound_in_range)),
        ("capacity", f"{ports.capacity} concurrent connections per (saddr, daddr, dport)"),
        ("tcp_tw_reuse", f"{result.tw_reuse}: {reuse}"),
        ("port held after close", _dur(result.port_hold)),
        (
            "max rate",
            f"{result.max_rate:.1f} new connections/s "
            f"({ports.capacity} / {_num(result.port_hold)} s)",
        ),
        (
            "worst case",
            f"{result.worst_case_max_rate:.1f} /s (held {_num(result.worst_case_port_hold)} s)",
        ),
    ]
    _summary(console, "Ephemeral ports to one destination", rows)
    console.print("Assumptions:", style="bold", markup=False)
    for assumption in result.assumptions:
        console.print(f"  - {assumption}", markup=False, soft_wrap=True)


@calc.command("rto")
@click.option("--rtt", type=float, required=True, help="Smoothed RTT, seconds.")
@click.option(
    "--rttvar",
    type=float,
    default=None,
    help="RTT mean deviation as ss shows it, seconds (default: first-sample rtt/2).",
)
@click.option(
    "--rto-min-ms",
    type=float,
    default=TCP_RTO_MIN * _MS,
    show_default=True,
    help="tcp_rto_min_us / route rto_min, in ms.",
)
@_rto_max_option
@click.option("--hz", type=int, default=None, help="Round up to jiffies at this CONFIG_HZ.")
@_json_option
def rto_cmd(
    *,
    rtt: float,
    rttvar: float | None,
    rto_min_ms: float,
    rto_max_ms: int,
    hz: int | None,
    as_json: bool,
) -> None:
    """RTO Linux derives from an RTT."""
    result = timing.rto_for_rtt(rtt, rttvar, rto_min_ms / _MS, rto_max=rto_max_ms / _MS, hz=hz)

    def render(console: Console) -> None:
        source = "given" if rttvar is not None else "first sample: rtt / 2"
        rows = [
            ("srtt", f"{_num(result.srtt * _MS)} ms"),
            ("rttvar", f"{_num(result.rttvar * _MS)} ms ({source})"),
            (
                "variance term",
                f"{_num(result.variance_term * _MS)} ms = max(4 x rttvar, "
                f"rto_min {_num(result.rto_min * _MS)} ms)",
            ),
            (
                "RTO",
                f"{_num(result.rto * _MS)} ms = srtt + variance term"
                + (f", rounded up to jiffies at HZ={result.hz}" if result.hz else "")
                + (", capped at the RTO maximum" if result.capped else ""),
            ),
        ]
        _summary(console, "Retransmission timeout (tcp_rtt_estimator + tcp_set_rto)", rows)

    _emit(result, as_json, render)


@calc.command("time-wait-memory", context_settings=_NUMERIC_ARGS)
@click.argument("count", type=int)
@click.option(
    "--bytes-per-socket",
    type=int,
    default=TW_SOCK_BYTES,
    show_default=True,
    help="tw_sock_TCP slab object size.",
)
@_json_option
def time_wait_memory_cmd(count: int, bytes_per_socket: int, as_json: bool) -> None:
    """Kernel memory held by COUNT TIME_WAIT sockets."""
    result = timing.time_wait_memory(count, bytes_per_socket=bytes_per_socket)

    def render(console: Console) -> None:
        rows = [
            ("TIME_WAIT sockets", str(result.count)),
            ("per socket", f"{result.bytes_per_socket} bytes (tw_sock_TCP)"),
            ("total", f"{result.total_bytes} bytes = {result.total_mib:.2f} MiB"),
        ]
        _summary(console, "TIME_WAIT memory", rows)

    _emit(result, as_json, render)


@calc.command("timer-slack", context_settings=_NUMERIC_ARGS)
@click.argument("seconds", type=float)
@click.option("--hz", type=int, default=REFERENCE_HZ, show_default=True, help="CONFIG_HZ.")
@_json_option
def timer_slack_cmd(seconds: float, hz: int, as_json: bool) -> None:
    """How late a kernel timer can fire.

    The timer wheel rounds a timer of SECONDS up to its level's granularity.
    """
    result = timing.timer_slack(seconds, hz)

    def render(console: Console) -> None:
        rows = [
            ("timer", f"{_num(result.nominal)} s = {result.jiffies} jiffies at HZ={result.hz}"),
            ("wheel level", f"{result.level} ({result.granularity_jiffies} jiffies per bucket)"),
            (
                "fires",
                f"up to {_num(result.max_lateness)} s late, by "
                f"{_num(result.latest_expiry)} s at the latest",
            ),
        ]
        if result.clamped:
            rows.append(("note", "longer than the wheel holds: the kernel shortens it"))
        _summary(console, "Timer-wheel slack", rows)

    _emit(result, as_json, render)
