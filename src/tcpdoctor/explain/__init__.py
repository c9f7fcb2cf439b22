"""`tcpdoctor explain`: the lifecycle concepts as topics, with numbers from tcpdoctor.kernel.

    from tcpdoctor.explain import get_topic
    topic = get_topic("TIME_WAIT")       # ids, aliases, any case, '_' or '-'
    topic.body, topic.key_numbers, topic.sysctls, topic.see_also

Topic ids are fixed (TOPIC_IDS); diagnose findings point at them.
"""

from __future__ import annotations

from tcpdoctor.explain.model import KeyNumber, Topic, TopicEntry
from tcpdoctor.explain.topics import (
    TOPIC_IDS,
    all_topics,
    build_topic,
    get_topic,
    normalize,
    resolve,
    suggest,
)
from tcpdoctor.explain.view import counter_meaning, key_number_text, sysctl_default_text

__all__ = [
    "TOPIC_IDS",
    "KeyNumber",
    "Topic",
    "TopicEntry",
    "all_topics",
    "build_topic",
    "counter_meaning",
    "get_topic",
    "key_number_text",
    "normalize",
    "resolve",
    "suggest",
    "sysctl_default_text",
]
