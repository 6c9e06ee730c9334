"""The sandbox's size limits and deadline (appforge.core.sandbox, appforge.core.budget)."""

from __future__ import annotations

import threading
import time

import pytest
from jinja2 import UndefinedError

from appforge.core import sandbox
from appforge.core.budget import Budget, Limits, RenderInterrupted, TemplateLimitError

# Each of these would take seconds, or gigabytes, if it ran.
BOMBS = [
    "x{{ 'a' * 10**8 }}",
    "{{ 'a' * 10**8 }}",
    "{{ (9 ** (9 ** 7)) > 1 }}",
    "{{ [0] * 10**9 }}",
    "{{ '%999999999s' % 1 }}",
    "{{ '%.999999999f' % 1.5 }}",
    "{{ '%*s' % (999999999, 'x') }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '{:{w}}'.format(1, w=999999999) }}",
    "{{ '{0:>999999999}'.format_map({}) if false else '{x:>999999999}'.format_map({'x': 1}) }}",
    "{{ ('{:>999999999}' | safe).format(1) }}",
    "{{ '%999999999s' | format('x') }}",
    "{{ 'a' | center(10**9) }}",
    "{{ 'a\na' | indent(10**9) }}",
    "{{ 'a' | replace('a', 'b' * 10**6) | replace('b', 'c' * 10) }}",
    "{{ range(10**5) | join('x' * 10**4) }}",
    "{{ 'a'.ljust(10**9) }}",
    "{{ 'a'.zfill(10**9) }}",
    "{{ '\t\t'.expandtabs(10**9) }}",
    "{{ ('x' * 1000).join(range(10**4) | map('string')) }}",
    "{{ range(10**6) | list | length }}",
    "{{ [1, 2] | slice(10**9) | list }}",
    "{{ ['x' * 10**6] * 2 }}",
    "{{ 'x' * 10**6 + 'y' * 10**6 }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s | length }}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% else %}{{ 'x' * 10**5 }}"
    "{% endif %}{% endmacro %}{{ f(40) | length }}",
]


@pytest.mark.parametrize("template", BOMBS)
def test_sandbox_size_bombs_are_refused_before_they_run(template: str):
    with pytest.raises(TemplateLimitError) as refused:
        sandbox.render(template, {})
    assert refused.value.code == "TEMPLATE_TOO_LARGE"
    assert "limit" in refused.value.message


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ 'ab' * 3 }}", "ababab"),
        ("{{ 2 ** 100 }}", str(2**100)),
        ("{{ [1] * 3 }}", "[1, 1, 1]"),
        ("{{ '%5s|%.2f' % ('a', 1.5) }}", "    a|1.50"),
        ("{{ '{:>4}|{}'.format(1, 'x') }}", "   1|x"),
        ("{{ '%s-%s' | format(1, 2) }}", "1-2"),
        ("{{ 'a' | center(5) }}", "  a  "),
        ("{{ range(3) | join(', ') }}", "0, 1, 2"),
        ("{{ '-'.join(['a', 'b']) }}", "a-b"),
        ("{{ 'ab' ~ 1 }}", "ab1"),
        ("{% for i in range(3) %}{{ loop.index }}{% endfor %}", "123"),
        ("{% for i in [3, 1] if i > 1 %}{{ i }}{% else %}none{% endfor %}", "3"),
        ("{{ 7 % 3 }}{{ [1] + [2] }}{{ 'a' + 'b' }}", "1[1, 2]ab"),
        ("{{ {'a': 1} | tojson }}", '{"a": 1}'),
    ],
)
def test_sandbox_ordinary_templates_render_as_before(template: str, expected: str):
    assert sandbox.render(template, {}) == expected


def test_sandbox_has_no_lipsum():
    with pytest.raises(UndefinedError):
        sandbox.render("{{ lipsum(100000, false, 1000000, 1000000) }}", {})
    assert "lipsum" not in sandbox.variables("{{ x }}")


def test_sandbox_range_and_rendered_size_follow_the_limits():
    small = Limits(max_bytes=2000, max_items=50)
    assert sandbox.render("{{ range(50) | list | length }}", {}, Budget(small)) == "50"
    with pytest.raises(TemplateLimitError, match="range"):
        sandbox.render("{{ range(51) | list | length }}", {}, Budget(small))
    # Many small pieces add up: the render stops once their total passes the limit.
    template = "{% for i in range(50) %}{{ 'x' * 100 }}{% endfor %}"
    with pytest.raises(TemplateLimitError, match="rendered template"):
        sandbox.render(template, {}, Budget(small))
    assert len(sandbox.render(template, {})) == 5000


def test_sandbox_rendered_size_counts_utf8_bytes():
    limits = Limits(max_bytes=1500, max_items=100)
    assert sandbox.render("{{ x }}", {"x": "é" * 700}, Budget(limits)) == "é" * 700
    with pytest.raises(TemplateLimitError):
        sandbox.render("{{ x }}", {"x": "é" * 800}, Budget(limits))


NESTED = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def test_sandbox_cancel_event_stops_a_nested_loop():
    cancel = threading.Event()
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    try:
        with pytest.raises(RenderInterrupted):
            sandbox.render(NESTED, {}, Budget(cancel=cancel))
    finally:
        timer.cancel()
    # Stopping is checked at every loop item: it happened right after the event.
    assert cancel.is_set()


def test_sandbox_deadline_stops_loops_over_given_lists():
    items = list(range(100_000))
    template = "{% for i in xs %}{% for j in xs %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(RenderInterrupted) as stopped:
        sandbox.render(template, {"xs": items}, Budget.timed(Limits(), 0.3))
    assert stopped.value.code == "RENDER_TIMEOUT"
    # 10**10 iterations would take hours; the deadline ended it (generous bound).
    assert time.monotonic() - started < 60


def test_sandbox_deadline_stops_a_recursive_macro():
    template = (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}"
    )
    with pytest.raises(RenderInterrupted):
        sandbox.render(template, {}, Budget.timed(Limits(), 0.3))


def test_sandbox_expression_value_is_bounded():
    with pytest.raises(TemplateLimitError):
        sandbox.evaluate_expression("x * 3", {"x": "a" * 500_000}, None)
    assert sandbox.evaluate_expression("x * 2", {"x": [1]}, None) == [1, 1]
