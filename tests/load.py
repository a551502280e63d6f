"""A small asyncio load client: steady HTTP traffic and WebSocket followers, counted.

It drives a running platform through its load balancer while something happens to it (a
release, a rollback, a configuration change) and counts what a user would notice:

- HTTP: requests started at a fixed rate (open loop: a slow answer does not slow the
  next request down), each answer's status, connection errors and time-outs, the
  releases that answered (``X-Maha-Release``). Requests are idempotent GETs of the
  page, ``/health``, a static file and a campaign, plus a POST that starts a campaign
  every ``post_interval`` seconds (so the followers below have progress to receive).
- WebSocket: ``ws_clients`` followers of every campaign on ``/ws``. All of it is one user,
  signed up at the start (a socket hears of its own user's campaigns only). A follower whose
  connection is closed by the other end counts a cut and reconnects at once (as the
  app's page does); at the end a last campaign is started and every follower must
  receive its progress to the end ("kept receiving their notifications").

Used by tests/platform/test_zero_downtime.py and the benchmark
(``python -m mahaops.bench_zero_downtime``); ``python -m tests.load URL`` runs it alone.
Traffic goes only to the URL given (the platform's load balancer on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.users import User

GET_PATHS = ("/health", "/", "/static/app.css")  # plus /api/campaigns/<id> once one exists
REQUEST_TIMEOUT = 10.0  # seconds: an answer later than this counts as an error
MAX_IN_FLIGHT = 400  # requests at once; past it a request waits (and counts as late)
LATE = 0.1  # seconds behind its slot: the client, not the platform, fell behind


@dataclass
class Follower:
    """One WebSocket client following every campaign."""

    index: int
    connects: int = 0  # connections opened, the first included
    cuts: int = 0  # connections the other end closed or broke
    failed_connects: int = 0  # attempts that did not open (then retried)
    messages: int = 0  # progress messages received
    servers: list[str] = field(default_factory=list)  # the app server of each connection
    campaigns_done: set[int] = field(default_factory=set)  # campaigns seen to the end
    longest_gap: float = 0.0  # seconds without a connection, worst reconnect


@dataclass
class Report:
    """What the load saw during one scenario."""

    seconds: float
    rate: float  # requests per second asked for
    requests: int
    ok: int  # 2xx answers
    statuses: Counter[int]  # non-2xx answers by status
    errors: Counter[str]  # requests with no answer, by kind
    late: int  # requests started more than LATE after their slot
    latencies: list[float]
    releases: Counter[str]  # X-Maha-Release of the answers
    failed: Counter[str]  # "GET /health 503": what failed, and how
    posts: int  # campaigns started
    followers: list[Follower]
    final_campaign: int | None  # started after the scenario; every follower must see it end
    missed_final: list[int]  # followers that did not see the final campaign end

    @property
    def failures(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    @property
    def sustained(self) -> float:
        """Requests per second actually sent."""
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cuts(self) -> int:
        return sum(f.cuts for f in self.followers)

    @property
    def reconnects(self) -> int:
        return sum(f.connects - 1 for f in self.followers if f.connects)

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def summary(self) -> str:
        return (
            f"{self.requests} requests in {self.seconds:.1f}s "
            f"({self.sustained:.1f}/s of {self.rate:.0f}/s asked, {self.late} late), "
            f"{self.failures} failed {dict(self.failed) or ''}, "
            f"p50 {self.percentile(50) * 1000:.0f} ms, p99 {self.percentile(99) * 1000:.0f} ms, "
            f"releases {dict(self.releases)}; "
            f"{len(self.followers)} WebSocket clients: {self.cuts} cuts, "
            f"{self.reconnects} reconnects, "
            f"{sum(f.failed_connects for f in self.followers)} failed connection attempts, "
            f"longest gap {max((f.longest_gap for f in self.followers), default=0):.2f}s, "
            f"{sum(f.messages for f in self.followers)} messages, "
            f"final campaign missed by {len(self.missed_final)}"
        )


class Load:
    """Load on ``url`` (the load balancer) from a thread of its own, started and stopped
    around what is measured:

    .. code:: python

        with Load("http://127.0.0.1:8080", rate=50, ws_clients=10) as load:
            releases.deploy(env, tarball)
        report = load.report
        assert report.failures == 0
    """

    def __init__(
        self,
        url: str,
        rate: float = 50.0,
        ws_clients: int = 10,
        post_interval: float = 2.0,
        # Each campaign is real mail through the mail host (about 250 messages/s on 2
        # cores): a post every 2 s of 600 recipients outran the worker, and the final
        # campaign queued behind minutes of backlog.
        recipients: int = 100,
        final_timeout: float = 60.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.rate = rate
        self.ws_clients = ws_clients
        self.post_interval = post_interval
        self.recipients = recipients
        self.final_timeout = final_timeout
        self.report: Report | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- the thread ----------------------------------------------------------------------------

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        # One user posts the campaigns and follows them: a socket sees its user's campaigns only.
        self.user = User.sign_up(self.url)
        self._thread = threading.Thread(target=self._main, name="load", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the load's WebSocket clients never connected")
        if self._error:
            raise self._error

    def stop(self) -> Report:
        assert self._loop and self._stop and self._thread
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(self.final_timeout + REQUEST_TIMEOUT + 30)
        if self._error:
            raise self._error
        assert self.report is not None, "the load did not finish"
        return self.report

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # handed to the caller's thread
            self._error = exc
            self._ready.set()

    # -- the load ------------------------------------------------------------------------------

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        headers = self.user.headers("POST")  # every request as the user, with its CSRF token
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=headers
        ) as session:
            self._session = session
            self._statuses: Counter[int] = Counter()
            self._errors: Counter[str] = Counter()
            self._releases: Counter[str] = Counter()
            self._failed_what: Counter[str] = Counter()
            self._latencies: list[float] = []
            self._requests = self._ok = self._late = self._posts = 0
            self._campaigns: list[int] = []
            self._done_events: dict[int, asyncio.Event] = {}
            followers = [Follower(i) for i in range(self.ws_clients)]
            connected = [asyncio.Event() for _ in followers]
            ws_tasks = [
                asyncio.create_task(self._follow(f, c))
                for f, c in zip(followers, connected, strict=True)
            ]
            async with asyncio.timeout(20):
                await asyncio.gather(*(c.wait() for c in connected))
            self._ready.set()

            started = time.monotonic()
            await self._drive(started)
            seconds = time.monotonic() - started

            # After the scenario: every follower must still receive a campaign to its end.
            final = await self._post(final=True)
            missed = list(range(len(followers)))
            if final is not None:
                deadline = time.monotonic() + self.final_timeout
                while time.monotonic() < deadline:
                    missed = [f.index for f in followers if final not in f.campaigns_done]
                    if not missed:
                        break
                    await asyncio.sleep(0.1)
            for task in ws_tasks:
                task.cancel()
            await asyncio.gather(*ws_tasks, return_exceptions=True)
            self.report = Report(
                seconds=seconds,
                rate=self.rate,
                requests=self._requests,
                ok=self._ok,
                statuses=self._statuses,
                errors=self._errors,
                late=self._late,
                latencies=self._latencies,
                releases=self._releases,
                failed=self._failed_what,
                posts=self._posts,
                followers=followers,
                final_campaign=final,
                missed_final=missed,
            )

    async def _drive(self, started: float) -> None:
        """Requests at ``rate`` until stopped; waits for those in flight."""
        assert self._stop is not None
        in_flight: set[asyncio.Task[Any]] = set()
        limit = asyncio.Semaphore(MAX_IN_FLIGHT)
        interval = 1.0 / self.rate
        next_post = started
        index = 0
        while not self._stop.is_set():
            slot = started + index * interval
            delay = slot - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                    break
                except TimeoutError:
                    pass
            elif -delay > LATE:
                self._late += 1
            if slot >= next_post:
                next_post = slot + self.post_interval
                task = asyncio.create_task(self._post())
            else:
                path = GET_PATHS[index % len(GET_PATHS)]
                if self._campaigns and index % (len(GET_PATHS) + 1) == 0:
                    path = f"/api/campaigns/{self._campaigns[-1]}"
                task = asyncio.create_task(self._get(path, limit))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            index += 1
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)

    def _answered(self, what: str, status: int, headers: Any, began: float) -> None:
        self._latencies.append(time.monotonic() - began)
        release = headers.get("X-Maha-Release")
        if release:
            self._releases[release] += 1
        if 200 <= status < 300:
            self._ok += 1
        else:
            self._statuses[status] += 1
            self._failed_what[f"{what} {status} {headers.get('X-Maha-Server', '-')}"] += 1

    def _failed(self, what: str, exc: BaseException) -> None:
        kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        self._errors[kind] += 1
        self._failed_what[f"{what} {kind}"] += 1

    async def _get(self, path: str, limit: asyncio.Semaphore) -> None:
        what = path.rstrip("0123456789") + ("<id>" if path[-1:].isdigit() else "")
        async with limit:
            self._requests += 1
            began = time.monotonic()
            try:
                async with self._session.get(self.url + path) as response:
                    await response.read()
                    self._answered(f"GET {what}", response.status, response.headers, began)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._failed(f"GET {what}", exc)

    async def _post(self, final: bool = False) -> int | None:
        """Start a campaign (the followers get its progress); its id, or None on failure."""
        body = {"name": "final" if final else "load", "recipients": self.recipients}
        if not final:
            self._requests += 1
            self._posts += 1
        began = time.monotonic()
        try:
            async with self._session.post(self.url + "/api/campaigns", json=body) as response:
                text = await response.text()
                if not final:
                    self._answered("POST /api/campaigns", response.status, response.headers, began)
                if response.status != 202:
                    return None
                campaign = int(json.loads(text)["id"])
                self._campaigns.append(campaign)
                return campaign
        except (aiohttp.ClientError, TimeoutError) as exc:
            if not final:
                self._failed("POST /api/campaigns", exc)
            return None

    async def _follow(self, follower: Follower, connected: asyncio.Event) -> None:
        """Follow every campaign; reconnect whenever the connection is cut."""
        ws_url = self.url.replace("http://", "ws://", 1) + "/ws"
        lost_at: float | None = None
        while True:
            try:
                async with self._session.ws_connect(ws_url, heartbeat=None) as ws:
                    follower.connects += 1
                    if lost_at is not None:
                        follower.longest_gap = max(follower.longest_gap, time.monotonic() - lost_at)
                        lost_at = None
                    connected.set()
                    async for message in ws:
                        if message.type != aiohttp.WSMsgType.TEXT:
                            break
                        data = json.loads(message.data)
                        if data.get("type") == "hello":
                            follower.servers.append(str(data.get("server")))
                        elif "campaign" in data and "status" in data:
                            follower.messages += 1
                            if data["status"] == "done":
                                follower.campaigns_done.add(int(data["campaign"]))
                    follower.cuts += 1  # the other end closed it
                    lost_at = time.monotonic()
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError, OSError):
                if follower.connects and lost_at is None:  # broken while open: a cut
                    follower.cuts += 1
                    lost_at = time.monotonic()
                else:
                    follower.failed_connects += 1
                await asyncio.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Steady load on a platform's load balancer.")
    parser.add_argument("url", help="the load balancer, e.g. http://127.0.0.1:8080")
    parser.add_argument("--rate", type=float, default=50, help="HTTP requests per second")
    parser.add_argument("--ws", type=int, default=10, help="WebSocket clients following campaigns")
    parser.add_argument("--seconds", type=float, default=10, help="how long the load runs")
    args = parser.parse_args(argv)
    with Load(args.url, rate=args.rate, ws_clients=args.ws) as load:
        time.sleep(args.seconds)
    assert load.report is not None
    print(load.report.summary())
    print(f"latency median {statistics.median(load.report.latencies or [0]) * 1000:.0f} ms")
    return 1 if load.report.failures or load.report.missed_final else 0


if __name__ == "__main__":
    raise SystemExit(main())
