"""httpcore's network layer on asyncio's own streams.

httpcore reaches asyncio through anyio, which wraps every read and write in a cancel scope and
answers every "is this idle connection still good?" check by building the socket's attribute
table (a ``getpeername`` system call included). The pool asks that of each idle connection on
every request. Together that was about a fifth of the CPU of an all-304 pass (docs/fetching.md;
``benchmarks/http_bench.py`` measures both backends). This backend implements httpcore's public
network-backend interface directly on ``asyncio.open_connection``; the Fetcher's guard
(``guard.GuardedBackend``) wraps it, so every address is still checked before it is dialled.
"""

from __future__ import annotations

import asyncio
import select
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore


def _readable(sock: Any) -> bool:
    """Whether an idle connection has something to read: data nobody asked for, or its end.
    Either way it cannot carry the next request. No socket counts as readable (unusable)."""
    fd = -1 if sock is None else sock.fileno()
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection: a StreamReader/StreamWriter pair and its socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc) or "read timed out") from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc) or "write timed out") from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        # Not waiting for the close to finish: a TLS peer that never answers close_notify
        # would hold the caller for asyncio's shutdown timeout (30 s).
        self._writer.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            self._writer.transport.abort()
            raise httpcore.ConnectTimeout(str(exc) or "TLS handshake timed out") from exc
        except (OSError, ssl.SSLError) as exc:  # ssl.SSLError is an OSError; named for readers
            self._writer.transport.abort()
            raise httpcore.ConnectError(str(exc)) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "is_readable":
            # Known without a system call: an end of stream asyncio has already read, or a
            # transport already closing (its socket may not be released yet).
            if self._reader.at_eof() or self._writer.transport.is_closing():
                return True
            return _readable(self._writer.get_extra_info("socket"))
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """TCP connections through ``asyncio.open_connection``, errors as httpcore's.

    ``socket_options`` are set once the connection is made (asyncio connects its own socket);
    the Fetcher passes none. Unix sockets are left to the base class (not implemented): the
    guard refuses them before it would ask. A StreamReader buffers at most twice its 64 KiB
    limit before it stops reading, so a fast server cannot fill memory ahead of the Fetcher's
    size cap."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, local_addr=local)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock = writer.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
