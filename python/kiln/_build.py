"""Runs the function of a client-side build (``Engine.build``, ``Engine.build_async``).

The native ``_BuildTask`` has started the engine's build; it hands out the ``BuildContext``
once the build calls its function. This module calls the user's function with it, hands its
return value back (or tells the build it failed), waits until the build has finished and cleaned
up (every ref released), and then raises, in this order of precedence: the exception of a
progress callable (it cancelled the build), the exception the function raised (the same object),
or the build's own error.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Optional


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _call(fn: Any, ctx: Any) -> Any:
    """Calls ``fn(ctx)`` on this thread; a coroutine runs to completion on a new event loop."""
    out = fn(ctx)
    if inspect.isawaitable(out):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(_await(out))
        if inspect.iscoroutine(out):
            out.close()  # never awaited: no "coroutine was never awaited" warning
        raise RuntimeError(
            "Engine.build() got a coroutine function while an asyncio event loop runs in this "
            "thread: use `await engine.build_async(fn)`"
        )
    return out


def _outcome(task: Any, failure: Optional[BaseException], error: Optional[BaseException], result: Any) -> Any:
    progress_error = task.progress_error()
    if progress_error is not None:
        raise progress_error
    if failure is not None:
        raise failure
    if error is not None:
        raise error
    return result


def run(task: Any, fn: Any) -> Any:
    """``Engine.build``: ``fn`` runs on this thread; blocks until the build has cleaned up."""
    failure: Optional[BaseException] = None
    ctx = task.started_wait()  # KeyboardInterrupt: the build is cancelled and cleaned up
    if ctx is not None:
        try:
            task.finish(_call(fn, ctx))
        except BaseException as e:  # noqa: BLE001 - the build fails with whatever fn raised
            failure = e
            task.fail()
    error: Optional[BaseException] = None
    result = None
    try:
        result = task.wait()
    except BaseException as e:  # noqa: BLE001
        error = e
    return _outcome(task, failure, error, result)


async def run_async(task: Any, fn: Any) -> Any:
    """``Engine.build_async``: a coroutine ``fn`` runs on this loop, a plain one in a thread."""
    failure: Optional[BaseException] = None
    try:
        ctx = await task.started()
        if ctx is not None:
            if inspect.iscoroutinefunction(fn):
                out = await fn(ctx)
            else:
                out = await asyncio.to_thread(fn, ctx)
                if inspect.isawaitable(out):
                    out = await out
            task.finish(out)
    except BaseException as e:  # noqa: BLE001
        failure = e
        task.fail()
    if isinstance(failure, asyncio.CancelledError):
        await task.cancel()
        raise failure
    error: Optional[BaseException] = None
    result = None
    try:
        result = await task.result()
    except asyncio.CancelledError:
        await task.cancel()
        raise
    except BaseException as e:  # noqa: BLE001
        error = e
    return _outcome(task, failure, error, result)
