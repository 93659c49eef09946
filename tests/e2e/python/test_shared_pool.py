"""One account pool across processes (ACCOUNTS_TABLE in moto's DynamoDB),
against the MiniMax Code simulator, which records two answers on one account
at once as a `concurrent_answers` violation.

The deployment on port 9010 shares the table `e2e-accounts-<kind>`. On the
emulator every function is its own process, as every Lambda environment is:
the chat, Messages and Responses doors are three environments. On the server
kind the tests start a second (and a third) server on the same table, as
replicas behind a balancer. Speech across processes runs on Hailuo, whose
voice is per-account state: the deployments on ports 9011 and 9012 (two
emulators, or two servers) share `e2e-voices-<kind>`."""

import json
import os
import signal
import subprocess
import threading
import time

import anthropic
import boto3
import httpx
import openai
import pytest

from conftest import CODE_SIM_URL, ON_SERVER, GATEWAY_KIND, fingerprint, server_only

ROOT = os.environ.get("ROOT", ".")
E2E_DIR = os.environ.get("E2E_DIR", ".e2e")
MOTO_URL = os.environ.get("MOTO_URL", "http://127.0.0.1:5055")
SHARED_URL = "http://127.0.0.1:9010"
TABLE = f"e2e-accounts-{GATEWAY_KIND}"
MAINTAINER_BIN = os.path.join(ROOT, "target", "debug", "token-liveness")
LONG = "a long answer that takes a while to stream " * 6


def dynamodb():
    return boto3.client("dynamodb", endpoint_url=MOTO_URL, region_name=os.environ.get("AWS_REGION", "us-east-1"),
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def record(token: str) -> dict:
    item = dynamodb().get_item(TableName=TABLE, Key={"account": {"S": fingerprint(token)}}, ConsistentRead=True)
    return item.get("Item", {})


def shared_env() -> dict:
    env = {"PATH": os.environ["PATH"]}
    for line in open(os.path.join(E2E_DIR, "shared.env")):
        key, _, value = line.rstrip("\n").partition("=")
        if key:
            env[key] = value
    return env


@pytest.fixture
def doors(code_sim):
    """Two ways into two processes on one table: (chat URL, Messages URL) on
    the emulator, (this server, another server) on the server kind."""
    if not ON_SERVER:
        yield SHARED_URL, SHARED_URL
        return
    from test_server import Server

    other = Server("shared-b", **{k: v for k, v in shared_env().items() if k != "LISTEN_ADDR"})
    try:
        yield SHARED_URL, other.url
    finally:
        other.stop()


def chat(base: str, token: str, text: str) -> str:
    c = openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0, timeout=60)
    r = c.chat.completions.create(model="MiniMax-M3", messages=[{"role": "user", "content": text}])
    return r.choices[0].message.content


def messages(base: str, token: str, text: str) -> str:
    c = anthropic.Anthropic(base_url=base, api_key=token, max_retries=0, timeout=60)
    r = c.messages.create(model="MiniMax-M3", max_tokens=1024, messages=[{"role": "user", "content": text}])
    return r.content[-1].text


def test_concurrent_requests_in_several_processes_never_share_an_account(code_sim, doors):
    code_sim.settings(pace_ms=20)
    tokens = [code_sim.login(a)["access_token"] for a in ("pool-a", "pool-b")]
    first, second = doors
    results, errors = [], []

    def ask(i):
        try:
            token = tokens[i % 2]
            text = f"#{i} {LONG}"
            # Chat on one process, Messages on the other.
            answer = chat(first, token, text) if i % 4 < 2 else messages(second, token, text)
            results.append((i, answer))
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sorted(i for i, _ in results) == list(range(8))
    for i, answer in results:
        assert f"#{i}" in answer, (i, answer)
    # The fixture asserts no violation; this one is what the pool is for.
    assert not [v for v in code_sim.violations() if v["kind"] == "concurrent_answers"]
    assert len(code_sim.requests()) == 8, "each request answered once, none refused and retried"
    # Every lease was given back before its answer ended.
    for token in tokens:
        item = record(token)
        assert item and "holder" not in item, item


def test_a_dead_token_found_by_one_process_is_skipped_by_the_others(code_sim, doors):
    token = code_sim.login("pool-dead")["access_token"]
    first, second = doors
    code_sim.fault("token_expired", account="pool-dead", times=5)
    with pytest.raises(openai.AuthenticationError):
        chat(first, token, "hello")
    asked = len(code_sim.requests())
    assert record(token)["state"]["S"] == "dead"
    with pytest.raises(anthropic.AuthenticationError) as e:
        messages(second, token, "hello")
    assert "rejected upstream" in str(e.value)
    assert len(code_sim.requests()) == asked, "the other process never asked the upstream"
    assert "mmoat_" not in json.dumps(record(token)), "no token in the table"


def test_the_lease_of_an_environment_frozen_for_good_expires_and_the_account_answers(code_sim, doors):
    token = code_sim.login("pool-frozen")["access_token"]
    first, _ = doors
    # A lease an environment took just before it was frozen (or died).
    now_ms = int(time.time() * 1000)
    dynamodb().put_item(TableName=TABLE, Item={
        "account": {"S": fingerprint(token)}, "holder": {"S": "lambda:frozen:0#0"},
        "lease_until": {"N": str(now_ms + 3000)}, "upstream": {"S": "minimax-code"}})
    started = time.monotonic()
    assert "hello" in chat(first, token, "hello")
    waited = time.monotonic() - started
    assert 2.0 <= waited < 15, f"waited {waited:.1f} s for a 3 s lease"
    assert "holder" not in record(token)


@server_only
def test_a_killed_replicas_lease_expires_and_another_replica_uses_the_account(code_sim, doors):
    from test_server import Server

    code_sim.settings(pace_ms=200)
    token = code_sim.login("pool-killed")["access_token"]
    doomed = Server("shared-doomed", **{k: v for k, v in shared_env().items() if k != "LISTEN_ADDR"})
    c = openai.OpenAI(base_url=f"{doomed.url}/v1", api_key=token, max_retries=0, timeout=60)
    stream = c.chat.completions.create(model="MiniMax-M3", stream=True,
                                       messages=[{"role": "user", "content": LONG}])
    next(iter(stream))
    assert record(token).get("holder"), "leased while it streams"
    doomed.process.send_signal(signal.SIGKILL)
    doomed.process.wait(10)
    doomed.stop()
    started = time.monotonic()
    assert "after" in chat(SHARED_URL, token, "after")
    assert time.monotonic() - started < 15
    assert not [v for v in code_sim.violations() if v["kind"] == "concurrent_answers"]


@server_only
def test_the_server_creates_its_table_when_there_is_none(code_sim):
    from test_server import Server

    name = f"e2e-created-{os.getpid()}"
    assert name not in dynamodb().list_tables()["TableNames"]
    server = Server("shared-create", **{**{k: v for k, v in shared_env().items() if k != "LISTEN_ADDR"},
                                         "ACCOUNTS_TABLE": name})
    try:
        token = code_sim.login("pool-create")["access_token"]
        assert "hi" in chat(server.url, token, "hi")
        table = dynamodb().describe_table(TableName=name)["Table"]
        assert table["KeySchema"] == [{"AttributeName": "account", "KeyType": "HASH"}]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        ttl = dynamodb().describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        assert ttl == {"AttributeName": "expires", "TimeToLiveStatus": "ENABLED"}
    finally:
        server.stop()
        dynamodb().delete_table(TableName=name)


def test_two_maintainers_started_together_spend_each_refresh_token_once(code_sim):
    from test_code import aws_env, code_env, gateway_login, put_secret, secretsmanager

    code_sim.settings(interval=1, access_ttl_s=4, refresh_latency_ms=1500)
    sm = secretsmanager()
    put_secret(sm, "e2e/pool-tokens", {"api_keys": ["sk-e2e-pool"]})
    put_secret(sm, "e2e/pool-status", {})
    env = code_env(**aws_env())
    for account in ("maint-one", "maint-two"):
        gateway_login(code_sim, account, "--secret-id", "e2e/pool-tokens", env=env)
    # Due three quarters into the tokens' life (the maintainer's clock is real).
    time.sleep(3.5)
    menv = code_env(**aws_env(), TOKENS_SECRET_ID="e2e/pool-tokens", TOKEN_STATUS_SECRET_ID="e2e/pool-status",
                    ACCOUNTS_TABLE=TABLE)
    runs = [subprocess.Popen([MAINTAINER_BIN], env=menv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in runs]
    assert all(p.returncode == 0 for p in runs), outs
    assert code_sim.state()["counts"].get("refreshes", 0) == 2, "one refresh per account, not per maintainer"
    status = json.loads(sm.get_secret_value(SecretId="e2e/pool-status")["SecretString"])
    assert len(status["accounts"]) == 2, status
    assert all(l["generation"] == 1 and "dead" not in l for l in status["accounts"].values()), status
    # The fixture asserts no violation: no refresh token presented twice, no
    # two refreshes of one account in flight at once.


VOICE_URLS = ("http://127.0.0.1:9011", "http://127.0.0.1:9012")  # Hailuo, one table


def test_two_speeches_on_one_account_take_turns_across_processes(sim, new_token):
    """The voice is the account's setting upstream (set, then poll): two
    syntheses on one account at once would speak in each other's voices,
    which the simulator records as a violation (a poll whose voice is no
    longer the account's). Two deployments on one table stand for two
    environments of the speech function; each synthesis holds its lease
    from the repeat turn to its last part, so the second waits.

    The second starts once the first has set its voice and is polling:
    started together, the simulator's one-answer-per-account refusal of
    the second repeat turn serialized them without any lease (seen with
    the two deployments on different tables). Started in that window on
    different tables, the second sets its voice under the first's polls."""
    # A synthesis that takes a while (10 polls of 100 ms, inside the 2 s
    # timeout): the window the other falls into without the lease.
    sim.settings(tts_polls_before_ready=10)
    token = new_token("turns")
    asked = {VOICE_URLS[0]: ("alloy", "male-botong"), VOICE_URLS[1]: ("shimmer", "xiaoyi_mix_hailuo")}
    audio, errors = {}, []

    def speak(base, voice):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0, timeout=60)
        try:
            audio[base] = client.audio.speech.create(model="tts-1", voice=voice, input=f"{voice} speaks").content
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append((base, repr(e)))

    threads = [threading.Thread(target=speak, args=(base, voice)) for base, (voice, _) in asked.items()]
    threads[0].start()
    first_voice = asked[VOICE_URLS[0]][1]
    sim.wait_until(lambda st: st["voices"].get(fingerprint(token)) == first_voice or bool(errors), 30,
                   "the first synthesis to set its voice")
    threads[1].start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    syntheses = [s for s in sim.state()["syntheses"] if s["token_fp"] == fingerprint(token)]
    assert sorted(s["voice"] for s in syntheses) == sorted(v for _, v in asked.values())
    for base, (voice, upstream_voice) in asked.items():
        spoken = next(s for s in syntheses if s["voice"] == upstream_voice)
        assert spoken["text"] == f"{voice} speaks"
        parts = b"".join(httpx.get(u, headers={"Referer": "https://hailuoai.com/"}).content for u in spoken["parts"])
        assert audio[base] == parts, f"{base} spoke its own text in its own voice"
    # The fixture asserts no violation: no poll found the other's voice set.
    item = dynamodb().get_item(TableName=f"e2e-voices-{GATEWAY_KIND}",
                               Key={"account": {"S": fingerprint(token)}}, ConsistentRead=True).get("Item")
    assert item and "holder" not in item, f"the lease was taken in the table and given back: {item}"
