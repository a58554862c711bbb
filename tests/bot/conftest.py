"""Fixtures for the bot's tests: a store and service on the tiny model, and `discord_run`, which
starts the stand-in and the real discord.py client against it, runs a scenario, and stops both.

    def test_x(discord_run):
        async def scenario(d):            # d.standin, d.bot, d.store, d.service
            interaction = await d.standin.slash("imagine", prompt="cat")
            ...
        discord_run(scenario)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, Awaitable, Callable

import pytest

from tests.bot.standin import DiscordStandin


@dataclasses.dataclass
class Discord:
    standin: DiscordStandin
    bot: Any
    store: Any
    service: Any
    task: asyncio.Task | None = None

    async def restart(self, between: Callable[[], Awaitable[None]] | None = None, **bot_kwargs: Any) -> None:
        """Stop the bot and start a new one on the same service and store (a process restart);
        `between()` runs while no bot is connected."""
        from bot.client import StatuaryBot

        await self.bot.close()
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)
        if between is not None:
            await between()
        bot_kwargs.setdefault("progress_interval", 0.1)
        bot_kwargs.setdefault("guild_ready_timeout", 0.05)  # the stand-in sends no GUILD_CREATE to wait for
        self.bot = StatuaryBot(self.service, self.store, **bot_kwargs)
        self.task = asyncio.create_task(self.bot.start(self.standin.token))
        await until(self.bot.is_ready, what="the restarted bot to be ready")


async def until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "a condition") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def store(settings_factory):
    from storage import open_store

    s = open_store(settings_factory())
    yield s
    s.close()


@pytest.fixture
def service(service_factory, store):
    return service_factory(recorder=store, preview_frames=4)


def model_service(folder, store):
    """An in-process service on the model folder `folder`, recording in `store`: what a test module's
    own `service` fixture returns when it needs another model than the tiny one (close it after)."""
    from core.generator import Generator
    from core.loader import load_model
    from core.service import InProcessJobService

    return InProcessJobService(Generator(load_model(str(folder), device="cpu")), store, preview_frames=2)


@pytest.fixture
def discord_run(store, service):
    """discord_run(scenario, standin=..., **bot_kwargs): run `async scenario(d)` against a fresh stand-in."""
    from bot.client import StatuaryBot

    def run(scenario: Callable[[Discord], Awaitable[None]], *, standin: dict[str, Any] | None = None,
            timeout: float = 90.0, **bot_kwargs: Any) -> None:
        async def main() -> None:
            st = DiscordStandin(**(standin or {}))
            await st.start()
            bot_kwargs.setdefault("progress_interval", 0.1)
            bot_kwargs.setdefault("guild_ready_timeout", 0.05)  # the stand-in sends no GUILD_CREATE to wait for
            d = Discord(st, StatuaryBot(service, store, **bot_kwargs), store, service)
            d.task = asyncio.create_task(d.bot.start(st.token))
            try:
                await until(lambda: d.bot.is_ready() or d.task.done(), what="the bot to be ready")
                if d.task.done():
                    d.task.result()
                await asyncio.wait_for(scenario(d), timeout)
            finally:
                await d.bot.close()
                if d.task is not None:
                    try:
                        await asyncio.wait_for(d.task, 10)
                    except Exception:  # noqa: BLE001 -- the scenario's own error matters more
                        logging.getLogger(__name__).exception("bot task")
                await st.stop()

        asyncio.run(main())

    return run
