"""runs.chat: an OpenAI-style message list as a run request (which input, which output,
which earlier turns), checked against the limits."""

from __future__ import annotations

import pytest

from appforge.core.settings import LimitSettings
from apps_yaml.loader import load_text
from runs.chat import Said, input_key_of, output_key_of, plan
from runs.errors import ChatRequestError
from runs.records import AppRecord

APP = """\
version: 1
name: Two steps
type: chat
input:
  question: {type: string, required: true}
  tone: {type: string, default: plain}
steps:
  - id: draft
    kind: llm
    prompt: {user: "{{ input.question }}"}
    history: 2
  - id: polish
    kind: llm
    prompt: {user: "{{ draft.text }}"}
    history: 2
output:
  answer: "{{ polish.text }}"
  tone: "{{ input.tone }}"
"""


def _app(text: str = APP) -> AppRecord:
    return AppRecord("u-1", "Two steps", 1, False, load_text(text))


def test_chat_plan_turns_pair_each_question_with_its_answer() -> None:
    messages = [
        Said("system", "not read"),
        Said("user", "a"),
        Said("user", "b"),
        Said("assistant", "B"),
        Said("assistant", "B2"),
        Said("user", "c"),
        Said("assistant", "C"),
        Said("user", "now"),
    ]
    run = plan(_app(), messages, LimitSettings(), stream=True)
    request = run.request
    assert (request.app_uuid, request.input, request.stream) == ("u-1", {"question": "now"}, True)
    assert (run.input_key, run.output_key) == ("question", "answer")
    assert request.history is not None
    said = [(t.transcript["draft"]["user"], t.transcript["draft"]["assistant"])
            for t in request.history]  # fmt: skip
    assert said == [("a\n\nb", "B\n\nB2"), ("c", "C")]
    # every llm step hears the conversation; a flow sees it as input and output
    assert all(set(t.transcript) == {"draft", "polish"} for t in request.history)
    assert [dict(t.input) for t in request.history] == [{"question": "a\n\nb"}, {"question": "c"}]
    assert [dict(t.output) for t in request.history] == [{"answer": "B\n\nB2"}, {"answer": "C"}]


def test_chat_plan_with_a_session_reads_no_earlier_messages() -> None:
    messages = [Said("user", "a"), Said("assistant", "A"), Said("user", "b")]
    run = plan(_app(), messages, LimitSettings(), session_id="s-1")
    assert run.request.history is None and run.request.session_id == "s-1"


@pytest.mark.parametrize(
    ("messages", "limits", "code"),
    [
        ([Said("user", "a")] * 3, LimitSettings(max_messages=2), "TOO_MANY_MESSAGES"),
        ([Said("user", "abcd")], LimitSettings(max_message_chars=3), "MESSAGE_TOO_LONG"),
        ([Said("user", "a"), Said("assistant", "b")], LimitSettings(), "LAST_MESSAGE_NOT_USER"),
        ([], LimitSettings(), "LAST_MESSAGE_NOT_USER"),
        ([Said("tool", "x"), Said("user", "a")], LimitSettings(), "MESSAGE_ROLE_UNSUPPORTED"),
    ],
)
def test_chat_plan_refuses(messages: list[Said], limits: LimitSettings, code: str) -> None:
    with pytest.raises(ChatRequestError) as refused:
        plan(_app(), messages, limits)
    assert (refused.value.code, refused.value.status_code) == (code, 422)


def test_chat_keys_from_the_openai_section_or_the_only_candidate() -> None:
    doc = load_text(APP)
    assert (input_key_of(doc), output_key_of(doc)) == ("question", "answer")
    named = load_text(APP + "openai: {input: tone, output: tone}\n")
    assert (input_key_of(named), output_key_of(named)) == ("tone", "tone")
    required = APP.replace("{type: string, default: plain}", "{type: string, required: true}")
    two = load_text(required.replace('tone: "{{ input.tone }}"', 'tone: "{{ draft.text }}"'))
    picks = ((input_key_of, "OPENAI_INPUT_UNKNOWN"), (output_key_of, "OPENAI_OUTPUT_UNKNOWN"))
    for pick, code in picks:
        with pytest.raises(ChatRequestError) as unclear:
            pick(two)
        assert unclear.value.code == code
