"""A slow network link for tests, where ``tc netem`` is not available: a TCP proxy on loopback that
delivers each chunk one-way ``delay_s`` late, at most ``rate_Bps`` per direction (a link that sends
one chunk after another, then a propagation delay).

The proxy runs in its own process (this file as a script), as a network would: in the test's
process it would wait for the GIL behind the client's runtime threads, which on a loaded 2-core
host delays chunks by milliseconds that no real link adds.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

CHUNK_BYTES = 64 * 1024
START_TIMEOUT_S = 10.0


class SlowLink:
    """Listen on 127.0.0.1:``port`` and forward every connection to 127.0.0.1:``target_port``."""

    def __init__(self, target_port: int, delay_s: float, rate_Bps: float, port: int | None = None) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self.rate_Bps = rate_Bps
        if port is None:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        self.port = port
        self._process: subprocess.Popen | None = None

    def start(self) -> "SlowLink":
        """Start the proxy process; return once it accepts connections."""
        self._process = subprocess.Popen([sys.executable, __file__, str(self.target_port), repr(self.delay_s),
                                          repr(self.rate_Bps), str(self.port)])
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the slow link on port {self.port} did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
            self._process = None

    def serve_forever(self) -> None:
        """Run the proxy in this process until it is terminated (the child's main)."""
        asyncio.run(self._serve_forever())

    async def _serve_forever(self) -> None:
        server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)
        async with server:
            await server.serve_forever()

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


if __name__ == "__main__":
    target, delay, rate, listen = sys.argv[1:5]
    try:
        SlowLink(int(target), float(delay), float(rate), int(listen)).serve_forever()
    except KeyboardInterrupt:
        pass
