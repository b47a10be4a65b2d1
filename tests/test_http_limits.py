"""The HTTP server's limits (issue 22), each against the running service over raw sockets:
header size and count, request body, the time to send a request, idle keep-alive, connections
at once. Every refusal is an HTTP answer and a closed connection; the service keeps serving."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.test_service_e2e import Running, cycle_done, service, write_watchlist

pytestmark = pytest.mark.slow

LIMITS = {
    "AGGREGATOR_HTTP_MAX_HEADER_BYTES": "8192",
    "AGGREGATOR_HTTP_MAX_HEADERS": "50",
    "AGGREGATOR_HTTP_MAX_BODY_BYTES": "1024",
    "AGGREGATOR_HTTP_REQUEST_TIMEOUT": "1",
    "AGGREGATOR_HTTP_KEEP_ALIVE_TIMEOUT": "1",
    "AGGREGATOR_HTTP_MAX_CONNECTIONS": "20",
}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("http-limits")
    config = tmp / "watchlist.yaml"
    write_watchlist(config, ["lrt-english"])
    with service(tmp, tmp / "a.db", config, env_extra=LIMITS) as run:
        run.wait(cycle_done(run, 1), what="the first cycle")
        yield run


def connect(run: Running) -> socket.socket:
    return socket.create_connection(("127.0.0.1", run.port), timeout=10)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (or 10 s pass)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


def still_serving(run: Running) -> None:
    status, body = run.get("/healthz/live")
    assert status == 200 and b"live" in body


def test_a_normal_request_within_the_limits_is_served(running: Running) -> None:
    with connect(running) as sock:
        headers = "".join(f"X-H{i}: {'v' * 50}\r\n" for i in range(40))
        sock.sendall(f"GET /healthz/live HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200")


def test_unterminated_headers_are_refused_at_the_size_limit(running: Running) -> None:
    with connect(running) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000)
        answer = read_all(sock)  # never ending the header line: cut off at 8 KiB
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"header-too-large" in answer
    still_serving(running)


def test_complete_headers_over_the_size_limit_are_refused(running: Running) -> None:
    with connect(running) as sock:
        headers = "".join(f"X-H{i}: {'v' * 400}\r\n" for i in range(30))  # 12 KB, 30 fields
        sock.sendall(f"GET / HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]


def test_too_many_header_fields_are_refused(running: Running) -> None:
    with connect(running) as sock:
        headers = "".join(f"X-{i}: v\r\n" for i in range(60))
        sock.sendall(f"GET / HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"too-many-headers" in answer
    still_serving(running)


def test_a_body_over_the_limit_is_refused_declared_or_chunked(running: Running) -> None:
    with connect(running) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]

    with connect(running) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        start = time.monotonic()
        try:
            for _ in range(64):
                sock.sendall(b"400\r\n" + b"b" * 1024 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_all(sock)
    # 413, or the app's own 405 when it answered before the body passed the limit: either
    # way one answer, then the connection is closed (not left to the socket's 10 s timeout).
    assert answer.startswith((b"HTTP/1.1 413", b"HTTP/1.1 405")), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    assert time.monotonic() - start < 8
    still_serving(running)


def test_a_silent_or_dripping_client_is_cut_off_at_the_request_timeout(running: Running) -> None:
    with connect(running) as silent:
        start = time.monotonic()
        answer = read_all(silent)  # sends nothing at all
        waited = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert waited < 8  # the limit is 1 s; the socket's own timeout is 10 s

    with connect(running) as drip:
        drip.settimeout(0.3)
        request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        closed = False
        start = time.monotonic()
        for byte in request[:-2]:  # a byte every 0.2 s, never finishing
            try:
                drip.sendall(bytes([byte]))
                if drip.recv(65536).startswith(b"HTTP/1.1 408"):
                    closed = True
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        assert closed and time.monotonic() - start < 8
    still_serving(running)


def test_an_idle_kept_alive_connection_is_closed(running: Running) -> None:
    with connect(running) as sock:
        sock.sendall(b"GET /healthz/live HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        answer = first + read_all(sock)  # closed by the server, not by the socket timeout
        assert answer.endswith(b'{"live":true}')
        assert time.monotonic() - start < 8


def test_connections_past_the_limit_are_answered_503_and_closed(running: Running) -> None:
    held = [connect(running) for _ in range(20)]
    try:
        time.sleep(0.2)
        with connect(running) as extra:
            answer = read_all(extra)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        assert b"too-many-connections" in answer
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    still_serving(running)


def test_refusals_are_counted_in_metrics(running: Running) -> None:
    with connect(running) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 413")
    status, body = running.get("/metrics")
    assert status == 200
    lines = [line for line in body.decode().splitlines() if line.startswith("aggregator_http_")]
    counted = {line.split(" ")[0]: float(line.split(" ")[1]) for line in lines if "_total{" in line}
    assert counted.get('aggregator_http_refused_total{reason="body-too-large"}', 0) >= 1, lines
