"""Fixtures for the end-to-end tests.

The servers are started by scripts/test.sh: the Hailuo simulator (SIM_URL) and
the gateway (GATEWAY_URL), which is either `cargo lambda watch` running the
real function binaries (GATEWAY_KIND=watch) or the self-hosted `server` binary
with every route in one process (GATEWAY_KIND=server); the same tests run
against both, the few that are about one of them marked so. Every
test gets fresh tokens, a reset simulator, and afterwards a check that the
simulator saw no protocol violation and that no conversation was left behind.
"""

import hashlib
import json
import os
import socket
import threading
import time
import uuid

import httpx
import openai
import pytest

GATEWAY_URL = os.environ.get("GATEWAY_URL", "http://127.0.0.1:9000")
SIM_URL = os.environ.get("SIM_URL", "http://127.0.0.1:18080")
AGENT_SIM_URL = os.environ.get("AGENT_SIM_URL", "http://127.0.0.1:18081")
GATEWAY_KIND = os.environ.get("GATEWAY_KIND", "watch")
ON_SERVER = GATEWAY_KIND == "server"

# Tests of the Lambda emulator's own paths and tools (function URLs by name,
# `cargo lambda invoke`), or of one function process per route.
emulator_only = pytest.mark.skipif(ON_SERVER, reason="about the Lambda functions under cargo lambda watch")
server_only = pytest.mark.skipif(not ON_SERVER, reason="about the self-hosted server")


def function_path(function: str, path: str) -> str:
    """`path` on one function's URL: the emulator's `/lambda-url/<function>`
    prefix, or the path itself on the server (one URL for every route)."""
    return path if ON_SERVER else f"/lambda-url/{function}{path}"


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:8]


class Sim:
    """The simulator's control API."""

    def __init__(self, url: str = SIM_URL):
        self.http = httpx.Client(base_url=url, timeout=10)
        self.kept: set[str] = set()

    def reset(self):
        self.http.post("/__sim/reset").raise_for_status()
        self.kept.clear()

    def state(self) -> dict:
        r = self.http.get("/__sim/state")
        r.raise_for_status()
        return r.json()

    def settings(self, **kw):
        self.http.post("/__sim/settings", json=kw).raise_for_status()

    def fault(self, kind: str, **kw):
        self.http.post("/__sim/faults", json={"kind": kind, **kw}).raise_for_status()

    def replies(self, *texts: str):
        """The model's next answers, in order; `{nonce}` stands for the tool contract's nonce."""
        self.http.post("/__sim/replies", json={"replies": list(texts)}).raise_for_status()

    def expire(self, token: str):
        self.http.post("/__sim/expire", json={"token": token}).raise_for_status()

    def conversations(self) -> list[dict]:
        return self.state()["conversations"]

    def conversation(self, chat_id: str) -> dict:
        matches = [c for c in self.conversations() if c["chat_id"] == chat_id]
        assert matches, f"the simulator has no conversation {chat_id}"
        return matches[0]

    def keep(self, chat_id: str):
        """This conversation is meant to outlive its request."""
        self.kept.add(chat_id)

    def wait_until(self, predicate, timeout=10.0, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if predicate(state):
                return state
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}: {self.state()}")


    def assert_clean(self, timeout=10.0):
        """No protocol violation, and every conversation deleted except kept ones.
        Conversations are deleted inside the invocation, before the response
        ends, so they are gone by now (a grace period only for disconnects)."""
        state = self.wait_until(
            lambda st: not st["busy"]
            and all(c["deleted"] or c["chat_id"] in self.kept for c in st["conversations"]),
            timeout=timeout,
            what="every conversation deleted (except kept ones)",
        )
        assert state["violations"] == [], f"protocol violations: {state['violations']}"
        for c in state["conversations"]:
            if c["chat_id"] in self.kept:
                assert not c["deleted"], f"kept conversation {c['chat_id']} was deleted"


def tool_call(name: str, arguments: dict, nonce: str = "{nonce}") -> str:
    """A tool call as the contract has the model write it."""
    import json as _json

    return f'<tool_call id="{nonce}">{_json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)}</tool_call>'


def nonce_of(prompt: str) -> str:
    """The nonce of the instruction (the last tag in a prompt)."""
    return prompt.rsplit('<tool_call id="', 1)[1].split('"', 1)[0]


@pytest.fixture
def sim():
    s = Sim()
    s.reset()
    yield s
    s.assert_clean()


@pytest.fixture
def agent_sim():
    s = Sim(AGENT_SIM_URL)
    s.reset()
    yield s
    s.assert_clean(timeout=15)


@pytest.fixture
def new_token():
    """Fresh tokens; every test token starts with tok-e2e- so logs can be grepped for leaks."""

    def make(label: str = "t") -> str:
        return f"tok-e2e-{label}-{uuid.uuid4().hex[:12]}"

    return make


@pytest.fixture
def client_for():
    def make(api_key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{GATEWAY_URL}/v1", api_key=api_key, max_retries=0, timeout=60)

    return make


@pytest.fixture
def http():
    with httpx.Client(base_url=GATEWAY_URL, timeout=60) as c:
        yield c


CODE_SIM_URL = os.environ.get("CODE_SIM_URL", "http://127.0.0.1:18082")
CODE_URL = "http://127.0.0.1:9006"  # UPSTREAM=minimax-code, header mode
CODE_ACCOUNTS_URL = "http://127.0.0.1:9007"  # minimax-code, accounts in e2e/code-tokens


class CodeSim:
    """The MiniMax Code simulator's control API (`/_sim/`)."""

    def __init__(self, url: str = CODE_SIM_URL):
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def reset(self):
        self.http.post("/_sim/reset").raise_for_status()

    def state(self) -> dict:
        return self.http.get("/_sim/state").raise_for_status().json()

    def settings(self, **kw):
        self.http.post("/_sim/settings", json=kw).raise_for_status()

    def script(self, blocks: list, stop_reason: str | None = None, **kw):
        """The next answer (for any account, or `account=`/`model=`)."""
        self.http.post("/_sim/script", json={"blocks": blocks, "stop_reason": stop_reason, **kw}).raise_for_status()

    def fault(self, kind: str, target: str = "messages", **kw):
        self.http.post("/_sim/fault", json={"target": target, "kind": kind, **kw}).raise_for_status()

    def advance(self, seconds: float):
        self.http.post("/_sim/clock", json={"advance_s": seconds}).raise_for_status()

    def pending(self) -> list[str]:
        return self.http.get("/_sim/device/pending").raise_for_status().json()["user_codes"]

    def approve(self, user_code: str, account: str):
        self.http.post("/_sim/device/approve", json={"user_code": user_code, "account": account}).raise_for_status()

    def violations(self) -> list:
        return self.http.get("/_sim/violations").raise_for_status().json()["violations"]

    def account_info(self, account: str, **info):
        """What an account holds for the credits and plan routes (section 7):
        `credits`, `expired_credits`, `plan` (`none`, `login_fail`),
        `plan_remaining_percent`, `plan_unlimited`."""
        self.http.post("/_sim/accounts", json={"account": account, **info}).raise_for_status()

    def requests(self, path_suffix: str = "/messages") -> list[dict]:
        log = self.http.get("/_sim/log").raise_for_status().json()["requests"]
        return [r for r in log if r["path"].endswith(path_suffix)]

    def login(self, account: str = "e2e") -> dict:
        """A device login as a client makes it (PKCE, the poll), the sim's
        clock moved past the interval instead of sleeping: the token answer."""
        import base64
        import secrets

        verifier = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        start = self.http.post("/oauth2/device/code", data={
            "client_id": "mcode-public", "scope": "agent.default", "audience": "agent-backend",
            "code_challenge": challenge, "code_challenge_method": "S256"}).raise_for_status().json()
        self.approve(start["user_code"], account)
        self.advance(start["interval"])
        answer = self.http.post("/oauth2/token", data={
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": start["device_code"],
            "client_id": "mcode-public", "code_verifier": verifier})
        answer.raise_for_status()
        return answer.json()

    def assert_clean(self):
        assert self.violations() == [], f"MiniMax Code protocol violations: {self.violations()}"


def tokens_of(text: str) -> int:
    """The MiniMax Code simulator's usage rule (protocol section 8.9)."""
    import math

    return math.ceil(len(text.encode()) / 4)


@pytest.fixture
def access(code_sim) -> str:
    """A fresh MiniMax Code account's access token (header mode's bearer)."""
    return code_sim.login("alice")["access_token"]


def last_sent(code_sim) -> dict:
    """The body of the newest messages call the MiniMax Code simulator got."""
    return code_sim.requests()[-1]["detail"]["body"]


@pytest.fixture
def code_sim():
    s = CodeSim()
    s.reset()
    yield s
    s.assert_clean()


class ProxySink:
    """An HTTP(S) proxy that refuses every request and records its target:
    anything the agent tries to reach beyond loopback lands here."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.attempts: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    line = conn.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
                except OSError:
                    line = "(nothing read)"
                self.attempts.append(line)
                try:
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    def close(self):
        self.sock.close()


@pytest.fixture
def proxy_sink():
    p = ProxySink()
    yield p
    p.close()
    assert p.attempts == [], f"the agent tried to leave loopback: {p.attempts}"


API_SIM_URL = os.environ.get("API_SIM_URL", "http://127.0.0.1:18083")
API_URL = "http://127.0.0.1:9008"  # UPSTREAM=minimax-api, header mode (platform keys)
FALLBACK_URL = "http://127.0.0.1:9009"  # UPSTREAM=minimax-code,minimax-api, header mode


class ApiSim:
    """The MiniMax API (paid platform) simulator's control API (`/_sim/`)."""

    def __init__(self, url: str = API_SIM_URL):
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def reset(self):
        self.http.post("/_sim/reset").raise_for_status()

    def settings(self, **kw):
        self.http.post("/_sim/settings", json=kw).raise_for_status()

    def script(self, **kw):
        """The next answer: reasoning, content, tool_calls, finish_reason, chunks."""
        self.http.post("/_sim/script", json=kw).raise_for_status()

    def fault(self, code: int, endpoint: str = "chat", **kw):
        self.http.post("/_sim/fault", json={"endpoint": endpoint, "code": code, **kw}).raise_for_status()

    def requests(self, path: str = "/v1/chat/completions") -> list[dict]:
        return [r for r in self.http.get("/_sim/log").raise_for_status().json() if r["path"] == path]

    def sent(self) -> dict:
        """The JSON body of the newest chat call."""
        return json.loads(self.requests()[-1]["body"])

    def violations(self) -> list:
        return self.http.get("/_sim/violations").raise_for_status().json()

    def state(self) -> dict:
        return self.http.get("/_sim/state").raise_for_status().json()

    def voices(self, *ids: str):
        """Voices (cloned ones) the platform knows besides its own."""
        self.http.post("/_sim/voices", json=list(ids)).raise_for_status()

    def transcript(self, text: str, duration: float, segments: list):
        """What the recognizer hears next."""
        self.http.post("/_sim/transcript", json={"text": text, "duration": duration,
                                                 "segments": segments}).raise_for_status()


@pytest.fixture
def api_sim():
    s = ApiSim()
    s.reset()
    yield s
    assert s.violations() == [], f"MiniMax API protocol violations: {s.violations()}"


@pytest.fixture
def platform_key() -> str:
    """A platform key of the simulator's region (intl)."""
    return f"sk-api-intl-e2e{uuid.uuid4().hex[:12]}"

