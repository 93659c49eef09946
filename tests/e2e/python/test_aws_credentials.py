"""The server reads its tokens secret with credentials from each source of
the AWS SDK's default chain that a local stand-in exists for: the
environment, a profile file, the ECS container credentials endpoint (a stub
on loopback) and EC2's instance metadata (an IMDSv2 stub on loopback). moto
records every call with its headers: the signature names the access key the
source gave, so each test knows which source signed."""

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import httpx
import pytest

from conftest import server_only

pytestmark = server_only

MOTO_URL = os.environ.get("MOTO_URL", "http://127.0.0.1:5055")
REGION = os.environ.get("AWS_REGION", "us-east-1")
SECRET = "e2e/credential-sources"
KEY = "sk-e2e-credsource"


@pytest.fixture(scope="module", autouse=True)
def secret():
    sm = boto3.client("secretsmanager", endpoint_url=MOTO_URL, region_name=REGION,
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    value = json.dumps({"api_keys": [KEY], "tokens": ["tok-e2e-credsource"]})
    try:
        sm.create_secret(Name=SECRET, SecretString=value)
    except sm.exceptions.ResourceExistsException:
        sm.put_secret_value(SecretId=SECRET, SecretString=value)


def signed_by(access_key: str) -> bool:
    """Whether moto saw a GetSecretValue signed with `access_key`."""
    recording = httpx.get(f"{MOTO_URL}/moto-api/recorder/download-recording").text
    for line in recording.splitlines():
        entry = json.loads(line)
        headers = {k.lower(): v for k, v in entry.get("headers", {}).items()}
        if headers.get("x-amz-target", "").endswith("GetSecretValue") and \
                f"Credential={access_key}/" in headers.get("authorization", ""):
            return True
    return False


def serve_with(tmp_path, name: str, **env: str):
    """A server in secret mode with no AWS keys in its environment but what
    `env` gives; it lets the caller in only if it could read the secret."""
    from test_server import Server

    settings = {"TOKENS_SECRET_ID": SECRET, "AWS_ENDPOINT_URL": MOTO_URL, "HOME": str(tmp_path),
                "AWS_CONFIG_FILE": str(tmp_path / "none-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none-credentials"), **env}
    server = Server(name, **settings)
    r = httpx.get(f"{server.url}/v1/models", headers={"authorization": f"Bearer {KEY}"}, timeout=30)
    return server, r


class Stub(BaseHTTPRequestHandler):
    """An ECS credentials endpoint and an IMDSv2, as far as the SDK asks."""

    hits: list = []

    def log_message(self, *args):
        pass

    def answer(self, status: int, body: str, content_type="text/plain", extra=()):
        self.send_response(status)
        self.send_header("content-type", content_type)
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def credentials(self, key: str) -> str:
        return json.dumps({"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": key,
                           "SecretAccessKey": "stub-secret", "Token": "stub-session",
                           "Expiration": "2099-01-01T00:00:00Z", "LastUpdated": "2026-12-01T00:00:00Z"})

    def do_PUT(self):
        Stub.hits.append(("PUT", self.path, dict(self.headers)))
        if self.path == "/latest/api/token":
            return self.answer(200, "imds-session-token", extra=[("x-aws-ec2-metadata-token-ttl-seconds", "21600")])
        self.answer(404, "")

    def do_GET(self):
        Stub.hits.append(("GET", self.path, dict(self.headers)))
        if self.path == "/ecs/credentials":
            if self.headers.get("authorization") != "ecs-auth-token":
                return self.answer(401, "")
            return self.answer(200, self.credentials("AKIDECSSTUB"), "application/json")
        if self.path.startswith("/latest/meta-data/iam/security-credentials"):
            if self.headers.get("x-aws-ec2-metadata-token") != "imds-session-token":
                return self.answer(401, "")
            if self.path.rstrip("/").endswith("security-credentials"):
                return self.answer(200, "e2e-role")
            return self.answer(200, self.credentials("AKIDIMDSSTUB"), "application/json")
        self.answer(404, "")


@pytest.fixture
def stub():
    Stub.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_keys_from_the_environment(tmp_path):
    server, r = serve_with(tmp_path, "cred-env", AWS_REGION=REGION, AWS_ACCESS_KEY_ID="AKIDENVSTUB",
                           AWS_SECRET_ACCESS_KEY="env-secret", AWS_EC2_METADATA_DISABLED="true")
    server.stop()
    assert r.status_code == 200, r.text
    assert signed_by("AKIDENVSTUB")


def test_keys_and_region_from_a_profile(tmp_path):
    (tmp_path / "config").write_text(f"[profile e2e]\nregion = {REGION}\n")
    (tmp_path / "credentials").write_text(
        "[e2e]\naws_access_key_id = AKIDPROFILESTUB\naws_secret_access_key = profile-secret\n")
    server, r = serve_with(tmp_path, "cred-profile", AWS_PROFILE="e2e", AWS_CONFIG_FILE=str(tmp_path / "config"),
                           AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials"),
                           AWS_EC2_METADATA_DISABLED="true")
    server.stop()
    assert r.status_code == 200, r.text
    assert signed_by("AKIDPROFILESTUB")


def test_a_containers_role_from_the_ecs_credentials_endpoint(tmp_path, stub):
    server, r = serve_with(tmp_path, "cred-ecs", AWS_REGION=REGION,
                           AWS_CONTAINER_CREDENTIALS_FULL_URI=f"{stub}/ecs/credentials",
                           AWS_CONTAINER_AUTHORIZATION_TOKEN="ecs-auth-token", AWS_EC2_METADATA_DISABLED="true")
    server.stop()
    assert r.status_code == 200, r.text
    assert any(path == "/ecs/credentials" for _, path, _ in Stub.hits)
    assert signed_by("AKIDECSSTUB")


def test_an_instances_role_from_imds_v2(tmp_path, stub):
    server, r = serve_with(tmp_path, "cred-imds", AWS_REGION=REGION, AWS_EC2_METADATA_DISABLED="false",
                           AWS_EC2_METADATA_SERVICE_ENDPOINT=f"{stub}/")
    server.stop()
    assert r.status_code == 200, r.text
    # IMDSv2: a session token first, then the role, then its credentials.
    assert ("PUT", "/latest/api/token") in [(m, p) for m, p, _ in Stub.hits]
    assert signed_by("AKIDIMDSSTUB")


def test_without_any_source_the_caller_learns_the_secret_cannot_be_read(tmp_path):
    server, r = serve_with(tmp_path, "cred-none", AWS_REGION=REGION, AWS_EC2_METADATA_DISABLED="true")
    log = server.text()
    server.stop()
    assert r.status_code == 503, r.text
    assert "tokens document cannot be used" in r.json()["error"]["message"]
    message = r.json()["error"]["message"]
    # What is missing and what to set, in a sentence: not the SDK's chain of causes.
    assert "no AWS credentials" in message and "AWS_ACCESS_KEY_ID" in message, message
    assert "dispatch failure" not in message and len(message) < 500, message
    assert "testing" not in log
