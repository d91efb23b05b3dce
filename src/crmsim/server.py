"""Run a simulator (an aiohttp web application) on loopback, over HTTPS, in a background thread."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from aiohttp import web

from crmsim.tls import Certificates


class RunningSimulator:
    """``with RunningSimulator(app, certificates) as sim: sim.base_url`` -> https://127.0.0.1:PORT"""

    def __init__(self, app: web.Application, certificates: Certificates | None) -> None:
        self.app = app
        self.certificates = certificates
        self.base_url = ""
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as error:  # reported to the starting thread
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        context = self.certificates.server_context() if self.certificates else None
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = self._runner.addresses[0][1]
        scheme = "https" if context else "http"
        self.base_url = f"{scheme}://127.0.0.1:{port}"

    def __enter__(self) -> RunningSimulator:
        self._thread.start()
        self._ready.wait(timeout=20)
        if self._error is not None:
            raise RuntimeError("the simulator did not start") from self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=20)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=20)
        self._loop.close()
