"""The Anthropic Messages door end to end, on both gateway kinds: the
official `anthropic` SDK (create, stream, a multi-turn tool loop, thinking
with its signature sent back, count_tokens, errors as its exception
classes), and Claude Code itself run headless (`claude -p`) through a tool
loop the simulator scripts, over a native upstream (the MiniMax Code
simulator) and a web chat with emulated tools (the Hailuo simulator).

Claude Code is kept off the internet by its documented switch
(CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC) and by a proxy that refuses and
records every outbound attempt: a test fails if it saw one."""

import json
import os
import subprocess
import uuid

import anthropic
import pytest

from conftest import CODE_URL, GATEWAY_URL, ProxySink, last_sent, tokens_of, tool_call

ROOT = os.environ.get("ROOT", ".")
CLAUDE = os.path.join(ROOT, "tests", "e2e", "agents", "node_modules", ".bin", "claude")

WEATHER = {"name": "get_weather", "description": "Weather now",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def anth(key: str, base: str = CODE_URL) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base, api_key=key, max_retries=0, timeout=60)


def test_create_and_stream_echo_the_model_with_the_upstreams_usage(code_sim, access):
    a = anth(access)
    m = a.messages.create(model="claude-sonnet-4-5", max_tokens=256,
                          messages=[{"role": "user", "content": "hello there"}])
    assert m.model == "claude-sonnet-4-5"
    assert m.id.startswith("msg_") and m.stop_reason == "end_turn"
    [block] = m.content
    assert block.type == "text" and block.text == "MiniMax Code simulator: you said «hello there»."
    assert (m.usage.input_tokens, m.usage.output_tokens) == (tokens_of("hello there"), tokens_of(block.text))
    with a.messages.stream(model="claude-sonnet-4-5", max_tokens=256, system="be brief",
                           messages=[{"role": "user", "content": "and streamed"}]) as s:
        final = s.get_final_message()
        texts = list(s.text_stream)
    assert final.content[-1].text == "MiniMax Code simulator: you said «and streamed»."
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    assert "".join(texts) in ("", final.content[-1].text)
    assert last_sent(code_sim)["system"] == [{"type": "text", "text": "be brief"}]


def test_a_tool_loop_with_thinking_sends_the_signed_thinking_back(code_sim, access):
    code_sim.script([{"type": "thinking", "text": "The user wants the weather."},
                     {"type": "text", "text": "Let me check."},
                     {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}])
    a = anth(access)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    with a.messages.stream(model="MiniMax-M3", max_tokens=2048, tools=[WEATHER], messages=messages,
                           thinking={"type": "enabled", "budget_tokens": 1024}) as s:
        first = s.get_final_message()
    assert first.stop_reason == "tool_use"
    kinds = [b.type for b in first.content]
    assert kinds == ["thinking", "text", "tool_use"], kinds
    thinking, _, call = first.content
    assert thinking.thinking == "The user wants the weather." and thinking.signature
    assert (call.id, call.name, call.input) == ("toolu_01", "get_weather", {"city": "Paris"})
    messages += [{"role": "assistant", "content": first.content},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                               "content": "sunny, 21°C"}]}]
    second = a.messages.create(model="MiniMax-M3", max_tokens=2048, tools=[WEATHER], messages=messages,
                               thinking={"type": "enabled", "budget_tokens": 1024})
    assert second.stop_reason == "end_turn"
    assert "sunny, 21°C" in second.content[-1].text, "the model read the tool's result"
    sent = last_sent(code_sim)
    assert sent["messages"][1]["content"][0] == {"type": "thinking", "thinking": thinking.thinking,
                                                 "signature": thinking.signature}
    assert sent["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_01",
                                               "content": "sunny, 21°C"}]
    assert "<tool_call" not in json.dumps(sent), "no emulation contract on a native upstream"


def test_count_tokens_matches_message_start_and_uses_no_account(code_sim, access):
    a = anth(access)
    ask = dict(model="claude-haiku-4-5", system="Be brief.", tools=[WEATHER],
               messages=[{"role": "user", "content": "How many tokens is this?"}])
    counted = a.messages.count_tokens(**ask).input_tokens
    assert counted > 0
    sent_before = len(code_sim.requests())
    with a.messages.stream(max_tokens=100, **ask) as s:
        started = None
        for event in s:
            if event.type == "message_start":
                started = event.message.usage.input_tokens
    assert started == counted
    assert len(code_sim.requests()) == sent_before + 1, "count_tokens sent nothing upstream"


def test_failures_are_the_sdks_exception_classes(code_sim, access):
    a = anth(access)
    with pytest.raises(anthropic.BadRequestError) as e:
        a.messages.create(model="m", max_tokens=10, tools=[WEATHER], tool_choice={"type": "tool", "name": "nope"},
                          messages=[{"role": "user", "content": "x"}])
    assert "nope" in e.value.message
    assert e.value.body["error"]["type"] == "invalid_request_error"
    # A stream that breaks after its first byte raises, never ends short.
    code_sim.fault("error_event_after_n", n=3, error_kind="overloaded_529")
    with pytest.raises(anthropic.APIError):
        with a.messages.stream(model="m", max_tokens=100,
                               messages=[{"role": "user", "content": "a long enough answer please"}]) as s:
            s.get_final_message()
    # Each account the pool then cools or forgets is one of its own.
    throttled = code_sim.login("bob")["access_token"]
    code_sim.fault("throttle_2045", times=1)
    with pytest.raises(anthropic.RateLimitError) as e:
        anth(throttled).messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e.value.response.headers["retry-after"] == "60"
    assert e.value.response.headers["request-id"].startswith("req_")
    assert e.value.body["error"]["type"] == "rate_limit_error"
    assert throttled not in str(e.value.body)
    rejected = code_sim.login("carol")["access_token"]
    code_sim.fault("token_expired", times=1)
    with pytest.raises(anthropic.AuthenticationError) as e:
        anth(rejected).messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "authentication_error"
    assert "rejected" in e.value.message and rejected not in e.value.message


def test_the_web_chat_answers_the_anthropic_door_with_emulated_tools(sim, new_token):
    sim.replies(f"Checking. {tool_call('get_weather', {'city': 'Paris'})}", "Sunny in Paris.")
    a = anth(new_token(), GATEWAY_URL)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    with a.messages.stream(model="claude-sonnet-4-5", max_tokens=512, tools=[WEATHER], messages=messages) as s:
        first = s.get_final_message()
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert (call.type, call.name, call.input) == ("tool_use", "get_weather", {"city": "Paris"})
    messages += [{"role": "assistant", "content": first.content},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}]
    second = a.messages.create(model="claude-sonnet-4-5", max_tokens=512, tools=[WEATHER], messages=messages)
    assert second.content[-1].text == "Sunny in Paris." and second.stop_reason == "end_turn"
    prompt = sim.conversations()[-1]["turns"][0]["prompt"]
    assert "sunny" in prompt and "get_weather" in prompt


# --- Claude Code, headless -------------------------------------------------


def run_claude(tmp_path, base_url: str, token: str, model: str, prompt: str, proxy: ProxySink) -> dict:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ["PATH"], "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_AUTH_TOKEN": token,
        "ANTHROPIC_MODEL": model, "ANTHROPIC_SMALL_FAST_MODEL": model,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": model, "ANTHROPIC_DEFAULT_OPUS_MODEL": model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0", "API_TIMEOUT_MS": "120000",
        "HTTPS_PROXY": f"http://127.0.0.1:{proxy.port}", "HTTP_PROXY": f"http://127.0.0.1:{proxy.port}",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    done = subprocess.run(
        [CLAUDE, "-p", prompt, "--output-format", "json", "--max-turns", "4", "--allowedTools", "Read"],
        cwd=work, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"claude exited {done.returncode}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    result = json.loads(done.stdout)
    assert result["is_error"] is False, result
    return result


@pytest.fixture
def notes(tmp_path):
    """A file only the agent's Read tool can see, holding a word no one else knows."""
    (tmp_path / "work").mkdir()
    word = f"stubword{uuid.uuid4().hex[:8]}"
    path = tmp_path / "work" / "notes.txt"
    path.write_text(f"{word}\n")
    return path, word


def test_claude_code_runs_a_tool_loop_on_the_native_upstream(code_sim, access, tmp_path, notes, proxy_sink):
    path, word = notes
    code_sim.script([{"type": "text", "text": "I will read it."},
                     {"type": "tool_use", "id": "toolu_cc1", "name": "Read", "input": {"file_path": str(path)}}])
    result = run_claude(tmp_path, CODE_URL, access, "MiniMax-M3",
                        f"What word is in {path}? Answer with the word.", proxy_sink)
    # The simulator's unscripted answer repeats what the last user turn said:
    # here the Read tool's output, which only Claude Code could produce.
    assert word in result["result"], result
    requests = code_sim.requests()
    assert len(requests) == 2, [r["detail"]["body"]["messages"][-1] for r in requests]
    second = requests[1]["detail"]["body"]
    results = [b for m in second["messages"] if m["role"] == "user" and isinstance(m["content"], list)
               for b in m["content"] if b.get("type") == "tool_result"]
    assert [r["tool_use_id"] for r in results] == ["toolu_cc1"]
    assert word in json.dumps(results)
    assert any(t["name"] == "Read" for t in second["tools"])


def test_claude_code_runs_a_tool_loop_on_a_web_chat(sim, new_token, tmp_path, notes, proxy_sink):
    path, word = notes
    sim.replies(tool_call("Read", {"file_path": str(path)}), "The word is in the file you showed me.")
    result = run_claude(tmp_path, GATEWAY_URL, new_token(), "hailuo",
                        f"What word is in {path}? Answer with the word.", proxy_sink)
    assert result["result"] == "The word is in the file you showed me."
    prompts = [t["prompt"] for c in sim.conversations() for t in c["turns"]]
    assert len(prompts) == 2, "one turn to call the tool, one to answer"
    assert word in prompts[1], "the second turn carried the Read tool's output"
    assert "<tool_result" in prompts[1]
