"""asyncio glue of ``Engine.solve_async``: awaits the native solve and, when the awaiting task is
cancelled, cancels the solve and waits until its containers are killed and its mounts released
before the ``CancelledError`` propagates."""

from __future__ import annotations

import asyncio
from typing import Any


async def run(task: Any) -> Any:
    """Awaits ``task`` (a ``kiln._native._SolveTask``); on cancellation cleans it up first."""
    try:
        return await task.result()
    except asyncio.CancelledError:
        await task.cancel()
        raise
