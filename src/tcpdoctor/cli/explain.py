"""`tcpdoctor explain [TOPIC]`: the lifecycle concepts, with the kernel's numbers.

Without a topic it lists them; with one it prints the page. `--json` prints the topic
record (or the list) instead; the keys are described in docs/explain.md.
"""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from tcpdoctor.explain import (
    Topic,
    TopicEntry,
    all_topics,
    counter_meaning,
    get_topic,
    key_number_text,
    sysctl_default_text,
)
from tcpdoctor.kernel.sysctls import SYSCTLS
from tcpdoctor.render.json import dumps


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _heading(console: Console, text: str) -> None:
    console.print()
    console.print(text, style="bold", markup=False)


def _grid() -> Table:
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 2))
    table.add_column(no_wrap=True)
    table.add_column()
    return table


def _render_list(console: Console, topics: tuple[Topic, ...]) -> None:
    console.print("Topics", style="bold", markup=False)
    table = _grid()
    for topic in topics:
        table.add_row(topic.id, topic.summary)
    console.print(table)
    console.print()
    console.print(
        "Run 'tcpdoctor explain TOPIC' for one of them; TOPIC may also be an alias such "
        "as TIME_WAIT, SO_LINGER or tcp_tw_reuse.",
        markup=False,
        soft_wrap=True,
    )


def _key_numbers(topic: Topic) -> Table:
    table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 2))
    table.add_column("number")
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("from", overflow="fold")
    for number in topic.key_numbers:
        table.add_row(number.label, key_number_text(number), number.source)
    return table


def _sysctls(topic: Topic) -> Table:
    table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 2))
    table.add_column("sysctl", no_wrap=True)
    table.add_column("default")
    table.add_column("scope", no_wrap=True)
    for name in topic.sysctls:
        table.add_row(name, sysctl_default_text(name), SYSCTLS[name].scope.value)
    return table


def _counters(topic: Topic) -> Table:
    table = _grid()
    for key in topic.counters:
        table.add_row(key, counter_meaning(key))
    return table


def _render_topic(console: Console, topic: Topic) -> None:
    console.print(topic.title, style="bold", markup=False)
    console.print(topic.summary, style="italic", markup=False)
    for paragraph in topic.body:
        console.print()
        console.print(paragraph, markup=False)
    if topic.key_numbers:
        _heading(console, "Key numbers")
        console.print(_key_numbers(topic))
    if topic.sysctls:
        _heading(console, "Sysctls (catalogue defaults)")
        console.print(_sysctls(topic))
    if topic.counters:
        _heading(console, "Counters")
        console.print(_counters(topic))
    if topic.see_also:
        _heading(console, "See also")
        console.print("  " + ", ".join(topic.see_also), markup=False)
    if topic.calc:
        _heading(console, "Try")
        for command in topic.calc:
            console.print(f"  {command}", markup=False, soft_wrap=True)


@click.command()
@click.argument("topic", required=False, metavar="[TOPIC]")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the topic record, or the list, as JSON."
)
def explain(topic: str | None, as_json: bool) -> None:
    """Explain a TCP connection-lifecycle concept, with the kernel's numbers.

    Without TOPIC, list every topic with a one-line summary. TOPIC is a topic id
    (time-wait, keepalive, ports, ...) or an alias such as TIME_WAIT, SO_LINGER or
    tcp_tw_reuse; case and '_' versus '-' do not matter.
    """
    if topic is None:
        topics = all_topics()
        if as_json:
            click.echo(dumps([TopicEntry.of(t) for t in topics]))
        else:
            _render_list(_console(), topics)
        return
    found = get_topic(topic)
    if as_json:
        click.echo(dumps(found))
    else:
        _render_topic(_console(), found)
