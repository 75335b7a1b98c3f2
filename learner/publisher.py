"""The publisher: the newest weights on the PUB socket, after every update and every few seconds.

Republishing every --publish-interval seconds serves late subscribers (PUB/SUB's slow joiner);
a newcomer gets weights soon after its welcome, at most one such broadcast per
JOIN_PUBLISH_GAP however many join, so a hello flood costs no broadcasts. A game family's extra
messages (learner/family_hooks.py) follow the weights on each tick.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import zmq.asyncio

JOIN_PUBLISH_DELAY, JOIN_PUBLISH_GAP = 0.3, 1.0  # seconds: weights for newcomers, coalesced


class Publisher:
    """Holds the weights message to publish and publishes it with the family's messages."""

    def __init__(self, weights: bytes, interval: float, extra: Callable[[], list[bytes]]):
        self.weights_msg = weights
        self.interval = interval
        self.extra = extra
        self.now = asyncio.Event()  # set: publish at once
        self.join_timer: asyncio.TimerHandle | None = None
        self.last_join_publish = 0.0

    def wake(self) -> None:
        """Publish at once (new weights, a new snapshot)."""
        self.now.set()

    def soon_for_newcomer(self) -> None:
        """Weights for a newcomer soon (its SUB needs a moment to connect), coalesced."""
        if self.join_timer is not None:
            return
        loop = asyncio.get_running_loop()
        delay = max(JOIN_PUBLISH_DELAY, self.last_join_publish + JOIN_PUBLISH_GAP - loop.time())

        def fire() -> None:
            self.join_timer = None
            self.last_join_publish = loop.time()
            self.now.set()

        self.join_timer = loop.call_later(delay, fire)

    async def task(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            await sock.send(self.weights_msg, copy=False)
            for msg in self.extra():
                await sock.send(msg, copy=False)
            try:
                async with asyncio.timeout(self.interval):
                    await self.now.wait()
            except TimeoutError:
                pass
            self.now.clear()
