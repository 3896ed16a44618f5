"""The HTTP front's kept-alive connections to Triton (``serve.front.Upstream``), against a local stand-in server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dvit_deploy.jobs.serve.front import Upstream


class Counting(BaseHTTPRequestHandler):
    """Answers every request with its connection's number; closes after ``close_after`` answers per connection."""

    protocol_version = "HTTP/1.1"
    server: "Stand"

    def log_message(self, format, *args):  # noqa: A002
        return

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1
            self.number, self.answered = self.server.connections, 0

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append((self.number, self.headers.get("Connection"), body))
        payload = f"{self.number}:{len(body)}".encode()
        self.answered += 1
        closing = self.answered >= self.server.close_after
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        if closing:
            if not self.server.silent:  # say so, or just hang up after the answer (an idle timeout)
                self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)


class Stand(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, close_after: int = 1000, silent: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), Counting)
        self.lock = threading.Lock()
        self.connections, self.close_after, self.silent, self.seen = 0, close_after, silent, []


@pytest.fixture
def stand():
    servers = []

    def make(close_after: int = 1000, silent: bool = False) -> Stand:
        server = Stand(close_after, silent)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


def test_relayed_requests_share_one_kept_connection_until_drain(stand):
    server = stand()
    upstream = Upstream(server.server_address[1])
    answers = [upstream.relay("POST", "/x", b"a" * n, {"Content-Length": str(n)}) for n in (5, 600_000, 7)]
    assert [a[0] for a in answers] == [200, 200, 200]
    assert [a[3] for a in answers] == [b"1:5", b"1:600000", b"1:7"], "one connection, every body whole"
    assert len(upstream.idle) == 1
    upstream.drain()
    assert upstream.idle == []
    status, _, _, payload = upstream.relay("POST", "/x", b"z", {"Content-Length": "1"})
    assert (status, payload) == (200, b"2:1") and server.seen[-1][1] == "close", "after drain: a new connection, closed"
    assert upstream.idle == []


def test_a_kept_connection_the_server_closed_is_replaced_and_the_request_sent_once(stand):
    server = stand(close_after=2)  # the server ends each connection after its second answer
    upstream = Upstream(server.server_address[1])
    payloads = [upstream.relay("POST", "/x", b"q", {"Content-Length": "1"})[3] for _ in range(5)]
    assert payloads == [b"1:1", b"1:1", b"2:1", b"2:1", b"3:1"], "a closing answer is not kept"
    assert len(server.seen) == 5, "no request sent twice"


def test_a_kept_connection_dropped_without_a_word_is_replaced_and_the_request_answered_once(stand):
    server = stand(close_after=1, silent=True)  # hangs up after each answer, as an idle timeout would
    upstream = Upstream(server.server_address[1])
    payloads = [upstream.relay("POST", "/x", b"r", {"Content-Length": "1"})[3] for _ in range(4)]
    assert payloads == [b"1:1", b"2:1", b"3:1", b"4:1"]
    assert [number for number, _, _ in server.seen] == [1, 2, 3, 4], "each request answered once, on a live connection"


def test_a_server_that_is_gone_is_an_oserror_for_the_front_to_answer_503(stand):
    server = stand()
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    with pytest.raises(OSError):
        Upstream(port).relay("GET", "/v2/health/ready", b"", {})


class Echo(BaseHTTPRequestHandler):
    """Answers with the binary-header length and the body size it received."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002
        return

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        size = self.headers.get("Inference-Header-Content-Length")
        payload = json.dumps({"header": None if size is None else int(size), "bytes": len(body)}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def test_the_front_sends_a_large_json_request_as_binary_and_refuses_a_large_header():
    import http.client
    import socket

    from dvit_deploy.jobs.serve.front import HttpFront

    triton = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=triton.serve_forever, daemon=True).start()
    front = HttpFront("127.0.0.1", 0, socket.AF_INET, max_body=1 << 20)
    front._server.json_limit = 200  # stands for 1 MiB
    front.start(triton.server_address[1])
    front.open()

    def post(document: dict) -> tuple[int, dict]:
        connection = http.client.HTTPConnection("127.0.0.1", front._server.server_address[1], timeout=10)
        connection.request("POST", "/v2/models/m/infer", body=json.dumps(document).encode())
        reply = connection.getresponse()
        answer = reply.status, json.loads(reply.read())
        connection.close()
        return answer

    images = {"name": "images", "datatype": "FP32", "shape": [100], "data": [0.5] * 100}
    try:
        small = {"inputs": [{**images, "shape": [2], "data": [0.5, 0.5]}]}
        assert post(small) == (200, {"header": None, "bytes": len(json.dumps(small))})  # under the limit: as it is
        status, answer = post({"inputs": [images]})  # 100 values as JSON: over the limit, relayed as 400 bytes
        assert status == 200 and answer["bytes"] - answer["header"] == 400
        status, answer = post({"id": "x" * 300, "inputs": [images]})  # still over the limit without its data
        assert status == 413 and "JSON header is" in answer["error"], answer
    finally:
        front.close()
        triton.shutdown()
