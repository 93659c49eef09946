"""Secret mode end to end: tokens and API keys in Secrets Manager (moto on
loopback), the token pool with failover, /token/check, and the scheduled
liveness function invoked with `cargo lambda invoke`."""

import base64
import json
import os
import subprocess
import threading
import time

import boto3
import httpx
import openai
import pytest

from conftest import ON_SERVER, emulator_only, fingerprint

MOTO_URL = os.environ.get("MOTO_URL", "http://127.0.0.1:5055")
E2E_DIR = os.environ.get("E2E_DIR", ".e2e")
SECRET_URL = "http://127.0.0.1:9001"  # TOKENS_SECRET_ID=e2e/tokens, status e2e/token-status
ALLDEAD_URL = "http://127.0.0.1:9002"  # e2e/tokens-all-dead, ALLOW_HEADER_TOKENS=true
NOKEYS_URL = "http://127.0.0.1:9003"  # e2e/tokens-no-keys

LIVE, DEAD, BUSY = "tok-e2e-pool-live", "tok-e2e-pool-dead", "tok-e2e-pool-busy"
KEY, OTHER_KEY = "sk-e2e-key-one", "sk-e2e-key-two"
ADMIN_KEY = "sk-e2e-admin-key"
ALL_DEAD = ["tok-e2e-alldead-1", "tok-e2e-alldead-2"]
KEY_C = "sk-e2e-key-c"
SECRETS = {
    "e2e/tokens": {"tokens": [LIVE, DEAD, BUSY], "api_keys": [KEY, OTHER_KEY], "admin_api_keys": [ADMIN_KEY]},
    "e2e/tokens-all-dead": {"tokens": ALL_DEAD, "api_keys": [KEY_C]},
    "e2e/tokens-no-keys": {"tokens": ["tok-e2e-nokeys-1"]},
}


def secretsmanager():
    return boto3.client(
        "secretsmanager",
        endpoint_url=MOTO_URL,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="module", autouse=True)
def seeded():
    sm = secretsmanager()
    for name, value in SECRETS.items():
        try:
            sm.create_secret(Name=name, SecretString=json.dumps(value))
        except sm.exceptions.ResourceExistsException:
            sm.put_secret_value(SecretId=name, SecretString=json.dumps(value))
    return sm


def client(base: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)


def ask(c, text="你好", **kw):
    return c.chat.completions.create(model="hailuo", messages=[{"role": "user", "content": text}], **kw)


def chat_owners(sim) -> list[str]:
    return [c["token_fp"] for c in sim.conversations()]


def test_valid_key_uses_the_secrets_tokens(sim):
    for key in (KEY, OTHER_KEY):
        r = ask(client(SECRET_URL, key))
        assert r.choices[0].message.content
    assert set(chat_owners(sim)) <= {fingerprint(t) for t in (LIVE, DEAD, BUSY)}


def test_wrong_or_missing_key_is_401(sim):
    with pytest.raises(openai.AuthenticationError) as e:
        ask(client(SECRET_URL, "sk-e2e-wrong"))
    assert "Invalid API key" in e.value.message and "sk-e2e-wrong" not in e.value.message
    r = httpx.post(f"{SECRET_URL}/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401 and "Missing API key" in r.json()["error"]["message"]
    # Models need a key too; with one they are listed.
    assert httpx.get(f"{SECRET_URL}/v1/models").status_code == 401
    assert httpx.get(f"{SECRET_URL}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert sim.state()["calls"] == []


def test_header_tokens_refused_unless_allowed(sim, new_token):
    token = new_token("own")
    with pytest.raises(openai.AuthenticationError):
        ask(client(SECRET_URL, token))
    # Where ALLOW_HEADER_TOKENS=true, a caller without a key brings their own.
    r = ask(client(ALLDEAD_URL, token))
    assert chat_owners(sim) == [fingerprint(token)] and r.choices[0].message.content


def test_secret_without_api_keys_is_503_never_open(sim):
    for key in ("anything", ""):
        r = httpx.post(
            f"{NOKEYS_URL}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
            headers={"Authorization": f"Bearer {key}"} if key else {},
        )
        assert r.status_code == 503, r.text
        assert "api_keys" in r.json()["error"]["message"]
    assert sim.state()["calls"] == []


def test_pool_fails_over_from_dead_and_busy_tokens(sim, client_for):
    sim.expire(DEAD)
    sim.settings(pace_ms=30)
    busy_started, done = threading.Event(), {}

    def keep_busy():
        # The busy account answers a long question through the header-mode deployment.
        for _ in ask(client_for(BUSY), "long [sim:len=1500]", stream=True):
            busy_started.set()
        done["busy"] = True

    t = threading.Thread(target=keep_busy)
    t.start()
    assert busy_started.wait(20)
    answers = [ask(client(SECRET_URL, KEY), f"question {i}") for i in range(6)]
    t.join(60)
    assert done.get("busy") and all(a.choices[0].message.content for a in answers)
    owners = chat_owners(sim)
    assert owners.count(fingerprint(LIVE)) == 6, f"every answer came from the live account: {owners}"
    calls = sim.state()["calls"]
    dead_chats = [c for c in calls if c["token_fp"] == fingerprint(DEAD) and c["path"] == "/v4/api/chat/msg"]
    assert len(dead_chats) <= 1, f"a dead token is remembered, not retried per request: {dead_chats}"


def test_every_token_dead_is_503_with_counts(sim):
    for t in ALL_DEAD:
        sim.expire(t)
    with pytest.raises(openai.InternalServerError) as e:
        ask(client(ALLDEAD_URL, KEY_C))
    assert e.value.status_code == 503
    assert "2 tokens" in e.value.message and "dead" in e.value.message
    assert not any(t in e.value.message for t in ALL_DEAD)
    # Now remembered as dead: refused at once, without an upstream call.
    before = len(sim.state()["calls"])
    with pytest.raises(openai.InternalServerError) as e:
        ask(client(ALLDEAD_URL, KEY_C))
    assert e.value.status_code == 503 and "rejected upstream in the last" in e.value.message
    assert len(sim.state()["calls"]) == before


def test_token_check(sim, new_token):
    live, dead = new_token("chk-live"), new_token("chk-dead")
    sim.expire(dead)
    url = f"{SECRET_URL}/token/check"
    auth = {"Authorization": f"Bearer {KEY}"}
    assert httpx.post(url, json={"token": live}).status_code == 401, "needs an API key in secret mode"
    assert httpx.post(url, json={"token": live}, headers=auth).json() == {"live": True}
    assert httpx.post(url, json={"token": dead}, headers=auth).json() == {"live": False}
    calls = len(sim.state()["calls"])
    # Cached for 10 minutes: no new upstream call.
    assert httpx.post(url, json={"token": live}, headers=auth).json() == {"live": True}
    assert len(sim.state()["calls"]) == calls
    for body in ({}, {"token": ""}, {"token": 7}):
        r = httpx.post(url, json=body, headers=auth)
        assert r.status_code == 400 and r.json()["error"]["param"] == "token"
    r = httpx.post(url, content=b"{", headers=auth)
    assert r.status_code == 400
    # Header mode: no key needed.
    assert httpx.post("http://127.0.0.1:9000/token/check", json={"token": live}).json() == {"live": True}


def invoke_liveness() -> dict:
    out = subprocess.run(
        ["cargo", "lambda", "invoke", "token-liveness", "-P", "9001", "-A", "127.0.0.1",
         "--data-file", "tests/e2e/events/scheduled.json"],
        capture_output=True, text=True, timeout=300, cwd=os.environ.get("ROOT", "."),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


@emulator_only
def test_scheduled_liveness_check_writes_verdicts(sim, seeded):
    sm = seeded
    sim.expire(DEAD)
    before = sm.describe_secret(SecretId="e2e/tokens")["VersionIdsToStages"]
    summary = invoke_liveness()
    assert summary["live"] == 2 and summary["dead"] == 1
    status = json.loads(sm.get_secret_value(SecretId="e2e/token-status")["SecretString"])
    verdicts = {fp: s["live"] for fp, s in status["tokens"].items()}
    assert verdicts == {fingerprint(LIVE): True, fingerprint(DEAD): False, fingerprint(BUSY): True}
    assert all(s["checked_at"] and s["reason"] for s in status["tokens"].values())
    text = json.dumps(status)
    assert not any(t in text for t in (LIVE, DEAD, BUSY)), "fingerprints only"
    assert sm.describe_secret(SecretId="e2e/tokens")["VersionIdsToStages"] == before, "tokens secret untouched"
    log = open(os.path.join(E2E_DIR, "lambda-secret.log"), encoding="utf-8", errors="replace").read()
    emf = [json.loads(l[l.index("{"):]) for l in log.splitlines() if '"CloudWatchMetrics"' in l]
    assert emf and emf[-1]["LiveTokens"] == 2 and emf[-1]["DeadTokens"] == 1
    assert emf[-1]["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] == "LiveTokens"
    # The chat function reads the verdicts (cached for 1 s here) and never tries
    # the dead token, even once it would work again.
    time.sleep(1.2)
    sim.http.post("/__sim/revive", json={"token": DEAD})
    seen = len(sim.state()["calls"])
    for i in range(5):
        ask(client(SECRET_URL, KEY), f"after the check {i}")
    later = sim.state()["calls"][seen:]
    assert later and fingerprint(DEAD) not in [c["token_fp"] for c in later]


def test_secret_read_once_per_environment_per_ttl(sim):
    for i in range(3):
        ask(client(SECRET_URL, KEY), f"count {i}")
    recording = httpx.get(f"{MOTO_URL}/moto-api/recorder/download-recording").text
    reads: dict[str, int] = {}
    for line in recording.splitlines():
        if not line.strip():
            continue
        call = json.loads(line)
        headers = {k.lower(): v for k, v in call.get("headers", {}).items()}
        if headers.get("x-amz-target") != "secretsmanager.GetSecretValue":
            continue
        body = call.get("body") or ""
        if call.get("body_encoded"):
            body = base64.b64decode(body).decode()
        if json.loads(body or "{}").get("SecretId") != "e2e/tokens":
            continue
        ua = headers.get("user-agent", "") + " " + headers.get("x-amz-user-agent", "")
        app = next((p[4:].removeprefix("hailuo-gateway-") for p in ua.split() if p.startswith("app/")), "other")
        reads[app] = reads.get(app, 0) + 1
    # The app name each process puts in its user agent: one server reads for every route.
    assert reads.get("server" if ON_SERVER else "chat-completions") == 1, reads
    assert all(n <= 1 for app, n in reads.items() if app != "other"), reads


class Browser:
    """Headless Chromium driven over the DevTools protocol (one page)."""

    def __init__(self, tmp_path):
        import shutil
        import urllib.request

        from websockets.sync.client import connect

        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if not binary:
            pytest.fail("chromium is not installed (scripts/setup.sh installs it)")
        profile = tmp_path / "chromium"
        self.process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            assert time.monotonic() < deadline and self.process.poll() is None, "chromium did not start"
            time.sleep(0.1)
        port = port_file.read_text().split("\n")[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]

    def js(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def until(self, expression, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"never true in the page: {expression}")

    def close(self):
        self.ws.close()
        self.process.kill()
        self.process.wait()


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path)
    yield b
    b.close()


def test_the_operators_page_shows_the_pool_in_a_browser_for_an_admin_key_only(browser):
    ask(client(SECRET_URL, KEY))  # the pool has been used
    browser.call("Page.navigate", url=f"{SECRET_URL}/admin")
    browser.until("document.readyState === 'complete' && !!document.getElementById('key')")

    def sign_in(key):
        browser.js(f"document.getElementById('key').value = {json.dumps(key)};"
                   "document.querySelector('#login button').click()")

    # A caller's key: the page says so and shows no account.
    sign_in(KEY)
    error = browser.until("document.getElementById('error').textContent")
    assert "admin" in error.lower(), error
    assert browser.js("document.getElementById('accounts').hidden") is True

    sign_in(ADMIN_KEY)
    rows = browser.until("(() => { const r = [...document.querySelectorAll('#accounts tbody tr')];"
                         " return r.length ? r.map(tr => [...tr.cells].map(c => c.textContent)) : null })()")
    assert browser.js("document.getElementById('accounts').hidden") is False
    shown = {row[0] for row in rows}
    assert shown == {fingerprint(t) for t in (LIVE, DEAD, BUSY)}, rows
    assert all(row[3] for row in rows), rows  # every account has a state
    summary = browser.js("document.getElementById('summary').textContent")
    assert summary and "this process" in summary, summary
    text = browser.js("document.documentElement.outerHTML + document.body.innerText")
    for secret in (LIVE, DEAD, BUSY, KEY, OTHER_KEY, ADMIN_KEY):
        assert secret not in text, f"{secret} in the page"
