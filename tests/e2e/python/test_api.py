"""MiniMax's paid platform (the `minimax-api` upstream) end to end, on both
gateway kinds, with the official SDKs against the simulator of its protocol:
a paid-only deployment (answers streamed and not, thinking split out and
never `<think>` in the content, every stream quirk of section 2.6 absorbed,
native tools, the code table's errors each with its status), and the
fallback chain `minimax-code,minimax-api`: free accounts first, the platform
when they cannot answer, free again once they can, the header saying which
served."""

import anthropic
import openai
import pytest

from conftest import API_URL, FALLBACK_URL

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def client(key: str, base: str = API_URL) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)


def test_a_paid_only_gateway_answers_with_the_platforms_usage_and_thinking_split_out(api_sim, platform_key):
    raw = client(platform_key).chat.completions.with_raw_response.create(
        model="gpt-4o", max_tokens=300, temperature=0.7, messages=[{"role": "system", "content": "Be brief."},
                                                  {"role": "developer", "content": "Be kind."},
                                                  {"role": "user", "content": "hello there"}])
    assert raw.headers["x-gateway-upstream"] == "minimax-api"
    r = raw.parse()
    msg = r.choices[0].message
    assert msg.content == "OK: hello there"
    assert msg.model_extra["reasoning_content"] == "Thinking about: hello there"
    assert r.model == "gpt-4o"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0
    assert r.usage.completion_tokens_details.reasoning_tokens > 0
    sent = api_sim.sent()
    assert sent["model"] == "MiniMax-M3" and sent["reasoning_split"] is True
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["max_completion_tokens"] == 300 and sent["temperature"] == 0.7
    assert sent["messages"][0] == {"role": "system", "content": "Be brief.\n\nBe kind."}
    call = api_sim.requests()[-1]
    assert call["headers"]["authorization"] == f"Bearer {platform_key}"
    assert "x-api-key" not in call["headers"] and "groupid" not in call["query"].lower()
    assert "GroupId" not in call["body"]


QUIRKS = [
    {},
    {"first_role_empty": True},
    {"usage_null": True},
    {"final_frame": False},
    {"usage_chunk": False},
    {"finish_delta_null": True},
    {"done": True},
    {"cumulative_reasoning": True},
    {"chunk_chars": 1},
    {"final_frame": False, "usage_chunk": False, "done": True},
]


@pytest.mark.parametrize("quirks", QUIRKS, ids=[",".join(q) or "defaults" for q in QUIRKS])
def test_every_stream_quirk_gives_exactly_openais_stream(api_sim, platform_key, quirks):
    api_sim.settings(**quirks)
    chunks = list(client(platform_key).chat.completions.create(
        model="MiniMax-M2.7", stream=True, stream_options={"include_usage": True}, temperature=0,
        messages=[{"role": "user", "content": "a quirky stream"}]))
    roles = [c.choices[0].delta.role for c in chunks if c.choices and c.choices[0].delta.role]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    usages = [c.usage for c in chunks if c.usage]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
                        for c in chunks if c.choices)
    assert roles == ["assistant"]
    assert finishes == ["stop"]
    assert text == "OK: a quirky stream" and "<think>" not in text
    assert reasoning == "Thinking about: a quirky stream"
    assert api_sim.sent()["model"] == "MiniMax-M2.7"
    assert api_sim.sent()["temperature"] == 0.01  # M2.x takes (0, 1]
    if quirks.get("final_frame") is False and quirks.get("usage_chunk") is False:
        assert len(usages) == 1  # estimated: the platform gave none
    else:
        assert len(usages) == 1 and usages[0].prompt_tokens > 0


def test_inline_thinking_split_mid_tag_never_reaches_the_content(api_sim, platform_key):
    api_sim.script(reasoning="", chunks=["  <thi", "nk>\nweigh it", " up</th", "ink>\n", "\nYes <think>really</think>"])
    r = client(platform_key).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "q"}])
    assert r.choices[0].message.content == "Yes <think>really</think>"
    assert r.choices[0].message.model_extra["reasoning_content"] == "\nweigh it up"


def test_a_native_tool_loop_with_arguments_split_over_chunks(api_sim, platform_key):
    api_sim.settings(split_arguments=4)
    api_sim.script(tool_calls=[{"name": "get_weather", "arguments": '{"city": "Paris"}'}])
    c = client(platform_key)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    stream = c.chat.completions.create(model="gpt-4o", stream=True, tools=[WEATHER], tool_choice="required",
                                       messages=messages)
    calls, finish = {}, None
    for chunk in stream:
        if not chunk.choices:
            continue
        for d in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] = d.id or entry["id"]
            entry["name"] = (d.function.name or entry["name"]) if d.function else entry["name"]
            entry["arguments"] += (d.function.arguments or "") if d.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert [(v["name"], v["arguments"]) for v in calls.values()] == [("get_weather", '{"city": "Paris"}')]
    sent = api_sim.sent()
    assert sent["tool_choice"] == "auto"  # `required` does not exist upstream
    call = calls[0]
    messages += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": call["id"], "content": "18 C, sunny"}]
    r = c.chat.completions.create(model="gpt-4o", tools=[WEATHER], messages=messages)
    assert r.choices[0].message.content == "OK: 18 C, sunny"
    assert api_sim.sent()["messages"][2]["tool_call_id"] == call["id"]


ERRORS = [
    # code, times, status, words in the message, Retry-After
    (2049, 1, 401, "MINIMAX_API_REGION", None),
    (1004, 1, 401, "refused the key", None),
    (1002, 1, 429, "throttled", "30"),
    (2056, 1, 429, "plan", "3600"),
    (1008, 1, 503, "out of credits", None),
    (1026, 1, 400, "sensitive", None),
    (2013, 1, 400, "invalid params", None),
    (1000, 5, 502, "1000", None),
    (1001, 5, 504, "timed out", None),
    (9999, 1, 502, "9999", None),
]


@pytest.mark.parametrize("code,times,status,words,retry_after", ERRORS, ids=[str(e[0]) for e in ERRORS])
def test_each_code_of_the_table_reaches_the_caller_with_its_status(api_sim, platform_key, code, times, status,
                                                                     words, retry_after):
    api_sim.fault(code, times=times)
    with pytest.raises(openai.APIStatusError) as e:
        client(platform_key).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == status, e.value.message
    assert words in e.value.message, e.value.message
    assert e.value.response.headers.get("retry-after") == retry_after
    assert platform_key not in e.value.message


def test_a_key_of_the_other_region_is_named_as_such(api_sim):
    with pytest.raises(openai.AuthenticationError) as e:
        client("sk-api-cn-e2eforeign").chat.completions.create(model="gpt-4o",
                                                               messages=[{"role": "user", "content": "hi"}])
    assert "intl" in e.value.message and "MINIMAX_API_REGION=cn" in e.value.message


def test_a_transient_failure_is_retried_on_the_next_key(api_sim, platform_key):
    other = platform_key + "b"
    api_sim.fault(1000, times=1)
    r = client(f"{platform_key},{other}").chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "again"}])
    assert r.choices[0].message.content == "OK: again"
    assert len(api_sim.requests()) == 2


def test_a_stream_broken_mid_answer_ends_in_an_error_never_a_short_answer(api_sim, platform_key):
    api_sim.fault(1000, after_frames=4)
    stream = client(platform_key).chat.completions.create(
        model="gpt-4o", stream=True, messages=[{"role": "user", "content": "a long enough answer please"}])
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_the_model_list_names_the_platforms_models(platform_key):
    ids = [m.id for m in client(platform_key).models.list()]
    assert "MiniMax-M3" in ids and "MiniMax-M2.7-highspeed" in ids


# The fallback chain: MiniMax Code first, the platform when it cannot answer.

@pytest.mark.parametrize("kind", ["throttle_1039", "credits_402", "plan_2056", "forbidden_unusual_activity"])
def test_free_first_then_the_platform_while_free_accounts_cannot_answer_then_free_again(
        code_sim, api_sim, access, platform_key, kind):
    c = client(f"{access},{platform_key}", FALLBACK_URL)

    def ask(text):
        raw = c.chat.completions.with_raw_response.create(model="MiniMax-M3",
                                                          messages=[{"role": "user", "content": text}])
        return raw.headers["x-gateway-upstream"], raw.parse().choices[0].message.content

    served, _ = ask("free please")
    assert served == "minimax-code"
    assert api_sim.requests() == []
    code_sim.fault(kind, times=1)
    served, text = ask("paid now")
    assert (served, text) == ("minimax-api", "OK: paid now")
    # The account cools for a while (throttled, out of credits, at its
    # plan's limit, blocked): the platform keeps answering without asking it.
    asked = len(code_sim.requests())
    assert ask("still paid")[0] == "minimax-api"
    assert len(code_sim.requests()) == asked


def test_a_dead_free_account_falls_back_with_anthropics_sdk_too(code_sim, api_sim, access, platform_key):
    code_sim.fault("token_expired", times=1)
    c = anthropic.Anthropic(base_url=FALLBACK_URL, api_key=f"{access},{platform_key}", max_retries=0)
    raw = c.messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=200,
                                              messages=[{"role": "user", "content": "fall back"}])
    assert raw.headers["x-gateway-upstream"] == "minimax-api"
    message = raw.parse()
    assert [b.type for b in message.content][-1] == "text"
    assert message.content[-1].text == "OK: fall back"
    assert message.usage.output_tokens > 0


def test_the_callers_mistake_is_not_a_reason_to_fall_back(code_sim, api_sim, access, platform_key):
    code_sim.fault("context_overflow", times=1)
    with pytest.raises(openai.BadRequestError):
        client(f"{access},{platform_key}", FALLBACK_URL).chat.completions.create(
            model="MiniMax-M3", messages=[{"role": "user", "content": "too long"}])
    assert api_sim.requests() == []


def test_a_platform_key_on_a_deployment_without_the_platform_is_refused(platform_key):
    with pytest.raises(openai.AuthenticationError) as e:
        client(platform_key, "http://127.0.0.1:9006").chat.completions.create(
            model="MiniMax-M3", messages=[{"role": "user", "content": "hi"}])
    assert "minimax-api" in e.value.message and platform_key not in e.value.message



def test_the_maintainer_checks_platform_keys_with_the_platforms_own_key_checks(api_sim, platform_key):
    """token-liveness reads the tokens secret's `minimax_api_keys` and checks
    each with the official client's calls (balances for `sk-api-`, plan
    remains for the others); a foreign key is written dead, and no key
    appears in the status document."""
    import json as _json
    import os
    import subprocess

    import boto3

    from conftest import API_SIM_URL, fingerprint

    moto = os.environ.get("MOTO_URL", "http://127.0.0.1:5055")
    sm = boto3.client("secretsmanager", endpoint_url=moto, region_name=os.environ.get("AWS_REGION", "us-east-1"),
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    plan_key, foreign = "sk-cp-intl-e2eplan", "sk-api-cn-e2eforeign"
    doc = {"api_keys": ["sk-e2e-paid-caller"], "minimax_api_keys": [platform_key, plan_key, foreign]}
    for name, value in [("e2e/paid-tokens", doc), ("e2e/paid-status", {})]:
        try:
            sm.create_secret(Name=name, SecretString=_json.dumps(value))
        except sm.exceptions.ResourceExistsException:
            sm.put_secret_value(SecretId=name, SecretString=_json.dumps(value))
    env = {"PATH": os.environ["PATH"], "RUST_LOG": "info", "UPSTREAM": "minimax-code", "AWS_ENDPOINT_URL": moto,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"), "MINIMAX_API_BASE_URL": API_SIM_URL,
           "TOKENS_SECRET_ID": "e2e/paid-tokens", "TOKEN_STATUS_SECRET_ID": "e2e/paid-status"}
    root = os.environ.get("ROOT", ".")
    run = subprocess.run([os.path.join(root, "target", "debug", "token-liveness")], env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    status_text = sm.get_secret_value(SecretId="e2e/paid-status")["SecretString"]
    status = _json.loads(status_text)["tokens"]
    assert status[fingerprint(platform_key)]["live"] is True
    assert status[fingerprint(plan_key)]["live"] is True
    assert status[fingerprint(foreign)]["live"] is False
    for key in (platform_key, plan_key, foreign):
        assert key not in status_text and key not in run.stdout + run.stderr
    paths = [r["path"] for r in api_sim.http.get("/_sim/log").json()]
    assert "/account/query_balance" in paths and "/v1/token_plan/remains" in paths
