"""Records of `tcpdoctor explain`: a topic, its key numbers, and the short list entry.

A topic is plain data. Its prose is built from tcpdoctor.kernel when the topic is built
(see topics.py), so no kernel number is typed into a sentence by hand.
"""

from __future__ import annotations

from typing import NamedTuple


class KeyNumber(NamedTuple):
    """One number a topic rests on, with where it comes from.

    Durations are in seconds (unit "s"), whatever unit the kernel stores them in, so JSON
    keeps the project rule "durations are seconds unless the key ends in _ms".
    """

    label: str
    value: int | float
    unit: str  # "s", "bytes", "MiB", "ports", "conn/s", "" for a bare count or mode
    source: str  # the kernel symbol or tcpdoctor.kernel function that yields it


class Topic(NamedTuple):
    """One `tcpdoctor explain TOPIC` page."""

    id: str  # fixed; other modules (diagnose findings) refer to it
    title: str
    aliases: tuple[str, ...]
    summary: str  # one line
    body: tuple[str, ...]  # short paragraphs
    key_numbers: tuple[KeyNumber, ...]
    sysctls: tuple[str, ...]  # full names, keys of tcpdoctor.kernel.sysctls.SYSCTLS
    counters: tuple[str, ...]  # keys of tcpdoctor.kernel.counters.COUNTERS
    see_also: tuple[str, ...]  # other topic ids
    calc: tuple[str, ...]  # `tcpdoctor calc ...` command lines to try


class TopicEntry(NamedTuple):
    """A topic as the list shows it (`tcpdoctor explain` without a topic)."""

    id: str
    title: str
    summary: str
    aliases: tuple[str, ...]

    @classmethod
    def of(cls, topic: Topic) -> TopicEntry:
        return cls(id=topic.id, title=topic.title, summary=topic.summary, aliases=topic.aliases)
