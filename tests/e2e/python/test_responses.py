"""The OpenAI Responses door end to end, on both gateway kinds: the openai
SDK's `responses.create`, `responses.stream` (a function tool loop) and
`responses.parse` (`text.format` with a JSON schema), the OpenAI Agents SDK
with its default Responses model running a function tool, and Codex CLI
itself run headless (`codex exec`) with a custom provider pointing at the
gateway, through a shell tool loop the simulator scripts; over a native
upstream (the MiniMax Code simulator) and a web chat with emulated tools
(the Hailuo simulator).

Codex is kept off the internet by its documented switches (plugins and
analytics off) and by a proxy that refuses and records every outbound
attempt: a test fails if it saw one. It waits forever on a refused
connection, so every run has its own timeout."""

import asyncio
import json
import os
import subprocess
import uuid

import openai
import pytest
from pydantic import BaseModel

from conftest import CODE_URL, GATEWAY_URL, ProxySink, last_sent, tokens_of, tool_call

ROOT = os.environ.get("ROOT", ".")
CODEX = os.path.join(ROOT, "tests", "e2e", "agents", "node_modules", ".bin", "codex")

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather now",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def client(key: str, base: str = CODE_URL) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)


def test_create_answers_with_the_upstreams_usage(code_sim, access):
    r = client(access).responses.create(model="gpt-5-codex", input="hello there", instructions="Be brief.")
    assert r.output_text == "MiniMax Code simulator: you said «hello there»."
    assert r.status == "completed" and r.model == "gpt-5-codex" and r.id.startswith("resp_")
    assert r.usage.input_tokens == tokens_of("Be brief.") + tokens_of("hello there")
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert last_sent(code_sim)["system"] == [{"type": "text", "text": "Be brief."}]


def test_a_streamed_function_tool_loop(code_sim, access):
    code_sim.script([{"type": "tool_use", "id": "toolu_r1", "name": "get_weather", "input": {"city": "Paris"}}])
    c = client(access)
    items = [{"role": "user", "content": "Weather in Paris?"}]
    with c.responses.stream(model="gpt-5-codex", input=items, tools=[WEATHER]) as s:
        kinds = [e.type for e in s]
        first = s.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.function_call_arguments.delta" in kinds
    [call] = [o for o in first.output if o.type == "function_call"]
    assert (call.name, json.loads(call.arguments), call.call_id) == ("get_weather", {"city": "Paris"}, "toolu_r1")
    items += [o.model_dump(exclude_none=True) for o in first.output]
    items.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21°C"})
    second = c.responses.create(model="gpt-5-codex", input=items, tools=[WEATHER])
    assert "sunny, 21°C" in second.output_text, "the model read the tool's output"
    sent = last_sent(code_sim)
    assert sent["messages"][1]["content"][-1] == {"type": "tool_use", "id": "toolu_r1", "name": "get_weather",
                                                  "input": {"city": "Paris"}}
    assert sent["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_r1",
                                               "content": "sunny, 21°C"}]


class Weather(BaseModel):
    city: str
    celsius: int


def test_text_format_json_schema_parses_into_the_callers_type(code_sim, access):
    code_sim.script([{"type": "text", "text": '{"city": "Paris", "celsius": 21}'}])
    r = client(access).responses.parse(model="gpt-5-codex", input="Weather in Paris as JSON", text_format=Weather)
    assert r.output_parsed == Weather(city="Paris", celsius=21)
    schema = last_sent(code_sim)["output_config"]["format"]["schema"]
    assert schema["properties"]["celsius"]["type"] == "integer"


def test_what_a_stateless_gateway_cannot_do_is_an_openai_error(code_sim, access):
    c = client(access)
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model="m", input="x", previous_response_id="resp_gone")
    assert e.value.code == "previous_response_not_found"
    assert "stateless" in e.value.message
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve("resp_gone")
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model="m", input="x", tools=[{"type": "web_search"}], tool_choice={"type": "web_search"})
    assert "web_search" in e.value.message
    assert code_sim.requests() == [], "nothing reached the upstream"


def test_the_web_chat_answers_the_responses_door_with_emulated_tools(sim, new_token):
    sim.replies(tool_call("get_weather", {"city": "Paris"}), "Sunny in Paris.")
    c = client(new_token(), GATEWAY_URL)
    items = [{"role": "user", "content": "Weather in Paris?"}]
    with c.responses.stream(model="gpt-5-codex", input=items, tools=[WEATHER]) as s:
        first = s.get_final_response()
    [call] = [o for o in first.output if o.type == "function_call"]
    assert json.loads(call.arguments) == {"city": "Paris"}
    items += [o.model_dump(exclude_none=True) for o in first.output]
    items.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny"})
    second = c.responses.create(model="gpt-5-codex", input=items, tools=[WEATHER])
    assert second.output_text == "Sunny in Paris."
    assert "sunny" in sim.conversations()[-1]["turns"][0]["prompt"]


def test_the_agents_sdk_runs_a_function_tool_streamed_and_not(code_sim, access):
    from agents import Agent, Runner, function_tool, set_default_openai_api, set_default_openai_client, \
        set_tracing_disabled

    calls = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"{city}: sunny, 21 degrees"

    set_tracing_disabled(True)
    set_default_openai_client(openai.AsyncOpenAI(base_url=f"{CODE_URL}/v1", api_key=access, max_retries=0),
                              use_for_tracing=False)
    set_default_openai_api("responses")
    agent = Agent(name="weather", instructions="Use the tool.", model="gpt-5-codex", tools=[get_weather])
    async def both():
        results = []
        for streamed in (False, True):
            code_sim.script([{"type": "tool_use", "id": f"toolu_a{int(streamed)}", "name": "get_weather",
                              "input": {"city": "Paris"}}])
            if streamed:
                result = Runner.run_streamed(agent, "Weather in Paris?")
                async for _ in result.stream_events():
                    pass
            else:
                result = await Runner.run(agent, "Weather in Paris?")
            results.append(result.final_output)
        return results

    # One event loop for both runs: the client's connections belong to it.
    for final_output in asyncio.run(both()):
        assert "Paris: sunny, 21 degrees" in final_output, final_output
    assert calls == ["Paris", "Paris"]


# --- Codex, headless ---------------------------------------------------------


def run_codex(tmp_path, base_url: str, key: str, prompt: str, proxy: ProxySink) -> list[dict]:
    home, work = tmp_path / "codex-home", tmp_path / "work"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(f"""
model = "gpt-5-codex"
model_provider = "gw"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[analytics]
enabled = false

[features]
plugins = false

[model_providers.gw]
name = "gw"
base_url = "{base_url}/v1"
env_key = "GW_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 60000
""")
    env = {
        "PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(home), "GW_API_KEY": key,
        "HTTPS_PROXY": f"http://127.0.0.1:{proxy.port}", "HTTP_PROXY": f"http://127.0.0.1:{proxy.port}",
        "NO_PROXY": "127.0.0.1,localhost", "RUST_LOG": "error",
    }
    done = subprocess.run([CODEX, "exec", "--skip-git-repo-check", "--json", prompt],
                          cwd=work, env=env, capture_output=True, text=True, timeout=240)
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0, f"codex exited {done.returncode}: {done.stdout[-3000:]} {done.stderr[-3000:]}"
    assert any(e.get("type") == "turn.completed" for e in events), events
    return events


def items_of(events: list[dict], kind: str) -> list[dict]:
    return [e["item"] for e in events if e.get("type") == "item.completed" and e["item"].get("type") == kind]


@pytest.fixture
def notes(tmp_path):
    (tmp_path / "work").mkdir()
    word = f"stubword{uuid.uuid4().hex[:8]}"
    (tmp_path / "work" / "notes.txt").write_text(f"{word}\n")
    return word


def test_codex_runs_a_shell_tool_loop_on_the_native_upstream(code_sim, access, tmp_path, notes, proxy_sink):
    code_sim.script([{"type": "tool_use", "id": "toolu_cx1", "name": "exec_command",
                      "input": {"cmd": "cat notes.txt"}}])
    events = run_codex(tmp_path, CODE_URL, access, "What word is in notes.txt?", proxy_sink)
    [command] = items_of(events, "command_execution")
    assert notes in command["aggregated_output"] and command["exit_code"] == 0
    messages = items_of(events, "agent_message")
    # The simulator's unscripted answer repeats what the last user turn said:
    # here the shell's output, which only Codex could produce.
    assert notes in messages[-1]["text"], messages
    requests = code_sim.requests()
    assert len(requests) == 2
    results = [b for m in requests[1]["detail"]["body"]["messages"] if isinstance(m["content"], list)
               for b in m["content"] if b.get("type") == "tool_result"]
    assert [r["tool_use_id"] for r in results] == ["toolu_cx1"] and notes in json.dumps(results)


def test_codex_runs_a_shell_tool_loop_on_a_web_chat(sim, new_token, tmp_path, notes, proxy_sink):
    sim.replies(tool_call("exec_command", {"cmd": "cat notes.txt"}), "I read the file.")
    events = run_codex(tmp_path, GATEWAY_URL, new_token(), "What word is in notes.txt?", proxy_sink)
    [command] = items_of(events, "command_execution")
    assert notes in command["aggregated_output"]
    assert items_of(events, "agent_message")[-1]["text"] == "I read the file."
    prompts = [t["prompt"] for c in sim.conversations() for t in c["turns"]]
    assert len(prompts) == 2 and notes in prompts[1], "the second turn carried the shell's output"
