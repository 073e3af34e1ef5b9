"""Live-event fan-out: in-process when embedded, Redis when several processes share the work.

Every process keeps one local dispatch table (channel -> subscriptions). With Redis, a publish
goes to Redis only and one supervised listener per process feeds the local table, so a process
holds a single Redis subscription however many WebSocket clients it serves."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from typing import Any

from yuntu.kit.logging import get_logger

log = get_logger("yuntu.pubsub")
QUEUE_LIMIT = 256
REDIS_PREFIX = "yuntu:events:"


class Subscription:
    """A bounded mailbox. A consumer too slow to keep up loses the oldest events (and is told
    through `dropped`), never blocks the publisher or other consumers."""

    def __init__(self, bus: PubSub, channels: set[str]) -> None:
        self._bus = bus
        self.channels: set[str] = set()
        # (event, its JSON text): serialized once per publish, not once per connection
        self.queue: asyncio.Queue[tuple[dict[str, Any], str]] = asyncio.Queue(QUEUE_LIMIT)
        self.dropped = 0
        self.closed = False
        for channel in channels:
            self.add(channel)

    def add(self, channel: str) -> None:
        self.channels.add(channel)
        self._bus._subscribers[channel].add(self)

    def remove(self, channel: str) -> None:
        self.channels.discard(channel)
        self._bus._subscribers[channel].discard(self)

    def deliver(self, message: dict[str, Any], text: str) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait((message, text))

    async def get(self) -> dict[str, Any]:
        return (await self.queue.get())[0]

    async def get_with_text(self) -> tuple[dict[str, Any], str]:
        return await self.queue.get()

    def close(self) -> None:
        self.closed = True
        for channel in list(self.channels):
            self.remove(channel)


class PubSub:
    """In-process bus (the embedded default)."""

    def __init__(self) -> None:
        self._subscribers: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for task in list(self._pending):
            task.cancel()

    def subscribe(self, *channels: str) -> Subscription:
        return Subscription(self, set(channels))

    def _dispatch(self, channel: str, message: dict[str, Any], text: str | None = None) -> None:
        subscribers = self._subscribers.get(channel)
        if not subscribers:
            return
        text = text if text is not None else json.dumps(message, ensure_ascii=False)
        for subscription in list(subscribers):
            subscription.deliver(message, text)

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        self._dispatch(channel, message)

    def publish_soon(self, channel: str, message: dict[str, Any]) -> None:
        """From synchronous code on the event loop (after-commit hooks)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self.publish(channel, message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


class RedisPubSub(PubSub):
    def __init__(self, url: str) -> None:
        super().__init__()
        import redis.asyncio as redis

        self._url = url
        self._redis = redis.from_url(url, decode_responses=True)
        self._listener: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        # Never blocks start-up: with Redis down the process still serves (health says so)
        # and the supervised listener connects when Redis comes back.
        self._listener = asyncio.create_task(self._listen())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), 0.5)

    async def stop(self) -> None:
        await super().stop()
        if self._listener:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        await self._redis.aclose()

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        try:
            await self._redis.publish(REDIS_PREFIX + channel, json.dumps(message))
        except Exception as exc:  # live events are best effort; state stays in the database
            log.warning("event_publish_failed", channel=channel, error=type(exc).__name__)

    async def _listen(self) -> None:
        """Supervised: a dropped connection is re-established with backoff. The pub/sub
        connection has no read timeout, so an idle channel does not kill it."""
        import redis.asyncio as redis

        delay = 0.1
        while True:
            client = redis.from_url(self._url, decode_responses=True, socket_timeout=None)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(REDIS_PREFIX + "*")
                self._ready.set()
                delay = 0.1
                async for item in pubsub.listen():
                    if item.get("type") != "pmessage":
                        continue
                    channel = str(item["channel"])[len(REDIS_PREFIX) :]
                    if not self._subscribers.get(channel):
                        continue
                    try:
                        message = json.loads(item["data"])
                    except ValueError:
                        continue
                    self._dispatch(channel, message, item["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event_listener_reconnecting", error=type(exc).__name__, delay=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                    await client.aclose()


def create_pubsub(redis_url: str | None) -> PubSub:
    return RedisPubSub(redis_url) if redis_url else PubSub()
