"""The HTTP port of ``dvit serve``: a front that checks infer requests, in front of Triton's own HTTP port.

Two facts of the ``tritonserver`` 2.51 that ``nvidia-pytriton`` ships (tried on it):

* a JSON infer request allocates the byte size its ``shape`` claims before it counts ``data``:
  ``shape [100000, 3, 224, 224]`` with 10 values asks for 60 GB and the server aborts
  (``std::bad_alloc``); 2.51 has no request-size option (``--http-max-input-size`` is newer);
* a malformed JSON body, a ``data`` that is not an array of numbers, a ``data`` count that differs
  from ``shape``, a negative dimension: its JSON parser answers HTTP **500** (INTERNAL).

So Triton's HTTP endpoint listens on a private loopback port, and this front owns the port users
call. It reads each request (``Content-Length`` at most ``max_body``: 413 beyond), checks an infer
request's JSON header (``check_infer_request``: 400 with one line, as Triton's own refusals read)
and relays everything else unchanged, status and headers included, over a few kept-alive loopback
connections to Triton (``Upstream``: no connect per request, ``TCP_NODELAY``). Triton's shutdown waits
for open HTTP connections, idle ones included, so ``dvit serve`` calls ``HttpFront.drain()`` before it
stops Triton: the idle ones are closed, and from then on each request's connection is closed after
its answer. gRPC is not fronted: its binary tensors carry their byte size, which Triton checks
against the shape before it allocates.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import re
import socket
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

INFER_PATH = re.compile(r"^/v2/models/[^/?]+(?:/versions/[^/?]+)?/infer(?:\?.*)?$")
HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
               "host", "content-length"})
MIN_BODY_LIMIT = 64 << 20
JSON_RELAY_LIMIT = 1 << 20  # Triton 2.51 parsed 3.8 MB of JSON and crashed on 4.5 MB: a wide margin
JSON_BYTES_PER_VALUE = 32  # a float written as JSON text, with its separator, at most ("-1.2345678901234567e-05, ")


class Refused(Exception):
    """A request the front answers itself: ``status`` and the one-line ``message``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def body_limit(max_batch: int, values_per_image: int) -> int:
    """The largest request body the front reads: a full batch sent as JSON text, and never below 64 MiB."""
    return max(MIN_BODY_LIMIT, max_batch * values_per_image * JSON_BYTES_PER_VALUE + (1 << 20))


def _not_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def check_infer_request(header: bytes) -> dict:
    """The infer request's JSON; refused (400) unless every ``data`` matches its ``shape``."""
    try:
        document = json.loads(header, parse_constant=_not_json_constant)
    except (ValueError, RecursionError) as exc:
        raise Refused(f"the request body is not valid JSON: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise Refused("an infer request is a JSON object with an 'inputs' array")
    for index, tensor in enumerate(document["inputs"]):
        check_input(tensor, index)
    return document


NUMPY_TYPES = {"FP16": "<f2", "FP32": "<f4", "FP64": "<f8", "INT8": "i1", "INT16": "<i2", "INT32": "<i4",
               "INT64": "<i8", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "BOOL": "?"}


def as_binary_request(document: dict) -> tuple[bytes, int]:
    """The same infer request with every ``data`` moved into binary tensors after the JSON header (KServe's
    binary-tensor extension): the body, and the header's length (``Inference-Header-Content-Length``).

    Triton 2.51 crashes (SIGSEGV) parsing a JSON infer body of a few MB (4.5 MB did, 3.8 MB did not), so the
    front relays a large JSON request this way; its answer is JSON as before. ``document`` passed
    ``check_infer_request``."""
    header, tensors = dict(document), []
    header["inputs"] = []
    for index, tensor in enumerate(document["inputs"]):
        name = tensor.get("name")
        label = f"input '{name}'" if isinstance(name, str) else f"inputs[{index}]"
        if "data" not in tensor:
            raise Refused("a JSON infer request this large must carry every input as 'data' (it is re-sent as "
                          "binary tensors)", 413)
        parameters = tensor.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise Refused(f"{label}: 'parameters' must be a JSON object, got {_short(parameters)}")
        try:
            raw = _tensor_bytes(tensor.get("datatype"), tensor["data"])
        except (ValueError, TypeError, OverflowError, UnicodeError) as exc:
            raise Refused(f"{label}: {str(exc).splitlines()[0][:200]}") from None
        header["inputs"].append({**{k: v for k, v in tensor.items() if k != "data"},
                                 "parameters": {**parameters, "binary_data_size": len(raw)}})
        tensors.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    return text + b"".join(tensors), len(text)


def _tensor_bytes(datatype: Any, data: list) -> bytes:
    """One input's ``data`` as Triton's binary tensor; ValueError for a value its JSON parser would refuse too
    (an integer type holds integers in its range, never a float to truncate or a value to wrap)."""
    import numpy as np

    if datatype == "BYTES":
        return b"".join(len(b).to_bytes(4, "little") + b for b in (v.encode() for v in _leaves(data)))
    dtype = NUMPY_TYPES.get(str(datatype))
    if dtype is None:
        raise ValueError(f"datatype {_short(datatype)} cannot be sent as JSON data")
    if datatype[0] in "IU":  # INT*/UINT*: exact integers only, range checked before the cast
        leaves = list(_leaves(data))
        info = np.iinfo(dtype)
        bad = next((v for v in leaves if type(v) is not int or not info.min <= v <= info.max), None)
        if bad is not None:
            raise ValueError(f"'data' of a {datatype} tensor must hold integers in [{info.min}, {info.max}], "
                             f"got {_short(bad)}")
        return np.asarray(leaves, dtype=dtype).tobytes()
    try:
        values = np.asarray(data, dtype=dtype)
    except ValueError:  # ragged nesting: flatten in order
        values = np.fromiter(_leaves(data), dtype=dtype)
    if datatype != "BOOL" and not np.isfinite(values).all():
        raise ValueError(f"'data' of a {datatype} tensor holds a value beyond its range")
    return values.tobytes()


def _leaves(data: list):
    """The leaves of a nested JSON array, in order, without recursion."""
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            yield item
        else:
            stack.pop()


def check_input(tensor: Any, index: int) -> None:
    if not isinstance(tensor, dict):
        raise Refused(f"inputs[{index}] must be a JSON object")
    name = tensor.get("name")
    label = f"input '{name}'" if isinstance(name, str) else f"inputs[{index}]"
    shape, dtype = tensor.get("shape"), tensor.get("datatype")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise Refused(f"{label}: 'shape' must be an array of non-negative integers, got {_short(shape)}")
    if "data" not in tensor:  # binary or shared memory: Triton checks the byte size against the shape first
        return
    data = tensor["data"]
    if not isinstance(data, list):
        raise Refused(f"{label}: 'data' must be a JSON array, got {_short(data)}")
    count, wrong = _count_values(data, dtype)
    if wrong is not None:
        kind = {"BYTES": "strings", "BOOL": "true/false"}.get(str(dtype), "numbers")
        raise Refused(f"{label}: 'data' of a {dtype} tensor must hold {kind}, got {_short(wrong)}")
    expected = math.prod(shape)
    if count != expected:
        raise Refused(f"{label}: 'shape' {shape} needs {expected} values, 'data' has {count}")


def _count_values(data: list, dtype: Any) -> tuple[int, Any]:
    """(how many leaves ``data`` holds, the first leaf of the wrong type or None), without recursion."""
    if dtype == "BYTES":
        def fits(v: Any) -> bool: return isinstance(v, str)
    elif dtype == "BOOL":
        def fits(v: Any) -> bool: return isinstance(v, bool)
    else:
        def fits(v: Any) -> bool: return type(v) in (int, float)
    count, stack = 0, [data]
    while stack:
        items = stack.pop()
        for item in items:
            if isinstance(item, list):
                stack.append(item)
            elif fits(item):
                count += 1
            else:
                return count, item
    return count, None


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (bytes, bytearray)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for clients; every answer carries its Content-Length
    # Headers and body in one write, sent at once: a header segment alone meets the client's delayed ACK
    # (Nagle), which cost ~40 ms per request when measured.
    disable_nagle_algorithm = True
    wbufsize = 1 << 16
    server: "_FrontServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        return  # Triton logs requests; a line per request on dvit's stderr would drown its own

    def do_GET(self) -> None:  # noqa: N802 - http.server's names
        self._relay()

    def do_POST(self) -> None:  # noqa: N802
        self._relay()

    def do_HEAD(self) -> None:  # noqa: N802
        self._relay()

    def do_DELETE(self) -> None:  # noqa: N802
        self._relay()

    def _relay(self) -> None:
        try:
            body = self._read_body()
            if not self.server.serving:  # Triton may answer before `dvit serve` has seen it ready: nothing
                raise Refused("dvit serve is starting: not ready yet", 503)  # is served before that moment
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            if self.command == "POST" and INFER_PATH.match(self.path):
                text = self._json_header(body)
                document = check_infer_request(text)
                if len(text) > self.server.json_limit:  # Triton's JSON parser would crash on it
                    body, size = as_binary_request(document)
                    if size > self.server.json_limit:
                        raise Refused(f"the request's JSON header is {size} bytes without its data, over this "
                                      f"server's limit of {self.server.json_limit} bytes", 413)
                    headers = {k: v for k, v in headers.items()
                               if k.lower() not in ("content-encoding", "inference-header-content-length")}
                    headers["Inference-Header-Content-Length"] = str(size)
        except Refused as refused:
            self._answer(refused.status, {"error": str(refused)})
            return
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # a bug of ours: one line, not a hang-up
            self._answer(500, {"error": f"dvit serve's HTTP front failed on this request ({type(exc).__name__}: "
                                        f"{str(exc)[:200]})"})
            return
        if body or self.command == "POST":
            headers["Content-Length"] = str(len(body))
        try:
            status, reason, reply_headers, payload = self.server.upstream.relay(self.command, self.path, body, headers)
        except (OSError, http.client.HTTPException):
            self._answer(503, {"error": "Triton Inference Server is not answering (starting or stopping)"})
            return
        self.send_response(status, reason)
        for key, value in reply_headers:
            if key.lower() not in HOP_HEADERS:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _read_body(self) -> bytes:
        limit = self.server.max_body
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length = self.headers.get("Content-Length")
        if length is None:
            if self.command == "POST":
                self.close_connection = True
                raise Refused("a request body needs a Content-Length", 411)
            return b""
        if not length.strip().isdigit():
            self.close_connection = True
            raise Refused(f"Content-Length must be a byte count, got {_short(length)}")
        if int(length) > limit:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            raise Refused(f"the request body ({int(length)} bytes) exceeds this server's limit of {limit} bytes", 413)
        return self.rfile.read(int(length))

    def _read_chunked(self, limit: int) -> bytes:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                self.close_connection = True
                raise Refused("malformed chunked request body") from None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > limit:
                self.close_connection = True
                raise Refused(f"the request body exceeds this server's limit of {limit} bytes", 413)
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _json_header(self, body: bytes) -> bytes:
        encoding = self.headers.get("Content-Encoding", "").lower()
        if encoding in ("gzip", "deflate"):
            inflate = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
            try:
                body = inflate.decompress(body, self.server.max_body + 1)
            except zlib.error:
                raise Refused(f"the request body is not valid {encoding} data") from None
            if len(body) > self.server.max_body:
                raise Refused(f"the request body inflates past this server's limit of {self.server.max_body} bytes", 413)
        size = self.headers.get("Inference-Header-Content-Length")
        if size is None:
            return body
        if not size.strip().isdigit() or int(size) > len(body):
            raise Refused(f"Inference-Header-Content-Length {_short(size)} does not fit the {len(body)}-byte body")
        return body[:int(size)]

    def _answer(self, status: int, document: dict[str, str]) -> None:
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


class Upstream:
    """Kept-alive loopback connections to Triton's HTTP port, at most ``keep`` idle ones.

    ``relay`` takes an idle connection (or opens one), sends the request, reads the whole answer and
    puts the connection back, unless Triton closes it or ``drain()`` was called: then it is closed.
    A kept connection Triton has closed meanwhile fails before any answer byte; the request is then
    sent once more on a new connection."""

    def __init__(self, port: int = 0, keep: int = 8) -> None:
        self.port, self.keep = port, keep
        self.idle: list[http.client.HTTPConnection] = []
        self.reuse = True
        self.lock = threading.Lock()

    def _connect(self) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection("127.0.0.1", self.port)
        connection.connect()
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def relay(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, list, bytes]:
        with self.lock:
            kept = self.idle.pop() if self.idle else None
        for connection in ([kept] if kept is not None else []) + [None]:
            fresh = connection is None
            connection = connection or self._connect()
            if not self.reuse:
                headers = {**headers, "Connection": "close"}
            try:
                connection.request(method, path, body=body or None, headers=headers)
                reply = connection.getresponse()
                payload = reply.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                connection.close()
                if fresh:
                    raise
                continue  # a kept connection Triton had closed: once more on a new one
            except BaseException:
                connection.close()
                raise
            self._put_back(connection, reply.will_close)
            return reply.status, reply.reason, reply.getheaders(), payload
        raise http.client.HTTPException("unreachable")

    def _put_back(self, connection: http.client.HTTPConnection, closing: bool) -> None:
        with self.lock:
            if self.reuse and not closing and len(self.idle) < self.keep:
                self.idle.append(connection)
                return
        connection.close()

    def drain(self) -> None:
        """No connection is kept from now on; the idle ones are closed."""
        with self.lock:
            self.reuse = False
            idle, self.idle = self.idle, []
        for connection in idle:
            connection.close()


class _FrontServer(ThreadingHTTPServer):
    daemon_threads = True  # an idle keep-alive client never holds up the exit
    allow_reuse_address = True  # as Triton binds: TIME_WAIT is not "in use"
    request_queue_size = 128
    max_body = MIN_BODY_LIMIT
    json_limit = JSON_RELAY_LIMIT  # a JSON infer header past this is relayed as binary tensors
    serving = False  # set by HttpFront.open() once `dvit serve` has seen Triton ready
    upstream: Upstream  # set by HttpFront


class HttpFront:
    """The bound front (``port`` on ``host``); ``start(upstream_port)`` serves it from a thread."""

    def __init__(self, host: str, port: int, family: int, *, max_body: int) -> None:
        server_class = type("_Front", (_FrontServer,), {"address_family": family})
        self._server = server_class((host, port), _Handler)  # binds and listens now: OSError if it cannot
        self._server.max_body = max_body
        self._server.upstream = Upstream()
        self._thread: threading.Thread | None = None

    def start(self, upstream_port: int) -> None:
        self._server.upstream.port = upstream_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="dvit-serve-http", daemon=True)
        self._thread.start()

    def open(self) -> None:
        """Relay from now on (until then every request gets 503): serving starts when ``dvit serve`` says so,
        so a request can never be answered before the start-up a signal would cut short without a drain."""
        self._server.serving = True

    def drain(self) -> None:
        """Before Triton stops: keep no idle connection to it (its shutdown would wait for them)."""
        self._server.upstream.drain()

    def close(self) -> None:
        self._server.upstream.drain()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


def private_port() -> int:
    """A free loopback port for Triton's own HTTP endpoint (only the front calls it)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
