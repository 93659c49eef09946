"""The self-hosted server's own behaviour, on server processes each test
starts (the rest of the suite runs against the server too, from the same
tests as the functions): `PORT`, `TOKENS_FILE` with the in-process liveness
check, rotating by editing the file, and a graceful SIGTERM."""

import json
import os
import signal
import socket
import subprocess
import time

import httpx
import openai
import pytest

from conftest import SIM_URL, fingerprint, server_only

pytestmark = server_only

ROOT = os.environ.get("ROOT", ".")
E2E_DIR = os.environ.get("E2E_DIR", ".e2e")
# The static (musl) build scripts/test.sh makes, as the Dockerfile ships it.
SERVER = os.environ.get("SERVER_BIN") or os.path.join(ROOT, "target", "debug", "gateway")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process with its own settings; its log in E2E_DIR (grepped for leaks)."""

    def __init__(self, name: str, **settings: str):
        # With PORT (and no LISTEN_ADDR), the server binds 0.0.0.0:$PORT.
        self.port = int(settings["PORT"]) if "PORT" in settings else free_port()
        self.log_path = os.path.join(E2E_DIR, f"server-{name}.log")
        env = {
            "PATH": os.environ["PATH"],
            "UPSTREAM": "hailuo",
            "HAILUO_BASE_URL": SIM_URL,
            "RUST_LOG": "info",
            "LISTEN_ADDR": f"127.0.0.1:{self.port}",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        env.update(settings)
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen([SERVER], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        self.wait_ready()

    def wait_ready(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.text()
            try:
                httpx.get(f"{self.url}/v1/models", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError(f"the server did not start: {self.text()}")

    def text(self) -> str:
        self.log.flush()
        return open(self.log_path, encoding="utf-8", errors="replace").read()

    def lines(self) -> list[dict]:
        out = []
        for line in self.text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def wait_log(self, message: str, count=1, timeout=20.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [l for l in self.lines() if l.get("fields", {}).get("message") == message]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no {message!r} in the log: {self.text()[-3000:]}")

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


@pytest.fixture
def servers():
    started = []

    def start(name, **settings):
        s = Server(name, **settings)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def chat(base: str, key: str, text="你好", **kw):
    c = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)
    return c.chat.completions.create(model="hailuo", messages=[{"role": "user", "content": text}], **kw)


def test_port_is_the_paas_convention(sim, servers, new_token):
    port = free_port()
    s = servers("port", PORT=str(port), LISTEN_ADDR="")
    assert any(l.get("fields", {}).get("addr") == f"0.0.0.0:{port}" for l in s.lines()), s.text()
    assert chat(s.url, new_token()).choices[0].message.content


def test_tokens_file_with_the_liveness_timer_and_rotation_by_editing_it(sim, servers, new_token, tmp_path):
    live, dead, later = new_token("file-live"), new_token("file-dead"), new_token("file-later")
    key, new_key = "sk-e2e-file-key", "sk-e2e-file-key-two"
    sim.expire(dead)
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [live, dead], "api_keys": [key]}))
    s = servers("tokens-file", TOKENS_FILE=str(path), LIVENESS_INTERVAL_SECONDS="1")
    done = s.wait_log("liveness check done")
    assert (done[0]["fields"]["live"], done[0]["fields"]["dead"]) == (1, 1)

    # The verdict is used at once: the dead token is never sent a chat, not
    # even the one failure the pool would otherwise need to learn it.
    for i in range(4):
        assert chat(s.url, key, f"question {i}").choices[0].message.content
    chats = [c for c in sim.state()["calls"] if c["path"] == "/v4/api/chat/msg"]
    assert [c["token_fp"] for c in chats] == [fingerprint(live)] * 4
    with pytest.raises(openai.AuthenticationError):
        chat(s.url, "sk-e2e-wrong")
    with pytest.raises(openai.AuthenticationError):
        chat(s.url, live)  # tokens in the header are not let in without ALLOW_HEADER_TOKENS

    # Rotation is editing the file: a new key and a new token, no restart.
    path.write_text(json.dumps({"tokens": [later], "api_keys": [new_key]}))
    assert chat(s.url, new_key, "after the edit").choices[0].message.content
    with pytest.raises(openai.AuthenticationError):
        chat(s.url, key)
    chats = [c for c in sim.state()["calls"] if c["path"] == "/v4/api/chat/msg"]
    assert chats[-1]["token_fp"] == fingerprint(later)
    # The timer checks the file as it is now.
    s.wait_log("liveness check done", count=len(s.wait_log("liveness check done")) + 1)
    checked = [l["fields"]["token"] for l in s.lines() if l.get("fields", {}).get("message") == "token checked"]
    assert fingerprint(later) in checked
    text = s.text()
    assert not any(t in text for t in (live, dead, later, key, new_key)), "fingerprints only in the log"


def test_sigterm_lets_streams_finish_and_deletes_every_conversation(sim, servers, new_token):
    s = servers("sigterm")
    sim.settings(pace_ms=30)
    body = {"model": "hailuo", "stream": True, "messages": [{"role": "user", "content": "a story [sim:len=600]"}]}

    def open_stream(token):
        client = httpx.Client(timeout=60)
        request = client.build_request(
            "POST", f"{s.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        return client, client.send(request, stream=True)

    staying_client, staying = open_stream(new_token("stays"))
    leaving_client, leaving = open_stream(new_token("leaves"))
    chunks = staying.iter_lines()
    assert next(chunks).startswith("data: ")
    next(leaving.iter_lines())
    leaving.close()
    leaving_client.close()

    s.process.send_signal(signal.SIGTERM)
    s.wait_log("stopping: no new connections; waiting for the requests in flight")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{s.url}/v1/models", timeout=2)
    frames = [l[6:] for l in chunks if l.startswith("data: ")]
    staying_client.close()
    assert frames[-1] == "[DONE]"
    text = "".join(
        (json.loads(f)["choices"] or [{}])[0].get("delta", {}).get("content") or "" for f in frames[:-1]
    )
    assert len(text) > 100, text

    assert s.process.wait(30) == 0, s.text()[-3000:]
    s.wait_log("stopped")
    # Both conversations were deleted before the process ended: the one of the
    # caller who left too (assert_clean checks it again, with no grace period).
    state = sim.state()
    assert len(state["conversations"]) == 2 and all(c["deleted"] for c in state["conversations"]), state
    assert not state["busy"]


# The real upstreams speak HTTP/2 over TLS ---------------------------------


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_certs(tmp_path_factory):
    """A CA made here, and a certificate it signed for localhost."""
    d = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=hailuo-gateway e2e CA", cwd=d)
    openssl("req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "leaf.pem", "-days", "2", "-extfile", "san.ext", cwd=d)
    return d


def start_front(d, *options):
    """nghttpx terminating TLS (h2 or http/1.1 by ALPN) before the simulator,
    with the certificate of `tls_certs`; its access log records the protocol
    each request arrived in. (process, {url, ca, log})"""
    port = free_port()
    sim_host, sim_port = SIM_URL.removeprefix("http://").split(":")
    log, errors = d / f"access-{port}.log", d / f"error-{port}.log"
    # Not the system's /etc/nghttpx/nghttpx.conf: its frontend (port 3000)
    # would be bound as well, and a second front would fail on it.
    front = subprocess.Popen(
        ["nghttpx", "--conf=/dev/null", f"--frontend=127.0.0.1,{port}", f"--backend={sim_host},{sim_port}",
         "--workers=1", "--no-ocsp", "--no-via", f"--accesslog-file={log}",
         "--accesslog-format=$alpn $method $path $status", f"--errorlog-file={errors}",
         *options, str(d / "leaf.key"), str(d / "leaf.pem")],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while True:
        assert front.poll() is None, f"nghttpx exited: {errors.read_text() if errors.exists() else ''}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "nghttpx did not start"
            time.sleep(0.05)
    return front, {"url": f"https://localhost:{port}", "ca": str(d / "ca.pem"), "log": log}


@pytest.fixture(scope="module")
def tls_front(tls_certs):
    front, info = start_front(tls_certs)
    yield info
    front.terminate()
    front.wait(10)


def test_the_upstream_is_reached_over_tls_with_h2_trusting_ssl_cert_file(sim, servers, new_token, tls_front):
    s = servers("tls", HAILUO_BASE_URL=tls_front["url"], SSL_CERT_FILE=tls_front["ca"])
    c = openai.OpenAI(base_url=f"{s.url}/v1", api_key=new_token("tls"), max_retries=0, timeout=60)
    sim.settings(pace_ms=5)
    stream = c.chat.completions.create(
        model="hailuo", stream=True, messages=[{"role": "user", "content": "over TLS [sim:len=300]"}]
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text.startswith("海螺模拟器") and len(text.encode()) >= 290, text  # len=300 is in bytes
    sim.assert_clean()
    lines = tls_front["log"].read_text().splitlines()
    chats = [l for l in lines if " /v4/api/chat/msg" in l]
    assert chats and all(l.startswith("h2 POST") and l.endswith(" 200") for l in chats), lines
    assert lines and all(l.startswith("h2 ") for l in lines), "every call negotiated HTTP/2"
    # Deleting the conversation went the same way.
    assert any("/delete" in l or "DELETE" in l for l in lines), lines


def test_without_the_ca_the_upstream_is_refused_and_a_bad_ssl_cert_file_stops_the_start(sim, servers, new_token, tls_front, tmp_path):
    s = servers("tls-untrusted", HAILUO_BASE_URL=tls_front["url"])
    r = httpx.post(
        f"{s.url}/v1/chat/completions",
        json={"model": "hailuo", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {new_token('tls')}"},
        timeout=60,
    )
    assert r.status_code == 502, r.text
    assert sim.state()["calls"] == [], "nothing reached the upstream through an untrusted certificate"
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("not a certificate\n")
    env = {"PATH": os.environ["PATH"], "SSL_CERT_FILE": str(bad), "LISTEN_ADDR": f"127.0.0.1:{free_port()}"}
    out = subprocess.run([SERVER], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "SSL_CERT_FILE" in out.stdout + out.stderr, out


def test_past_the_upstreams_stream_limit_another_connection_is_opened(sim, servers, new_token, tls_certs):
    """Behind an upstream that allows 2 HTTP/2 streams per connection, 4
    streamed chats at once. hyper queues requests past the limit on its one
    connection, so the third and fourth used to get their first byte only
    when the first two ended; with UPSTREAM_STREAMS_PER_CONNECTION=2 the
    server opens a second connection and every chat streams at once."""
    front, info = start_front(tls_certs, "--frontend-http2-max-concurrent-streams=2")
    try:
        s = servers(
            "h2-limit", HAILUO_BASE_URL=info["url"], SSL_CERT_FILE=info["ca"], UPSTREAM_STREAMS_PER_CONNECTION="2"
        )
        sim.settings(pace_ms=20)
        body = {"model": "hailuo", "stream": True, "messages": [{"role": "user", "content": "a story [sim:len=600]"}]}

        def one(token):
            with httpx.Client(timeout=60) as client:
                with client.stream(
                    "POST", f"{s.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"}
                ) as r:
                    assert r.status_code == 200, r.read()
                    first, frames = None, []
                    for line in r.iter_lines():
                        if line.startswith("data: "):
                            first = first or time.monotonic()
                            frames.append(line[6:])
                    assert frames[-1] == "[DONE]", frames[-3:]
                    return first, time.monotonic()

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:
            timings = list(pool.map(one, [new_token(f"h2-{i}") for i in range(4)]))
        firsts, ends = [t[0] for t in timings], [t[1] for t in timings]
        assert max(firsts) < min(ends), f"a chat waited for another to end: {timings}"
        lines = info["log"].read_text().splitlines()
        assert len([l for l in lines if " /v4/api/chat/msg" in l]) == 4, lines
        assert all(l.startswith("h2 ") for l in lines), lines
    finally:
        front.terminate()
        front.wait(10)
