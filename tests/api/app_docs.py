"""App documents shared by the API tests."""

TEXT_APP = """\
version: 1
name: Echo
description: Answers in a few words.
type: text
input:
  question: {type: string, required: true, description: What to answer}
  tone: {type: string, default: plain, enum: [plain, formal]}
steps:
  - id: answer
    kind: llm
    prompt:
      system: You answer in one short sentence.
      user: "{{ input.question }}"
    params: {temperature: 0, seed: 7, max_tokens: 8}
output:
  answer: "{{ answer.text }}"
  tone: "{{ input.tone }}"
"""

CHAT_APP = """\
version: 1
name: Chatty
type: chat
input:
  message: {type: string, required: true}
steps:
  - id: reply
    kind: llm
    prompt:
      system: You are a friendly assistant.
      user: "{{ input.message }}"
    history: 4
    params: {temperature: 0, seed: 3, max_tokens: 8}
output:
  reply: "{{ reply.text }}"
"""

# One llm step on ``q``, answered in ``answer``: for runs against a scripted model server.
STREAMED_APP = """\
version: 1
name: Streamed
type: chat
input:
  q: {type: string, required: true}
steps:
  - id: answer
    kind: llm
    prompt: {user: "{{ input.q }}"}
output:
  answer: "{{ answer.text }}"
"""

YAML = {"Content-Type": "application/yaml"}
