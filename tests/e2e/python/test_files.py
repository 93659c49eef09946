"""Documents and images end to end: the official SDK → cargo lambda watch →
the chat function → the simulator's upload side (policy, OSS with V1
signatures, callback) and a chat whose form references the files. The
simulator's answer names each file it was given with its SHA-256, which is how
these tests prove the exact bytes arrived.

Files by URL come from a server the test starts on 127.0.0.1, so they go to
the `files` deployment (FILE_URL_ALLOW_PRIVATE=true); the refusals go to the
header deployment, where the address rule holds, with loopback targets only."""

import base64
import hashlib
import http.server
import threading

import openai
import pytest

from conftest import GATEWAY_URL

FILES_URL = "http://127.0.0.1:9005"

PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n" + bytes(range(256)) * 8
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 200 + b"\xff\xd9"
TEXT = "第一行：备忘录\nsecond line, plain text\n".encode()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(scope="module")
def files_server():
    """A loopback server: path → (status, content type, bytes); `/to/<path>` redirects."""
    routes = {
        "/report.pdf": (200, "application/pdf", PDF),
        "/scan": (200, "application/octet-stream", PDF),
        "/big.bin": (200, "application/octet-stream", b"\0" * (1024 * 1024 + 10)),
        "/photo.jpg": (200, "image/jpeg", JPEG),
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/to/"):
                self.send_response(302)
                self.send_header("Location", self.path[3:])
                self.end_headers()
                return
            status, ctype, body = routes.get(self.path, (404, "text/plain", b"not found"))
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def files_client(token):
    return openai.OpenAI(base_url=f"{FILES_URL}/v1", api_key=token, max_retries=0, timeout=60)


def data_url(mime, b):
    return f"data:{mime};base64,{base64.b64encode(b).decode()}"


def ask(client, parts, stream=False):
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is in these?"}, *parts]}]
    if not stream:
        return client.chat.completions.create(model="hailuo", messages=messages).choices[0].message.content
    return "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="hailuo", messages=messages, stream=True)
        if c.choices
    )


def stated(name, mime, b):
    return f"[file {name} {mime} {len(b)} bytes sha256={sha(b)}]"


def test_a_pdf_by_url_and_a_png_by_data_url(sim, new_token, files_server):
    c = files_client(new_token())
    answer = ask(c, [{"type": "file", "file_url": {"url": f"{files_server}/report.pdf"}}])
    assert stated("report.pdf", "application/pdf", PDF) in answer
    answer = ask(c, [{"type": "image_url", "image_url": {"url": data_url("image/png", PNG), "detail": "high"}}], stream=True)
    assert stated("file.png", "image/png", PNG) in answer
    convs = sim.conversations()
    assert [t["files"][0]["mimeType"] for cv in convs for t in cv["turns"]] == ["application/pdf", "image/png"]
    # The prompt points the model at the files.
    assert "files attached" in convs[0]["turns"][0]["prompt"]


def test_a_text_file_part_two_images_and_an_image_with_a_document(sim, new_token, files_server):
    c = files_client(new_token())
    answer = ask(c, [{"type": "file", "file": {"file_data": data_url("text/plain", TEXT), "filename": "notes.txt"}}])
    assert stated("notes.txt", "text/plain", TEXT) in answer
    answer = ask(c, [
        {"type": "image_url", "image_url": {"url": data_url("image/png", PNG)}},
        {"type": "image_url", "image_url": {"url": f"{files_server}/photo.jpg"}},
    ])
    assert stated("file.png", "image/png", PNG) in answer and stated("photo.jpg", "image/jpeg", JPEG) in answer
    # A document whose server calls it octet-stream: the bytes say PDF.
    answer = ask(c, [
        {"type": "image_url", "image_url": {"url": f"{files_server}/photo.jpg"}},
        {"type": "file", "file_url": {"url": f"{files_server}/to/scan"}},
    ])
    assert stated("photo.jpg", "image/jpeg", JPEG) in answer and f"application/pdf {len(PDF)} bytes sha256={sha(PDF)}" in answer
    assert len(sim.state()["files"]) == 5


def test_only_the_last_messages_files_are_sent(sim, new_token):
    c = files_client(new_token())
    r = c.chat.completions.create(model="hailuo", messages=[
        {"role": "user", "content": [{"type": "text", "text": "old"}, {"type": "image_url", "image_url": {"url": data_url("image/png", PNG)}}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and now?"},
    ])
    assert "[file" not in r.choices[0].message.content
    assert sim.state()["files"] == []


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/report.pdf",
    "http://localhost:{port}/report.pdf",
    "http://[::1]:{port}/report.pdf",
    "http://2130706433:{port}/report.pdf",
    "http://0x7f000001:{port}/report.pdf",
    "http://0177.0.0.1:{port}/report.pdf",
    "http://127.1:{port}/report.pdf",
    "http://user:hunter2@127.0.0.1:{port}/to/report.pdf?sig=secret",
])
def test_private_addresses_are_refused_where_the_rule_holds(sim, client_for, new_token, files_server, url):
    port = files_server.rsplit(":", 1)[1]
    c = client_for(new_token())
    with pytest.raises(openai.BadRequestError) as e:
        ask(c, [{"type": "file", "file_url": {"url": url.format(port=port)}}])
    err = e.value.body
    assert err["param"] == "messages[0].content[1]"
    assert "only public addresses" in err["message"], err["message"]
    assert "hunter2" not in err["message"] and "secret" not in err["message"]
    assert sim.conversations() == [] and sim.state()["files"] == []


def test_callers_file_mistakes(sim, agent_sim, new_token, files_server):
    c = files_client(new_token())
    cases = [
        ({"type": "file", "file": {"file_id": "file-abc"}}, 400, "Files API"),
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}, 400, "malformed data: URL"),
        ({"type": "file", "file_url": {"url": f"{files_server}/missing.pdf"}}, 400, "HTTP 404"),
        ({"type": "file", "file_url": {"url": f"{files_server}/big.bin"}}, 413, "larger than 1048576 bytes"),
        ({"type": "file", "file_url": {"url": "ftp://example.com/x.pdf"}}, 400, "only http and https"),
    ]
    for part, status, words in cases:
        with pytest.raises(openai.APIStatusError) as e:
            ask(c, [part])
        assert e.value.status_code == status, (part, e.value.body)
        assert words in e.value.body["message"], e.value.body["message"]
    assert sim.conversations() == []
    from test_agent import client as agent_client, jwt

    with pytest.raises(openai.BadRequestError) as e:
        ask(agent_client(jwt("300000000000007001")), [{"type": "image_url", "image_url": {"url": data_url("image/png", PNG)}}])
    assert "not supported" in e.value.body["message"]


def test_a_refused_upload_is_a_502_and_no_chat_starts(sim, new_token):
    sim.fault("upload_refused", count=10)
    c = files_client(new_token())
    with pytest.raises(openai.APIStatusError) as e:
        ask(c, [{"type": "image_url", "image_url": {"url": data_url("image/png", PNG)}},
                {"type": "file", "file": {"file_data": data_url("text/plain", TEXT), "filename": "a.txt"}}])
    assert e.value.status_code == 502, e.value.body
    assert "refused the upload" in e.value.body["message"] and "<Error>" not in e.value.body["message"]
    assert sim.conversations() == []
    # One refusal only: the next try uploads again and answers.
    sim.reset()
    sim.fault("upload_refused", count=1)
    answer = ask(c, [{"type": "image_url", "image_url": {"url": data_url("image/png", PNG)}}])
    assert stated("file.png", "image/png", PNG) in answer
