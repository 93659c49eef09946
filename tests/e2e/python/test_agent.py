"""The MiniMax Agent upstream end to end: the official openai SDK → cargo lambda
watch (UPSTREAM=minimax-agent) → the chat function → the simulator speaking the
agent protocol (send, then paced polls)."""

import base64
import json
import threading
import time
import uuid

import httpx
import openai
import pytest

from conftest import fingerprint

AGENT_URL = "http://127.0.0.1:9004"


def b64url(value: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def jwt(user_id: str | None = None) -> str:
    """A web-app-style JWT (the simulator, like the client, cannot check its signature)."""
    claims = {"user": {"id": user_id, "name": "e2e"}} if user_id else {"sub": "e2e"}
    claims["jti"] = uuid.uuid4().hex  # every test its own token
    return f"{b64url({'alg': 'HS256', 'typ': 'JWT'})}.{b64url(claims)}.tok-e2e-{uuid.uuid4().hex[:8]}"


def client(token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{AGENT_URL}/v1", api_key=token, max_retries=0, timeout=60)


def ask(c, text="你好", **kw):
    return c.chat.completions.create(model="MiniMax-M2.5", messages=[{"role": "user", "content": text}], **kw)


def test_non_stream_answer_with_reasoning(agent_sim):
    token = jwt("300000000000001001")
    r = ask(client(token), "你好，Agent")
    [conv] = agent_sim.conversations()
    assert conv["token_fp"] == fingerprint(token)
    assert r.choices[0].message.content == conv["turns"][0]["answer"]
    assert r.choices[0].message.reasoning_content == conv["turns"][0]["thinking"]
    assert r.id == f"chatcmpl-{conv['chat_id']}" and r.model == "MiniMax-M2.5"
    assert r.usage.completion_tokens > 0


def test_stream_reasoning_then_content(agent_sim):
    chunks = list(ask(client(jwt("300000000000001002")), "stream please", stream=True))
    [conv] = agent_sim.conversations()
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert reasoning == conv["turns"][0]["thinking"]
    assert content == conv["turns"][0]["answer"]
    kinds = ["r" if getattr(c.choices[0].delta, "reasoning_content", None) else "c" for c in chunks[1:] if c.choices and (c.choices[0].delta.content or getattr(c.choices[0].delta, "reasoning_content", None))]
    assert kinds[0] == "r" and "c" in kinds and kinds.index("c") > 0, "thinking comes first"
    assert len(kinds) >= 3, "the polls became several chunks"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_explicit_user_id_form(agent_sim):
    token = f"300000000000001003+{jwt(None)}"
    r = ask(client(token))
    assert r.choices[0].message.content


def test_token_without_user_id_is_401_without_upstream_call(agent_sim):
    with pytest.raises(openai.AuthenticationError) as e:
        ask(client(jwt(None)))
    assert "user.id" in e.value.message and "REALUSERID+JWT" in e.value.message
    assert agent_sim.state()["calls"] == []


def test_continue_a_conversation(agent_sim):
    c = client(jwt("300000000000001004"))
    first = ask(c, "first question", extra_body={"keep_conversation": True})
    chat_id = first.conversation_id
    agent_sim.keep(chat_id)
    chunks = list(ask(c, "second question", stream=True, extra_body={"conversation_id": chat_id}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    conv = agent_sim.conversation(chat_id)
    assert len(conv["turns"]) == 2 and conv["turns"][1]["prompt"] == "second question"
    assert text == conv["turns"][1]["answer"], "only the new answer, not the first one again"
    assert "第2轮" in text and not conv["deleted"]


def test_dead_token_is_401(agent_sim):
    token = jwt("300000000000001005")
    agent_sim.expire(token)
    with pytest.raises(openai.AuthenticationError) as e:
        ask(client(token))
    assert fingerprint(token) in e.value.message and token not in e.value.message


def test_send_failure_is_retried(agent_sim):
    agent_sim.fault("http500", count=1)
    assert ask(client(jwt("300000000000001006"))).choices[0].message.content


def test_poll_timeout_mid_answer_ends_the_stream_and_deletes(agent_sim):
    # The answer stops growing after 40 characters for 6 s; the gateway gives up after 3 s.
    agent_sim.fault("stall", after_events=40, delay_ms=6000)
    received = []
    with pytest.raises(openai.APIError) as e:
        for chunk in ask(client(jwt("300000000000001007")), "[sim:len=200]", stream=True):
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")
    assert "did not grow" in e.value.message
    # Deleted once the upstream stops running ("chat is running" is retried).
    agent_sim.wait_until(lambda st: st["conversations"][0]["deleted"], 15, "deletion after the timeout")


def test_poll_timeout_before_any_text_is_504(agent_sim):
    # The first-byte timeout (1.5 s here) is shorter than the polling's own
    # no-progress timeout (3 s), as with the defaults: the polling owns the
    # wait, and the accepted turn is never sent again on another token.
    agent_sim.fault("stall", after_events=0, delay_ms=6000, count=3)
    token = jwt("300000000000001008")
    with pytest.raises(openai.APIStatusError) as e:
        ask(client(f"{token},{jwt('300000000000001018')}"))
    assert e.value.status_code == 504 and "did not grow" in e.value.message
    sends = [c for c in agent_sim.state()["calls"] if c["path"].endswith("/send_msg")]
    assert len(sends) == 1, f"the accepted turn was sent again: {sends}"


def test_slow_thinking_past_the_first_byte_timeout_is_still_answered(agent_sim):
    # Nothing grows for 1.8 s, longer than the 1.5 s first-byte timeout but
    # within the polling's 3 s: the answer comes, from one send.
    agent_sim.fault("stall", after_events=0, delay_ms=1800)
    r = ask(client(jwt("300000000000001019")))
    assert r.choices[0].message.content
    assert sum(1 for c in agent_sim.state()["calls"] if c["path"].endswith("/send_msg")) == 1


def test_client_disconnect_stops_polling_and_deletes(agent_sim):
    stream = ask(client(jwt("300000000000001009")), "long [sim:len=300]", stream=True)
    for n, _ in enumerate(stream):
        if n == 3:
            break
    stream.close()
    state = agent_sim.wait_until(
        lambda st: st["conversations"] and st["conversations"][0]["deleted"], 15, "deletion after the disconnect"
    )
    assert state["conversations"][0]["client_went_away"], "polling stopped before the answer finished"
