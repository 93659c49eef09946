"""The MiniMax Code upstream end to end, on both gateway kinds, with the
official SDKs, against the simulator of its protocol (messages, the account
service): answers streamed and not with the upstream's own usage, native
tool loops (the OpenAI SDK, LangChain's `bind_tools`), thinking, images,
each failure of the protocol's section 6 reaching the caller as it should;
and the accounts: `gateway login` run for real, then access tokens expiring
while requests keep coming, renewed by the one writer with no refresh token
spent twice, across a restart of the server."""

import base64
import json
import os
import re
import subprocess
import threading
import time

import boto3
import httpx
import openai
import pytest

from conftest import CODE_ACCOUNTS_URL, CODE_SIM_URL, CODE_URL, last_sent, tokens_of, server_only

ROOT = os.environ.get("ROOT", ".")
MOTO_URL = os.environ.get("MOTO_URL", "http://127.0.0.1:5055")
GATEWAY_BIN = os.environ.get("SERVER_BIN") or os.path.join(ROOT, "target", "debug", "gateway")
MAINTAINER_BIN = os.path.join(ROOT, "target", "debug", "token-liveness")

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
# A 1×1 PNG.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def client(key: str, base: str = CODE_URL) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)


def test_answers_streamed_and_not_carry_the_upstreams_own_usage(code_sim, access):
    c = client(access)
    r = c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hello there"}])
    text = r.choices[0].message.content
    assert text == "MiniMax Code simulator: you said «hello there»."
    assert r.model == "gpt-4o", "the caller's model name is echoed"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (tokens_of("hello there"), tokens_of(text))
    sent = last_sent(code_sim)
    assert sent["model"] == "MiniMax-M3", "an unknown name goes to the default model"
    assert sent["stream"] is True and "thinking" not in sent

    # Streamed, on a model that always thinks: reasoning apart from the content.
    stream = c.chat.completions.create(model="MiniMax-M3.1-Flash-Preview", stream=True,
                                       stream_options={"include_usage": True},
                                       messages=[{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": "hello again"}])
    content, reasoning, finishes, usage = "", "", [], None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            content += choice.delta.content or ""
            reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert content == "MiniMax Code simulator: you said «hello again»."
    assert reasoning == "Thinking about: hello again"
    assert "<think>" not in content
    assert finishes == ["stop"]
    assert usage.prompt_tokens == tokens_of("Be brief.") + tokens_of("hello again")
    assert usage.completion_tokens == tokens_of(content) + tokens_of(reasoning)
    assert usage.completion_tokens_details.reasoning_tokens == tokens_of(reasoning)
    sent = last_sent(code_sim)
    assert sent["system"] == [{"type": "text", "text": "Be brief."}]
    assert "thinking" not in sent, "M3.1 is never sent `disabled`, and needs no `adaptive`"


def test_a_native_tool_loop_with_the_openai_sdk(code_sim, access):
    code_sim.script([{"type": "text", "text": "Let me check."},
                     {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "北京"}}])
    code_sim.script([{"type": "text", "text": "Sunny in Beijing."}])
    c = client(access)
    messages = [{"role": "user", "content": "Weather in Beijing?"}]
    with c.chat.completions.stream(model="gpt-4o", messages=messages, tools=[WEATHER]) as s:
        first = s.get_final_completion()
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    [call] = choice.message.tool_calls
    assert (call.id, call.function.name) == ("toolu_01", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "北京"}
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 25°C"}]
    second = c.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == "Sunny in Beijing."
    assert second.choices[0].finish_reason == "stop"
    sent = last_sent(code_sim)
    assert sent["messages"][1] == {"role": "assistant", "content": [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "北京"}}]}
    assert sent["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny, 25°C"}]
    assert sent["tools"][0]["input_schema"]["required"] == ["city"]
    assert sent["tool_choice"] == {"type": "auto"}
    assert "<tool_call" not in json.dumps(sent), "no emulation contract on a native upstream"


def test_langchain_bind_tools_gets_native_tool_calls(code_sim, access):
    from langchain_openai import ChatOpenAI

    code_sim.script([{"type": "tool_use", "id": "toolu_lc", "name": "get_weather", "input": {"city": "Paris"}}])
    llm = ChatOpenAI(model="gpt-4o", base_url=f"{CODE_URL}/v1", api_key=access, max_retries=0)
    message = llm.bind_tools([WEATHER], tool_choice="get_weather").invoke("Weather in Paris?")
    assert [(t["name"], t["args"], t["id"]) for t in message.tool_calls] == [("get_weather", {"city": "Paris"}, "toolu_lc")]
    assert last_sent(code_sim)["tool_choice"] == {"type": "tool", "name": "get_weather"}


def test_an_image_goes_as_a_base64_block_and_a_text_only_model_refuses_it(code_sim, access):
    c = client(access)
    ask = [{"role": "user", "content": [{"type": "text", "text": "What is it?"},
                                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}]
    r = c.chat.completions.create(model="MiniMax-M3", messages=ask)
    assert r.usage.prompt_tokens == tokens_of("What is it?") + 100
    blocks = last_sent(code_sim)["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    sent_before = len(code_sim.requests())
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="MiniMax-M2.7", messages=ask)
    assert "takes text only" in e.value.message
    assert len(code_sim.requests()) == sent_before, "refused before it was sent"


def pdf(text: str, page_box: str = "/MediaBox [0 0 612 792] ") -> bytes:
    """A one-page PDF showing `text` (with no `page_box`, one the PDF parser panics on)."""
    stream = f"BT /F1 24 Tf 72 720 Td ({text}) Tj ET"
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               f"<< /Type /Page /Parent 2 0 R {page_box}/Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
               f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
               "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = b"%PDF-1.4\n", []
    for i, o in enumerate(objects):
        offsets.append(len(out))
        out += f"{i + 1} 0 obj\n{o}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_a_pdf_goes_as_its_text_and_one_that_breaks_the_reader_is_a_400(code_sim, access):
    """The text is extracted by a child process of the gateway's own binary:
    a file the parser panics on costs that child, never the gateway."""
    c = client(access)

    def ask(data: bytes, name: str):
        return c.chat.completions.create(model="MiniMax-M3", messages=[{"role": "user", "content": [
            {"type": "text", "text": "Summarise it."},
            {"type": "file", "file": {"filename": name, "file_data": "data:application/pdf;base64,"
                                      + base64.b64encode(data).decode()}}]}])

    ask(pdf("Quarterly revenue rose 12 percent"), "report.pdf")
    blocks = last_sent(code_sim)["messages"][0]["content"]
    assert blocks[1]["type"] == "text" and "Quarterly revenue rose 12 percent" in blocks[1]["text"], blocks
    assert "report.pdf" in blocks[1]["text"]
    sent = len(code_sim.requests())
    with pytest.raises(openai.BadRequestError) as e:
        ask(pdf("No box", page_box=""), "broken.pdf")
    assert "broken.pdf could not be read" in e.value.message
    assert len(code_sim.requests()) == sent, "nothing was sent upstream"
    # The gateway answered the 400 and goes on answering.
    r = c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "still there?"}])
    assert "still there?" in r.choices[0].message.content


# (fault, the SDK's class, status, words the message must hold, Retry-After)
FAULTS = [
    ("throttle_2045", openai.RateLimitError, 429, "throttled", "60"),
    ("throttle_plain", openai.RateLimitError, 429, "throttled", "60"),
    ("plan_2056", openai.RateLimitError, 429, "plan's usage limit", "3600"),
    ("plan_2067", openai.RateLimitError, 429, "plan's usage limit", "3600"),
    ("credits_402", openai.InternalServerError, 503, "out of credits", None),
    ("credits_inner_1400010161", openai.InternalServerError, 503, "out of credits", None),
    ("forbidden_unusual_activity", openai.InternalServerError, 503, "blocked", None),
    ("base_resp_1006", openai.InternalServerError, 503, "blocked", None),
    ("egress_refused", openai.InternalServerError, 503, "egress", None),
    ("token_expired", openai.AuthenticationError, 401, "rejected", None),
    ("context_overflow", openai.BadRequestError, 400, "context window", None),
    ("too_large_413", openai.APIStatusError, 413, "too large", None),
    ("overloaded_529", openai.InternalServerError, 502, "529", None),
]


@pytest.mark.parametrize("kind,error,status,words,retry_after", FAULTS, ids=[f[0] for f in FAULTS])
def test_each_failure_reaches_the_caller_as_its_class_says(code_sim, access, kind, error, status, words, retry_after):
    code_sim.fault(kind, times=5)
    with pytest.raises(error) as e:
        client(access).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == status
    assert words in e.value.message, e.value.message
    assert e.value.response.headers.get("retry-after") == retry_after
    assert access not in e.value.message, "the token is never echoed"


@pytest.mark.parametrize("kind", ["overloaded_529", "server_500"])
def test_a_passing_upstream_fault_is_retried(code_sim, access, kind):
    code_sim.fault(kind, times=1)
    r = client(access).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "again"}])
    assert "again" in r.choices[0].message.content


@pytest.mark.parametrize("kind", ["error_event_after_n", "cut_before_stop"])
def test_a_stream_broken_upstream_ends_in_an_error_never_a_short_answer(code_sim, access, kind):
    code_sim.fault(kind, n=3, error_kind="overloaded_529")
    stream = client(access).chat.completions.create(
        model="gpt-4o", stream=True, messages=[{"role": "user", "content": "a long enough answer please"}])
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_what_this_upstream_cannot_do_is_a_400_that_says_why(code_sim, access):
    c = client(access)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
                                  extra_body={"keep_conversation": True})
    assert "whole history" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="gpt-4o", max_tokens=200000, messages=[{"role": "user", "content": "hi"}])
    assert "128000" in e.value.message
    assert code_sim.requests() == [], "nothing was sent upstream"


def test_a_refresh_token_in_the_header_is_refused_with_what_to_do(code_sim):
    refresh = code_sim.login("bob")["refresh_token"]
    with pytest.raises(openai.AuthenticationError) as e:
        client(refresh).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert "gateway login" in e.value.message
    assert refresh not in e.value.message


def aws_env() -> dict:
    return {"AWS_ENDPOINT_URL": MOTO_URL, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"), "AWS_EC2_METADATA_DISABLED": "true"}


def code_env(**extra) -> dict:
    return {"PATH": os.environ["PATH"], "RUST_LOG": "info", "UPSTREAM": "minimax-code",
            "MINIMAX_CODE_BASE_URL": CODE_SIM_URL, "MINIMAX_CODE_ACCOUNT_URL": CODE_SIM_URL,
            "MINIMAX_CODE_PLATFORM_URL": CODE_SIM_URL, **extra}


def gateway_login(code_sim, account: str, *target: str, env: dict | None = None) -> str:
    """`gateway login` run for real: the code it prints approved in the simulator."""
    p = subprocess.Popen([GATEWAY_BIN, "login", *target], env=env or code_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    out = []
    for line in p.stdout:
        out.append(line)
        m = re.search(r"confirm the code ([A-Z0-9]{4}-[A-Z0-9]{4})", line)
        if m:
            code_sim.approve(m.group(1), account)
            break
    rest, _ = p.communicate(timeout=60)
    text = "".join(out) + rest
    assert p.returncode == 0, text
    assert "Added the MiniMax Code account" in text, text
    assert "mmoat_" not in text and "mmort_" not in text, "a token was printed"
    return text


def secretsmanager():
    return boto3.client("secretsmanager", endpoint_url=MOTO_URL, region_name=aws_env()["AWS_REGION"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def put_secret(sm, name: str, value: dict):
    try:
        sm.create_secret(Name=name, SecretString=json.dumps(value))
    except sm.exceptions.ResourceExistsException:
        sm.put_secret_value(SecretId=name, SecretString=json.dumps(value))


def test_login_then_tokens_expiring_under_load_renewed_by_the_one_writer(code_sim):
    """The deployment on port 9007 reads its accounts from e2e/code-tokens;
    the token-liveness binary, run here as its schedule would, is the one
    writer (back to back, as a tight schedule would); the tokens last 30 s
    and requests keep coming for 50 s, so each account is renewed at least
    once and its renewed token is what later requests use. (A token is
    renewed 22 s into its life and used until 2 s before its end: a 6 s
    window that a loaded machine's slow runs cannot miss.)"""
    code_sim.settings(interval=1, access_ttl_s=30)
    sm = secretsmanager()
    put_secret(sm, "e2e/code-tokens", {"api_keys": ["sk-e2e-code"]})
    put_secret(sm, "e2e/code-status", {})
    env = code_env(**aws_env())
    gateway_login(code_sim, "acct-one", "--secret-id", "e2e/code-tokens", env=env)
    gateway_login(code_sim, "acct-two", "--secret-id", "e2e/code-tokens", env=env)
    stored = json.loads(sm.get_secret_value(SecretId="e2e/code-tokens")["SecretString"])
    assert stored["api_keys"] == ["sk-e2e-code"], "the rest of the document is kept"
    logins = [a["refresh_token"] for a in stored["minimax_code_accounts"]]
    assert len(logins) == 2

    stop = threading.Event()
    runs = []

    def maintainer():
        menv = code_env(**aws_env(), TOKENS_SECRET_ID="e2e/code-tokens", TOKEN_STATUS_SECRET_ID="e2e/code-status")
        while not stop.is_set():
            runs.append(subprocess.run([MAINTAINER_BIN], env=menv, capture_output=True, text=True, timeout=60))
            stop.wait(0.3)

    writer = threading.Thread(target=maintainer)
    writer.start()
    try:
        c = client("sk-e2e-code", CODE_ACCOUNTS_URL)
        deadline, answered = time.monotonic() + 50, 0
        while time.monotonic() < deadline:
            r = c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"ping {answered}"}])
            assert f"ping {answered}" in r.choices[0].message.content
            answered += 1
            time.sleep(0.3)
    finally:
        stop.set()
        writer.join(90)
    assert all(r.returncode == 0 for r in runs), [r.stdout[-2000:] for r in runs if r.returncode]
    assert code_sim.state()["counts"].get("refreshes", 0) >= 2, "each account renewed"
    status = json.loads(sm.get_secret_value(SecretId="e2e/code-status")["SecretString"])
    assert len(status["accounts"]) == 2, status
    assert all(l["generation"] >= 1 and "dead" not in l for l in status["accounts"].values()), status
    after = json.loads(sm.get_secret_value(SecretId="e2e/code-tokens")["SecretString"])
    assert [a["refresh_token"] for a in after["minimax_code_accounts"]] == logins, \
        "the user's secret is never rewritten by the gateway"
    # The code_sim fixture asserts no violation: no refresh token spent twice,
    # no two refreshes of one account at once, no foreign token.


def test_the_operators_view_shows_each_accounts_credits_and_plan_windows(code_sim):
    """The deployment on port 9007 shows, for each MiniMax Code account, the
    credits balance (unexpired grants only) and the Token Plan's windows,
    read from the simulator's account service with the account's own access
    token; a plan-less account reads as not readable, not as a fault; a
    caller's key gets a 403, and no token is in the view."""
    sm = secretsmanager()
    put_secret(sm, "e2e/code-tokens", {"api_keys": ["sk-e2e-code"], "admin_api_keys": ["sk-e2e-code-admin"]})
    put_secret(sm, "e2e/code-status", {})
    code_sim.account_info("acct-plan", credits="42.00", expired_credits="99.00", plan_remaining_percent=60)
    code_sim.account_info("acct-noplan", credits="7.25", plan="none")
    env = code_env(**aws_env())
    gateway_login(code_sim, "acct-plan", "--secret-id", "e2e/code-tokens", env=env)
    gateway_login(code_sim, "acct-noplan", "--secret-id", "e2e/code-tokens", env=env)
    stored = json.loads(sm.get_secret_value(SecretId="e2e/code-tokens")["SecretString"])
    secrets = [a[k] for a in stored["minimax_code_accounts"] for k in ("access_token", "refresh_token") if a.get(k)]
    assert len(secrets) >= 2

    http = httpx.Client(base_url=CODE_ACCOUNTS_URL, timeout=30)
    caller = http.get("/admin/pool", headers={"authorization": "Bearer sk-e2e-code"})
    assert caller.status_code == 403, caller.text
    # The deployment reads its secret again after a second.
    deadline, view = time.monotonic() + 20, {}
    while time.monotonic() < deadline:
        r = http.get("/admin/pool", headers={"authorization": "Bearer sk-e2e-code-admin"})
        if r.status_code == 200 and len((view := r.json())["accounts"]) == 2:
            break
        time.sleep(0.3)
    assert len(view.get("accounts", [])) == 2, view
    assert not any(s in r.text for s in secrets), "a token is in the view"
    # Rows are named by fingerprint: told apart here by what they hold.
    noplan, plan = sorted(view["accounts"], key=lambda a: (a["credits"] or {}).get("balance", 0))
    assert plan["credits"] == {"balance": 42.0, "grants": 1}, plan
    window = plan["plan"]["interval"]
    assert window["remaining_percent"] == 60 and not window["unlimited"], plan
    assert window["ends_at"] - window["starts_at"] == 5 * 3600, window
    assert plan["plan"]["weekly"]["ends_at"] - plan["plan"]["weekly"]["starts_at"] == 7 * 24 * 3600
    assert noplan["credits"] == {"balance": 7.25, "grants": 1}, noplan
    assert noplan["plan"]["readable"] is False and "2062" in noplan["plan"]["reason"], noplan
    assert noplan["state"] == "ready"

    # Read once, kept for a minute: the page's refreshes do not poll upstream.
    asked = len(code_sim.requests("/coding_plan/remains"))
    assert asked == 2, code_sim.requests("/coding_plan/remains")
    for _ in range(3):
        http.get("/admin/pool", headers={"authorization": "Bearer sk-e2e-code-admin"}).raise_for_status()
    assert len(code_sim.requests("/coding_plan/remains")) == asked
    # The code_sim fixture asserts no violation: each reading carried an
    # access token the simulator issued, as a bearer.


@server_only
def test_the_servers_timer_renews_and_a_restart_continues_from_the_state_file(code_sim, tmp_path):
    from test_server import Server

    code_sim.settings(interval=1, access_ttl_s=8)
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"api_keys": ["sk-e2e-file"]}))
    gateway_login(code_sim, "acct-file", "--tokens-file", str(tokens))
    assert oct(tokens.stat().st_mode & 0o777) == "0o600"
    state = tmp_path / "tokens.json.state.json"

    def generation() -> int:
        try:
            return max(l["generation"] for l in json.loads(state.read_text())["accounts"].values())
        except (FileNotFoundError, ValueError, KeyError):
            return 0

    def wait_generation(n: int):
        deadline = time.monotonic() + 30
        while generation() < n:
            assert time.monotonic() < deadline, f"no rotation {n}: {state.read_text() if state.exists() else 'no state file'}"
            time.sleep(0.2)

    settings = {k: v for k, v in code_env(TOKENS_FILE=str(tokens)).items() if k != "PATH"}
    first = Server("code-file-a", **settings)
    try:
        wait_generation(1)
        assert oct(state.stat().st_mode & 0o777) == "0o600"
        r = client("sk-e2e-file", first.url).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "before"}])
        assert "before" in r.choices[0].message.content
    finally:
        first.stop()
    # The tokens file still names the login's refresh token, spent by now:
    # the restarted server must continue from the state file's.
    second = Server("code-file-b", **settings)
    try:
        wait_generation(3)
        r = client("sk-e2e-file", second.url).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "after"}])
        assert "after" in r.choices[0].message.content
        log = second.text()
    finally:
        second.stop()
    assert "mmort_" not in log and "mmoat_" not in log


def test_the_model_list_is_the_upstreams_catalogue(code_sim):
    ids = [m.id for m in client("anything").models.list()]
    assert ids == ["MiniMax-M3.1-Flash-Preview", "MiniMax-M3", "MiniMax-M2.7-highspeed", "MiniMax-M2.7"]
    assert client("anything").models.retrieve("MiniMax-M3").id == "MiniMax-M3"


def test_speech_on_this_upstream_is_a_400_that_says_so(code_sim, access):
    with pytest.raises(openai.BadRequestError) as e:
        client(access).audio.speech.create(model="tts-1", voice="alloy", input="hello")
    assert "no speech synthesis" in e.value.message
