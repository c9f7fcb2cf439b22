"""The topics of `tcpdoctor explain`, and how a user's spelling finds one.

Topics are built on every call from tcpdoctor.kernel (constants, timing formulas, the
sysctl and counter catalogues), so their numbers cannot drift from the kernel facts.
Lookup ignores case, treats '_', '-' and spaces alike and drops a sysctl prefix such as
'net.ipv4.', so "TIME_WAIT", "timewait", "net.ipv4.tcp_tw_reuse" and "SO_LINGER" all work.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable

from tcpdoctor.errors import InputError
from tcpdoctor.explain import closing, reuse, timers
from tcpdoctor.explain.model import Topic

# The fixed ids, in the order the list shows them. Other modules refer to these.
TOPIC_IDS: tuple[str, ...] = (
    "time-wait",
    "close-wait",
    "fin-wait2",
    "tw-reuse",
    "tw-recycle",
    "timestamps",
    "keepalive",
    "linger",
    "rto",
    "retries",
    "syn-retries",
    "ports",
    "listen-queue",
    "orphans",
    "max-tw-buckets",
    "user-timeout",
    "idle-timeout",
    "fd-limits",
)

_BUILDERS: dict[str, Callable[[], Topic]] = {
    "time-wait": closing.time_wait,
    "close-wait": closing.close_wait,
    "fin-wait2": closing.fin_wait2,
    "tw-reuse": reuse.tw_reuse,
    "tw-recycle": reuse.tw_recycle,
    "timestamps": reuse.timestamps,
    "keepalive": timers.keepalive,
    "linger": closing.linger,
    "rto": timers.rto,
    "retries": timers.retries,
    "syn-retries": timers.syn_retries,
    "ports": reuse.ports,
    "listen-queue": timers.listen_queue,
    "orphans": closing.orphans,
    "max-tw-buckets": closing.max_tw_buckets,
    "user-timeout": timers.user_timeout,
    "idle-timeout": timers.idle_timeout,
    "fd-limits": reuse.fd_limits,
}

_SYSCTL_PREFIX = re.compile(r"^(net\.(ipv4|ipv6|core|netfilter)|fs)[./]")
_SEPARATORS = re.compile(r"[\s_\-]+")
_MAX_SUGGESTIONS = 5
_CLOSENESS = 0.6


def normalize(name: str) -> str:
    """'TIME_WAIT' -> 'time-wait', 'net.ipv4.tcp_tw_reuse' -> 'tcp-tw-reuse'."""
    text = _SYSCTL_PREFIX.sub("", name.strip().lower())
    return _SEPARATORS.sub("-", text).strip("-")


def build_topic(topic_id: str) -> Topic:
    """The topic with this exact id (no alias matching); KeyError if there is none."""
    return _BUILDERS[topic_id]()


def all_topics() -> tuple[Topic, ...]:
    """Every topic, in list order, freshly built from tcpdoctor.kernel."""
    return tuple(build_topic(topic_id) for topic_id in TOPIC_IDS)


def _names(topic: Topic) -> list[str]:
    return [normalize(topic.id), *(normalize(alias) for alias in topic.aliases)]


def resolve(name: str) -> str:
    """The topic id a user's spelling (an id or an alias) stands for.

    Raises InputError with one line naming the closest topics when nothing matches.
    """
    wanted = normalize(name)
    index = {key: topic.id for topic in all_topics() for key in _names(topic)}
    if wanted in index:
        return index[wanted]
    raise InputError(f"unknown topic {name!r}; try one of: {', '.join(suggest(name, index))}")


def suggest(name: str, index: dict[str, str] | None = None) -> list[str]:
    """Topic ids close to `name` (by id or alias), or every id when none is close."""
    if index is None:
        index = {key: topic.id for topic in all_topics() for key in _names(topic)}
    close = difflib.get_close_matches(
        normalize(name), list(index), n=_MAX_SUGGESTIONS * 2, cutoff=_CLOSENESS
    )
    ids = list(dict.fromkeys(index[key] for key in close))[:_MAX_SUGGESTIONS]
    return ids or list(TOPIC_IDS)


def get_topic(name: str) -> Topic:
    """The topic for an id or alias, in any case and separator style."""
    return build_topic(resolve(name))
