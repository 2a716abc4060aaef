"""The audit webhook backend (upstream: ``k8s.io/apiserver/plugin/pkg/audit/webhook`` behind the
buffered backend of ``plugin/pkg/audit/buffered``), for ``--audit-webhook-config-file``.

The config file is a kubeconfig: its cluster's ``server`` is the URL events are POSTed to, with
its ``certificate-authority-data`` (or file) and the user's client certificate or token. Events
go out in batches, as upstream's default ``--audit-webhook-mode=batch`` sends them: an
``audit.k8s.io/v1`` ``EventList`` of at most ``--audit-webhook-batch-max-size`` (400) events,
sent when it is full or ``--audit-webhook-batch-max-wait`` (30 s) after its first event. The
buffer holds ``--audit-webhook-batch-buffer-size`` (10000) events; beyond it new events are
dropped and counted, so a slow or dead webhook never holds up a request. A batch that fails (no
connection, or a 429 or 5xx answer) is sent again after ``--audit-webhook-initial-backoff``
(10 s), then 1.5 times longer each time, five tries in all; then it is dropped with upstream's
log line ``Error in audit plugin 'webhook' affecting N audit events: ...``. On shutdown what is
buffered is sent once more (for at most 5 s).

The modes ``blocking`` and ``blocking-strict`` (each request waits for its events' delivery) are
not built: the server refuses them at start.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import orjson

from kubeling.client import kubeconfig

log = logging.getLogger(__name__)

MODES = ("batch",)
STEPS = 5            # tries per batch (upstream's wait.Backoff Steps)
FACTOR = 1.5
CLOSE_TIMEOUT = 5.0


class WebhookError(Exception):
    """A bad ``--audit-webhook-*`` flag or config file."""


class WebhookBackend:
    """See the module docstring. ``process`` is called on the event loop and never blocks."""

    def __init__(self, config_file: str, *, max_batch_size: int = 400, max_batch_wait: float = 30.0,
                 buffer_size: int = 10000, initial_backoff: float = 10.0, mode: str = "batch") -> None:
        if mode not in MODES:
            raise WebhookError(f"--audit-webhook-mode={mode}: only {', '.join(MODES)} is supported")
        if max_batch_size < 1 or buffer_size < 1 or max_batch_wait <= 0 or initial_backoff < 0:
            raise WebhookError("--audit-webhook-batch-max-size, -batch-buffer-size and -batch-max-wait must be "
                               "positive")
        try:
            self.config = kubeconfig.load(config_file)
            self._ssl = self.config.ssl_context()
        except (OSError, kubeconfig.ConfigError) as e:
            raise WebhookError(f"--audit-webhook-config-file: {e}") from None
        self.url = self.config.server
        self.max_batch_size, self.max_batch_wait = max_batch_size, max_batch_wait
        self.initial_backoff = initial_backoff
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(buffer_size)
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = False
        self.sent = 0          # events delivered
        self.dropped = 0       # events lost: the buffer was full, or their batch failed every try

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            headers={"Content-Type": "application/json", **self.config.auth_headers()},
            timeout=aiohttp.ClientTimeout(total=30))
        self._task = asyncio.create_task(self._run(), name="audit-webhook")

    def process(self, event: dict) -> None:
        if self._closing:
            return
        try:
            self._queue.put_nowait(orjson.dumps(event))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped in (1, 100) or self.dropped % 10_000 == 0:
                log.error("audit webhook: the buffer is full: %d events dropped", self.dropped)

    async def aclose(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is None:
            return
        rest = []
        while not self._queue.empty():
            rest.append(self._queue.get_nowait())
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                for i in range(0, len(rest), self.max_batch_size):
                    await self._send(rest[i:i + self.max_batch_size], tries=1)
        except TimeoutError:
            log.error("audit webhook: %d events not sent at shutdown", len(rest))
        await self._session.close()

    # -- the sender ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = time.monotonic() + self.max_batch_wait
            while len(batch) < self.max_batch_size:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
            await self._send(batch)

    async def _send(self, batch: list[bytes], tries: int = STEPS) -> None:
        body = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[' + b",".join(batch) + b"]}"
        wait, why = self.initial_backoff, ""
        for attempt in range(tries):
            if attempt:
                await asyncio.sleep(wait)
                wait *= FACTOR
            try:
                async with self._session.post(self.url, data=body, ssl=self._ssl) as resp:
                    if resp.status < 300:
                        self.sent += len(batch)
                        return
                    why = f"the webhook answered {resp.status}: {(await resp.text())[:200]}"
                    if resp.status != 429 and resp.status < 500:
                        break      # a 4xx other than 429 will not change by trying again
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                why = str(e) or type(e).__name__
        self.dropped += len(batch)
        log.error("Error in audit plugin 'webhook' affecting %d audit events: %s", len(batch), why)


class UnionBackend:
    """Several backends (the log and the webhook): each gets every event."""

    def __init__(self, backends: list) -> None:
        self.backends = backends

    async def start(self) -> None:
        for b in self.backends:
            if hasattr(b, "start"):
                await b.start()

    def process(self, event: dict) -> None:
        for b in self.backends:
            try:
                b.process(event)
            except Exception:  # noqa: BLE001 - one backend's fault must not starve the others
                log.exception("audit backend %s", type(b).__name__)

    async def aclose(self) -> None:
        for b in self.backends:
            await b.aclose()
