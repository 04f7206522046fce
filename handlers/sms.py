"""SMS: `send_sms` queues a text in the outbox; a provider adapter (not ours to write yet) delivers it.

A provider is any object with `async def send(to, text)` that raises `DeliveryError` when it
cannot deliver. It is named in the settings (`sms.provider: "package.module:factory"`, called with
`sms.options`), so adding one touches no handler. Without one, texts stay in the outbox and the log.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

from handlers.context import Context
from models.outbox import OutboxMessage


class SmsProvider(Protocol):
    async def send(self, to: str, text: str) -> None: ...


async def send_sms(ctx: Context, to: str, text: str) -> None:
    """Queue a text message. Never waits for (or fails because of) the provider."""
    await ctx.outbox.put("sms", to, "", text)


@dataclass(frozen=True, slots=True)
class SmsTransport:
    """The outbox's view of a provider."""

    provider: SmsProvider

    async def deliver(self, message: OutboxMessage) -> None:
        await self.provider.send(message.recipient, message.body)


def load_provider(path: str, options: dict[str, Any]) -> SmsProvider:
    """`package.module:factory` -> factory(**options); ValueError naming what is wrong."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"sms.provider {path!r}: expected 'package.module:factory'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"sms.provider {path!r}: {exc}") from exc
    if not callable(factory):
        raise ValueError(f"sms.provider {path!r}: {attr} is not callable")
    provider = factory(**options)
    if not callable(getattr(provider, "send", None)):
        raise ValueError(f"sms.provider {path!r}: {type(provider).__name__} has no send(to, text)")
    return provider
