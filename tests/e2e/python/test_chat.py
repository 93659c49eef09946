"""Chat completions end to end: the official openai SDK → cargo lambda watch →
the chat-completions function → the Hailuo simulator."""

import json
import os
import socket
import threading
import time

import httpx
import openai
import pytest

from conftest import GATEWAY_URL, ON_SERVER, emulator_only, fingerprint, function_path


def ask(client, text="你好", **kw):
    return client.chat.completions.create(model="hailuo", messages=[{"role": "user", "content": text}], **kw)


def collect(stream):
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return chunks, text


def test_non_stream_answer(sim, client_for, new_token):
    token = new_token()
    r = ask(client_for(token), "你好，海螺")
    conv = sim.conversations()
    assert len(conv) == 1 and conv[0]["token_fp"] == fingerprint(token)
    assert r.object == "chat.completion"
    assert r.model == "hailuo", "model is echoed"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == conv[0]["turns"][0]["answer"]
    assert "\ufffd" not in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.id == f"chatcmpl-{conv[0]['chat_id']}", "id carries the upstream chat id"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert conv[0]["deleted"], "deleted before the response ended"


def test_stream_answer(sim, client_for, new_token):
    token = new_token()
    chunks, text = collect(ask(client_for(token), "stream please", stream=True))
    conv = sim.conversations()[0]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert text == conv["turns"][0]["answer"], "deltas add up to the whole answer"
    assert "\ufffd" not in text, "partial characters were held back"
    assert len(chunks) > 5, "the answer came in many chunks"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.object == "chat.completion.chunk" and c.id == f"chatcmpl-{conv['chat_id']}" for c in chunks)
    assert all(c.usage is None for c in chunks), "no usage chunk unless asked"
    assert conv["deleted"] and conv["completed"]


def test_stream_include_usage(sim, client_for, new_token):
    chunks, text = collect(ask(client_for(new_token()), "usage", stream=True, stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens > 0 and last.usage.prompt_tokens > 0
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_stream_reaches_client_incrementally(sim, client_for, new_token):
    # 60 events at 50 ms each: about 3 s of generation upstream.
    sim.settings(pace_ms=50, chunk_bytes=10)
    stream = ask(client_for(new_token()), "slowly [sim:len=600]", stream=True)
    arrivals = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
    assert len(arrivals) >= 40
    spread = arrivals[-1] - arrivals[0]
    # Buffered delivery would hand every chunk over at once at the end.
    assert spread > 1.5, f"chunks arrived within {spread:.3f}s: the stream was buffered"
    # Spread out, not in a few bursts (wide bounds: a busy machine bunches chunks).
    first_half = sum(1 for t in arrivals if t < arrivals[0] + spread / 2)
    assert 0.1 * len(arrivals) < first_half < 0.9 * len(arrivals)


def test_multi_turn_flattening(sim, client_for, new_token):
    messages = [
        {"role": "system", "content": "你是谁"},
        {"role": "user", "content": "Hello, world! ![cat](https://img.example/cat.png)"},
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": [{"type": "text", "text": "第二个问题"}]},
    ]
    r = client_for(new_token()).chat.completions.create(model="MiniMax-Text-01", messages=messages, temperature=0.3)
    prompt = sim.conversations()[0]["turns"][0]["prompt"]
    assert prompt == "system:你是谁\nuser:Hello, world! \nassistant:Hi\nuser:第二个问题\nassistant:"
    assert "第二个问题" in r.choices[0].message.content
    assert r.model == "MiniMax-Text-01"


def test_keep_and_continue_a_conversation(sim, client_for, new_token):
    client = client_for(new_token())
    first = ask(client, "记住：蓝色", extra_body={"keep_conversation": True})
    chat_id = first.conversation_id
    assert first.id == f"chatcmpl-{chat_id}"
    sim.keep(chat_id)
    assert not sim.conversation(chat_id)["deleted"], "kept conversations stay"
    # Continue with the completion id (the bare chat id works too), streaming this time.
    history = [
        {"role": "user", "content": "记住：蓝色"},
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "我说了什么颜色？"},
    ]
    stream = client.chat.completions.create(
        model="hailuo", messages=history, stream=True, extra_body={"conversation_id": first.id}
    )
    chunks, text = collect(stream)
    conv = sim.conversation(chat_id)
    assert len(conv["turns"]) == 2, "the second turn went into the same upstream conversation"
    assert conv["turns"][1]["prompt"] == "我说了什么颜色？", "only the new turn is sent when continuing"
    assert "第2轮" in text and chunks[0].id == f"chatcmpl-{chat_id}"
    assert not conv["deleted"]
    third = ask(client, "再来", extra_body={"conversation_id": chat_id})
    assert "第3轮" in third.choices[0].message.content


def test_web_search_citations(sim, client_for, new_token):
    r = ask(client_for(new_token()), "今天的新闻 [sim:search]")
    content = r.choices[0].message.content
    assert "Sources:" in content
    assert "[海螺模拟器来源一](https://sim.hailuoai.invalid/source/1)" in content
    assert "https://sim.hailuoai.invalid/source/2" in content
    _, text = collect(ask(client_for(new_token()), "streamed news [sim:search]", stream=True))
    assert text.rstrip().endswith("(https://sim.hailuoai.invalid/source/2)")


def test_bad_key_is_authentication_error(sim, client_for, http):
    with pytest.raises(openai.AuthenticationError) as e:
        ask(client_for(",,"))
    assert "Bearer" in e.value.message
    r = http.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert sim.state()["calls"] == [], "nothing reached the upstream"


def test_expired_token_is_401_naming_a_fingerprint(sim, client_for, new_token):
    token = new_token("expired")
    sim.expire(token)
    with pytest.raises(openai.AuthenticationError) as e:
        ask(client_for(token))
    assert fingerprint(token) in e.value.message
    assert token not in e.value.message and token not in str(e.value.body)


def test_token_that_expires_after_registration_is_401(sim, client_for, new_token):
    token = new_token("later")
    assert ask(client_for(token)).choices[0].message.content
    sim.expire(token)
    with pytest.raises(openai.AuthenticationError) as e:
        ask(client_for(token), stream=True)
    assert fingerprint(token) in e.value.message and "登录已过期" in e.value.message


def test_expired_token_among_several_fails_over(sim, client_for, new_token):
    dead, live = new_token("dead"), new_token("live")
    sim.expire(dead)
    for _ in range(4):
        r = ask(client_for(f"{dead}, {live}"))
        assert r.choices[0].message.content
    chats = sim.conversations()
    assert chats and all(c["token_fp"] == fingerprint(live) for c in chats)


def test_busy_account_fails_over_to_another(sim, client_for, new_token):
    a, b = new_token("a"), new_token("b")
    sim.settings(pace_ms=40)
    started = threading.Event()
    result = {}

    def long_answer():
        stream = ask(client_for(a), "long [sim:len=900]", stream=True)
        for chunk in stream:
            started.set()
        result["done"] = True

    t = threading.Thread(target=long_answer)
    t.start()
    assert started.wait(20)
    r = ask(client_for(f"{a},{b}"), "while a is busy")
    t.join(30)
    assert result.get("done")
    assert r.choices[0].message.content
    owners = {c["token_fp"] for c in sim.conversations()}
    assert owners == {fingerprint(a), fingerprint(b)}


def test_malformed_requests_are_bad_request(sim, client_for, new_token, http):
    client = client_for(new_token())
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="hailuo", messages=[])
    assert e.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="hailuo", messages=[{"role": "robot", "content": "x"}])
    assert "messages[0].role" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, extra_body={"conversation_id": "not an id"})
    assert e.value.body["param"] == "conversation_id"
    auth = {"Authorization": "Bearer tok-e2e-x"}
    r = http.post("/v1/chat/completions", content=b'{"model": "x", "messages": [', headers=auth)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = http.post("/v1/chat/completions", json={"model": "x", "messages": [{"role": "user", "content": 5}]}, headers=auth)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content"
    assert sim.state()["calls"] == []


def test_unknown_path_wrong_method_and_too_large(sim, http):
    r = http.get(function_path("chat-completions", "/v1/nothing-here"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"
    r = http.get("/v1/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
    r = http.delete("/v1/models")
    assert r.status_code == 405
    big = "x" * (1024 * 1024 + 10)
    r = http.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": big}]},
        headers={"Authorization": "Bearer tok-e2e-big"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_models(sim, client_for, new_token):
    models = client_for(new_token()).models.list()
    ids = [m.id for m in models.data]
    assert {"hailuo", "MiniMax-Text-01", "MiniMax-VL-01"} <= set(ids)
    assert all(m.owned_by == "minimax" and m.object == "model" for m in models.data)
    assert client_for("x").models.retrieve("MiniMax-VL-01").id == "MiniMax-VL-01"
    with pytest.raises(openai.NotFoundError):
        client_for("x").models.retrieve("gpt-nothing")


# Upstream faults -----------------------------------------------------------


def test_upstream_500_is_retried_then_succeeds(sim, client_for, new_token):
    sim.fault("http500", count=2)
    r = ask(client_for(new_token()))
    assert r.choices[0].message.content
    assert sum(1 for c in sim.state()["calls"] if c["path"] == "/v4/api/chat/msg") == 3


def test_upstream_500_every_time_is_502(sim, client_for, new_token):
    sim.fault("http500", count=3)
    with pytest.raises(openai.InternalServerError) as e:
        ask(client_for(new_token()))
    assert e.value.status_code == 502
    assert "500" in e.value.message
    assert sim.state()["pending_faults"] == 0, "exactly three tries"


def test_error_event_before_any_text_is_502_with_upstream_message(sim, client_for, new_token):
    sim.fault("error_event", count=3, after_events=0)
    with pytest.raises(openai.InternalServerError) as e:
        ask(client_for(new_token()), stream=True)
    assert e.value.status_code == 502 and "服务繁忙" in e.value.message
    assert sum(1 for c in sim.state()["calls"] if c["path"] == "/v4/api/chat/msg") == 3


def test_slow_first_byte_is_retried(sim, client_for, new_token):
    sim.fault("slow_first_byte", count=1, delay_ms=4000)
    r = ask(client_for(new_token()))
    assert r.choices[0].message.content


def test_slow_first_byte_every_time_is_504(sim, client_for, new_token):
    sim.fault("slow_first_byte", count=3, delay_ms=4000)
    with pytest.raises(openai.APIStatusError) as e:
        ask(client_for(new_token()), stream=True)
    assert e.value.status_code == 504 and "timed out" in e.value.message


@pytest.mark.parametrize("kind", ["error_event", "disconnect", "malformed_sse", "stall"])
def test_failure_mid_stream_ends_with_an_error_chunk(sim, client_for, new_token, kind):
    sim.fault(kind, after_events=4, delay_ms=6000)
    received = []
    with pytest.raises(openai.APIError) as e:
        for chunk in ask(client_for(new_token()), "tell me a story [sim:len=400]", stream=True):
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received), "some text arrived before the failure"
    expected = {"error_event": "服务繁忙", "disconnect": "connection", "malformed_sse": "malformed", "stall": "stalled"}
    assert expected[kind] in e.value.message
    # The error chunk comes before the deletion, `[DONE]` after it (the SDK
    # raises at the error chunk): the deletion follows within the response.
    sim.wait_until(lambda st: st["conversations"][0]["deleted"], 15, "deletion")


def test_failure_mid_non_stream_answer_is_502(sim, client_for, new_token):
    sim.fault("disconnect", after_events=4)
    with pytest.raises(openai.InternalServerError) as e:
        ask(client_for(new_token()), "[sim:len=400]")
    assert e.value.status_code == 502


def test_client_disconnect_mid_stream_still_deletes(sim, client_for, new_token):
    sim.settings(pace_ms=100)
    stream = ask(client_for(new_token()), "a long story [sim:len=3000]", stream=True)
    seen = 0
    for chunk in stream:
        seen += 1
        if seen == 5:
            break
    stream.close()
    # The function stops reading upstream (the simulator sees its stream
    # abandoned, long before the 40 s answer would end) and deletes.
    state = sim.wait_until(
        lambda st: st["conversations"] and st["conversations"][0]["deleted"] and not st["busy"], 20, "deletion"
    )
    conv = state["conversations"][0]
    assert conv["client_went_away"] and not conv["completed"]


@emulator_only
def test_chat_function_url_alone_is_a_complete_base_url(sim, http):
    # Clients list models before chatting; the chat function answers that too.
    r = http.get("/lambda-url/chat-completions/v1/models")
    assert r.status_code == 200 and any(m["id"] == "hailuo" for m in r.json()["data"])


def test_client_giving_up_on_a_non_streamed_answer_still_deletes(sim, new_token):
    # About 4 s of answer; the client stops waiting after 1 s.
    sim.settings(pace_ms=50)
    c = openai.OpenAI(base_url="http://127.0.0.1:9000/v1", api_key=new_token(), max_retries=0, timeout=1.0)
    with pytest.raises(openai.APITimeoutError):
        ask(c, "a long answer [sim:len=600]")
    sim.wait_until(lambda st: st["conversations"] and st["conversations"][0]["deleted"], 20, "deletion")


def test_failure_mid_stream_raw_frames_end_with_error_then_done(sim, http, new_token):
    """What the SDKs see, byte for byte: content chunks, an error object, then [DONE]."""
    sim.fault("error_event", after_events=3)
    body = {"model": "hailuo", "stream": True, "messages": [{"role": "user", "content": "[sim:len=300]"}]}
    with http.stream("POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {new_token()}"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        frames = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    error = json.loads(frames[-2])["error"]
    assert error["type"] == "upstream_error" and "服务繁忙" in error["message"]
    assert all("choices" in json.loads(f) for f in frames[:-2])


def test_paths_without_the_v1_prefix(sim, http, new_token):
    auth = {"Authorization": f"Bearer {new_token()}"}
    body = {"model": "hailuo", "messages": [{"role": "user", "content": "no prefix"}]}
    r = http.post(function_path("chat-completions", "/chat/completions"), json=body, headers=auth)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    assert http.get(function_path("models", "/models")).json()["object"] == "list"


def test_the_simulator_refuses_what_breaks_the_protocol(http):
    """The simulator is not a pushover: a call with a wrong signature is refused and recorded."""
    import httpx as raw

    from conftest import SIM_URL

    raw.post(f"{SIM_URL}/__sim/reset").raise_for_status()
    now = int(time.time()) * 1000
    query = (
        "device_platform=web&app_id=3001&version_code=22200&uuid=abc&os_name=Windows&browser_name=chrome"
        f"&device_memory=8&cpu_core_num=12&browser_language=zh-CN&browser_platform=Win32&screen_width=1920"
        f"&screen_height=1080&unix={now}"
    )
    r = raw.post(
        f"{SIM_URL}/v1/api/user/device/register?{query}",
        content=b'{"uuid":"abc"}',
        headers={"Token": "tok-e2e-raw", "Yy": "0" * 32, "Content-Type": "application/json"},
    )
    assert r.json()["statusInfo"]["code"] != 0
    violations = raw.get(f"{SIM_URL}/__sim/state").json()["violations"]
    assert violations and "Yy" in violations[0]["problem"]
    raw.post(f"{SIM_URL}/__sim/reset").raise_for_status()


# Hardening ------------------------------------------------------------------


def chat_processes() -> set[int]:
    """The PIDs of every process that answers chat: the chat-completions
    function processes the emulators run, or the servers."""
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0]
        except OSError:
            continue
        if argv0.endswith(b"/gateway" if ON_SERVER else b"/chat-completions"):
            pids.add(int(entry))
    return pids


def test_abandoned_requests_at_every_phase_do_not_take_the_function_down(sim, new_token):
    """Callers that give up before the headers, mid-stream, or while a
    non-streamed answer is pending: the function processes survive (none
    exits, none is replaced), the next request is answered normally, and every
    conversation is deleted."""
    sim.settings(pace_ms=30)
    before = chat_processes()
    assert before, "chat-completions processes (or servers) are running"
    body = lambda stream: {  # noqa: E731
        "model": "hailuo",
        "stream": stream,
        "messages": [{"role": "user", "content": "a long answer [sim:len=1500]"}],
    }
    for round in range(6):
        token = new_token("abandon")
        auth = {"Authorization": f"Bearer {token}"}
        # While a non-streamed answer is pending (and, on the first rounds,
        # before the function has even sent headers).
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{GATEWAY_URL}/v1/chat/completions", json=body(False), headers=auth, timeout=0.3 + round * 0.2)
        # Mid-stream, after a few chunks.
        with httpx.stream("POST", f"{GATEWAY_URL}/v1/chat/completions", json=body(True), headers=auth, timeout=30) as r:
            assert r.status_code == 200
            for n, _ in enumerate(r.iter_raw()):
                if n == round:
                    break
        # Before the headers: the request is sent and the connection closed at once.
        payload = json.dumps(body(round % 2 == 0)).encode()
        host, port = GATEWAY_URL.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
                b"Authorization: Bearer " + token.encode() + b"\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
            )
    sim.settings(pace_ms=0)
    # Every abandoned conversation is deleted, and the accounts are free.
    sim.wait_until(
        lambda st: st["conversations"] and all(c["deleted"] for c in st["conversations"]) and not st["busy"],
        60,
        "every abandoned conversation deleted",
    )
    r = httpx.post(
        f"{GATEWAY_URL}/v1/chat/completions",
        json={"model": "hailuo", "messages": [{"role": "user", "content": "still there?"}]},
        headers={"Authorization": f"Bearer {new_token()}"},
        timeout=60,
    )
    assert r.status_code == 200 and "still there?" in r.json()["choices"][0]["message"]["content"]
    after = chat_processes()
    assert before <= after, f"function processes exited: {sorted(before - after)}"


def test_more_concurrent_requests_than_accounts_all_succeed(sim, client_for, new_token):
    """Each account answers one chat at a time: 6 requests on 2 accounts wait
    for a free one instead of failing."""
    sim.settings(pace_ms=20)
    tokens = f"{new_token('p1')},{new_token('p2')}"
    results, errors = [], []

    def one(i):
        try:
            r = ask(client_for(tokens), f"concurrent {i} [sim:len=300]")
            results.append(r.choices[0].message.content)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and len(results) == 6
    conversations = [(c["token_fp"], c["turns"][0]["prompt"][:40] if c["turns"] else "") for c in sim.conversations()]
    assert len(conversations) == 6, conversations


def test_browser_clients_get_cors_through_the_function_url(sim, http, new_token):
    r = http.options(
        "/v1/chat/completions",
        headers={
            "Origin": "https://lobechat.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-stainless-os",
        },
    )
    assert r.status_code in (200, 204), r.text
    assert r.headers["access-control-allow-origin"] == "*"
    assert "x-stainless-os" in r.headers["access-control-allow-headers"]
    r = http.post("/v1/chat/completions", json={}, headers={"Origin": "https://lobechat.example"})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "*"
    # x-api-key where Authorization is absent (Cherry Studio and others).
    r = http.post(
        "/v1/chat/completions",
        json={"model": "hailuo", "messages": [{"role": "user", "content": "via x-api-key"}]},
        headers={"x-api-key": new_token(), "Origin": "https://cherry.example"},
    )
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    # A JSON body sent as text/plain (a browser's way round the preflight) is refused, as OpenAI does.
    r = http.post(
        "/v1/chat/completions",
        content=b'{"model":"m","messages":[{"role":"user","content":"x"}]}',
        headers={"Authorization": f"Bearer {new_token()}", "Content-Type": "text/plain;charset=UTF-8"},
    )
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_content_type"


def test_hostile_bodies_and_bearers_are_refused_cleanly(sim, http, new_token):
    auth = {"Authorization": f"Bearer {new_token()}"}
    for extra, param in [({"temperature": "hot"}, "temperature"), ({"max_tokens": -5}, "max_tokens"), ({"n": 0}, "n"), ({"n": 1000}, "n")]:
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}], **extra}
        r = http.post("/v1/chat/completions", json=body, headers=auth)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    # Many tiny messages: a clear 400, not a swollen process.
    r = http.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}] * 5000}, headers=auth)
    assert r.status_code == 400 and "at most 4096" in r.json()["error"]["message"]
    # A 100 KB bearer is malformed, never forwarded.
    r = http.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
                  headers={"Authorization": "Bearer " + "t" * 100_000})
    assert r.status_code in (401, 431), r.status_code
    # A gateway-style key is never handed upstream as a token.
    r = http.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
                  headers={"Authorization": "Bearer sk-e2e-mistyped-key"})
    assert r.status_code == 401 and "Invalid API key" in r.json()["error"]["message"]
    assert sim.state()["calls"] == []


def test_a_cut_off_answer_is_an_error_not_a_whole_answer(sim, client_for, new_token):
    sim.fault("truncate", after_events=4, count=2)
    with pytest.raises(openai.APIError) as e:
        for _ in ask(client_for(new_token()), "[sim:len=400]", stream=True):
            pass
    assert "before its end" in e.value.message
    with pytest.raises(openai.InternalServerError) as e:
        ask(client_for(new_token()), "[sim:len=400]")
    assert e.value.status_code == 502 and "before its end" in e.value.message
