"""The shared Timeline record: buckets, events, phases and the JSON round trip."""

from __future__ import annotations

import json

from tcpdoctor.timeline import TimelineRecorder, from_json, phases, to_json


def _sample_timeline() -> TimelineRecorder:
    rec = TimelineRecorder(duration=4.0)
    rec.attempt(0.1)
    rec.attempt(0.6)
    rec.attempt(1.2, "EADDRNOTAVAIL")
    rec.attempt(1.7, "EADDRNOTAVAIL")
    rec.attempt(2.5, "ETIMEDOUT")
    rec.states(0.5, "client", {"ESTABLISHED": 1, "TIME_WAIT": 0})
    rec.states(0.9, "client", {"TIME_WAIT": 2})  # replaces the earlier sample
    rec.states(1.5, "server", {"LISTEN": 1})
    rec.event(1.2, "first_failure", "EADDRNOTAVAIL after 2")
    rec.event(0.0, "load_start")
    return rec


def test_buckets_count_per_second_and_keep_the_last_sample() -> None:
    timeline = _sample_timeline().freeze()
    assert [b.t for b in timeline.buckets] == [0, 1, 2, 3]  # second 3 is quiet but present
    first, second, third, quiet = timeline.buckets
    assert first.successes == 2 and not first.failures
    assert first.states == {"client": {"TIME_WAIT": 2}}  # zero counts dropped
    assert second.failures == {"EADDRNOTAVAIL": 2}
    assert third.failures == {"ETIMEDOUT": 1}
    assert quiet.successes == 0 and quiet.failed == 0
    assert timeline.successes == 2
    assert timeline.failures == {"EADDRNOTAVAIL": 2, "ETIMEDOUT": 1}
    assert timeline.peak("client", "TIME_WAIT") == 2
    assert timeline.peak("server", "TIME_WAIT") == 0


def test_events_are_sorted_by_time() -> None:
    timeline = _sample_timeline().freeze()
    assert [e.kind for e in timeline.events] == ["load_start", "first_failure"]
    found = timeline.first_event("first_failure")
    assert found is not None and found.t == 1.2


def test_negative_times_land_in_the_first_bucket() -> None:
    rec = TimelineRecorder()
    rec.attempt(-0.3)
    timeline = rec.freeze()
    assert len(timeline.buckets) == 1 and timeline.buckets[0].successes == 1


def test_json_round_trip_is_plain_json() -> None:
    timeline = _sample_timeline().freeze()
    data = to_json(timeline)
    text = json.dumps(data)  # only JSON types inside
    again = from_json(json.loads(text))
    assert again == timeline
    assert set(data) == {"bucket_s", "buckets", "events"}
    assert set(data["buckets"][0]) == {"t", "successes", "failures", "states"}


def test_phases_tell_the_on_off_story() -> None:
    rec = TimelineRecorder()
    for t in (0.1, 0.5):
        rec.attempt(t)
    for t in (1.1, 2.2, 3.3):
        rec.attempt(t, "EADDRNOTAVAIL")
    rec.attempt(4.1)
    rec.attempt(4.2, "EADDRNOTAVAIL")
    found = phases(rec.freeze())
    assert [(p.start, p.end, p.outcome) for p in found] == [
        (0, 1, "ok"),
        (1, 4, "failing"),
        (4, 5, "mixed"),
    ]
    assert found[1].failures == {"EADDRNOTAVAIL": 3}
    assert found[2].successes == 1
