"""Every status the chat door answers, as LiteLLM (1.106, its own
virtualenv) classifies it: LiteLLM reads an error's words before its status
(`invalid_request_error` anywhere makes a bad request, unless the text says
`Incorrect API key provided`; a context phrase makes a context window
error), so the gateway's words decide which exception LiteLLM's users get,
and which of its fallbacks fire."""

import json
import os
import subprocess

import pytest

from conftest import CODE_URL

ROOT = os.environ.get("ROOT", ".")
PYTHON = os.path.join(os.environ.get("LITELLM_VENV", os.path.join(ROOT, ".venv-litellm")), "bin", "python")
PROBE = os.path.join(ROOT, "tests", "e2e", "litellm", "probe.py")


def litellm(key: str, extra: dict | None = None) -> dict:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
           # Nothing of LiteLLM's may leave loopback.
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1"}
    done = subprocess.run([PYTHON, PROBE, CODE_URL, key, json.dumps(extra or {})],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# (fault, LiteLLM's class, status)
CASES = [
    ("token_expired", "AuthenticationError", 401),
    ("throttle_2045", "RateLimitError", 429),
    ("credits_402", "ServiceUnavailableError", 503),
    ("context_overflow", "ContextWindowExceededError", 400),
    ("overloaded_529", "BadGatewayError", 502),
]


@pytest.mark.parametrize("kind,cls,status", CASES, ids=[c[0] for c in CASES])
def test_each_upstream_failure_is_the_litellm_class_its_status_says(code_sim, access, kind, cls, status):
    code_sim.fault(kind, times=5)
    got = litellm(access)
    assert (got["class"], got["status"]) == (cls, status), got
    assert access not in got["message"]


def test_a_bad_request_and_a_missing_key_are_told_apart(code_sim, access):
    got = litellm(access, {"max_tokens": 200000})
    assert (got["class"], got["status"]) == ("BadRequestError", 400), got
    got = litellm("sk-not-a-key-of-this-deployment")
    assert (got["class"], got["status"]) == ("AuthenticationError", 401), got
    assert litellm(access)["class"] == "ok"
