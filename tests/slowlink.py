"""A slow network link for tests, where ``tc netem`` is not available: a TCP proxy on loopback that
delivers each chunk one-way ``delay_s`` late, at most ``rate_Bps`` per direction (a link that sends
one chunk after another, then a propagation delay)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

CHUNK_BYTES = 64 * 1024


class SlowLink:
    """Listen on 127.0.0.1:``port`` and forward every connection to 127.0.0.1:``target_port``."""

    def __init__(self, target_port: int, delay_s: float, rate_Bps: float) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self.rate_Bps = rate_Bps
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-link", daemon=True)

    def start(self) -> "SlowLink":
        self._thread.start()
        if not self._started.wait(timeout=10):
            raise RuntimeError("the slow link did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)
        self._started.set()
        async with server:
            await self._stop.wait()
            server.close()

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(self._pipe(client_reader, target_writer), self._pipe(target_reader, client_writer),
                             return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One direction: each chunk takes len/rate on the wire after the previous one, then delay_s."""
        arrivals: asyncio.Queue = asyncio.Queue()
        link_free = 0.0

        async def deliver() -> None:
            while True:
                item = await arrivals.get()
                if item is None:
                    break
                at, data = item
                wait = at - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(CHUNK_BYTES)
                if not data:
                    break
                start = max(time.perf_counter(), link_free)
                link_free = start + len(data) / self.rate_Bps
                await arrivals.put((link_free + self.delay_s, data))
        except (ConnectionError, OSError):
            pass
        finally:
            await arrivals.put(None)
            try:
                await sender
            except (ConnectionError, OSError):
                pass
