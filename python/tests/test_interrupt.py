"""Ctrl-C during a RUN, an exception in a progress callback, or cancelling a solve_async task
cancels the build: once the cancellation reaches the caller the container is killed and no mount
of the root is left (checked right away, no waiting). Only the cancelled solve is waited for: another
solve running on the same engine keeps running."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest

import kiln
from conftest import mounts_under


def sleepers(secs: bytes = b"1000") -> list:
    """Pids running `sleep SECS` (each test sleeps its own time so others' containers don't count)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().split(b"\0")[:2] == [b"sleep", secs]:
                        found.append(pid)
            except OSError:
                pass
    return found


def test_keyboard_interrupt_cancels_the_run(engine, rootfs):
    assert threading.current_thread() is threading.main_thread()
    started = threading.Event()
    main_ident = threading.main_thread().ident

    def interrupter():
        started.wait(60)
        signal.pthread_kill(main_ident, signal.SIGINT)

    helper = threading.Thread(target=interrupter, daemon=True)
    helper.start()

    def on_event(e: kiln.ProgressEvent) -> None:
        if e.type == "log" and b"started" in e.data:
            started.set()

    st = kiln.local("rootfs").run(["/bin/sh", "-c", "echo started; exec sleep 1000"])
    with pytest.raises(KeyboardInterrupt):
        engine.solve(st, locals={"rootfs": rootfs}, progress=on_event)
    helper.join(5)
    assert started.is_set()
    assert engine.running_containers() == []
    assert mounts_under(engine.root) == []
    assert sleepers() == []
    # The engine stays usable after a cancelled solve.
    r = engine.solve(kiln.local("rootfs").run(["/bin/true"]), locals={"rootfs": rootfs}, progress="quiet")
    assert r.executed >= 1


def test_exception_in_progress_callback_cancels(engine, rootfs):
    class Stop(Exception):
        pass

    def on_event(e):
        if e.type == "log":
            raise Stop()

    st = kiln.local("rootfs").run(["/bin/sh", "-c", "echo started; exec sleep 1000"])
    with pytest.raises(Stop):
        engine.solve(st, locals={"rootfs": rootfs}, progress=on_event)
    assert mounts_under(engine.root) == []
    assert sleepers() == []


def test_cancelling_solve_async_task_cleans_up_before_cancelled_error(engine, rootfs):
    st = kiln.local("rootfs").run(["/bin/sh", "-c", "echo started; exec sleep 1000"])

    async def main() -> None:
        started = asyncio.Event()

        def on_event(e: kiln.ProgressEvent) -> None:
            if e.type == "log" and b"started" in e.data:
                started.set()

        task = asyncio.ensure_future(engine.solve_async(st, locals={"rootfs": rootfs}, progress=on_event))
        await asyncio.wait_for(started.wait(), 60)
        assert engine.running_containers() != []
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The CancelledError arrives only after the solve's cleanup: nothing is left right now.
        assert engine.running_containers() == []
        assert mounts_under(engine.root) == []
        assert sleepers() == []
        # The engine stays usable.
        r = await engine.solve_async(kiln.local("rootfs").run(["/bin/true"]), locals={"rootfs": rootfs}, progress="quiet")
        assert r.executed >= 1

    asyncio.run(main())


def test_cancelling_one_solve_does_not_wait_for_another(engine, rootfs):
    """A blocking solve cancelled (exception in its progress callback) while a solve_async task
    runs on the same engine returns with its own container gone and the other one still running;
    then cancelling the task cleans that one up too."""
    loop = asyncio.new_event_loop()
    other_started = threading.Event()
    other = {}

    def run_other() -> None:
        async def main() -> None:
            def on_event(e: kiln.ProgressEvent) -> None:
                if e.type == "log" and b"other-started" in e.data:
                    other_started.set()

            st = kiln.local("rootfs").run(["/bin/sh", "-c", "echo other-started; exec sleep 1011"])
            other["task"] = asyncio.ensure_future(engine.solve_async(st, locals={"rootfs": rootfs}, progress=on_event))
            try:
                await other["task"]
            except asyncio.CancelledError:
                other["cancelled"] = True

        loop.run_until_complete(main())

    thread = threading.Thread(target=run_other, daemon=True)
    thread.start()
    try:
        assert other_started.wait(60), "the other solve's RUN did not start"

        class Stop(Exception):
            pass

        def on_event(e: kiln.ProgressEvent) -> None:
            if e.type == "log" and b"ours-started" in e.data:
                assert len(engine.running_containers()) == 2
                raise Stop()

        ours = kiln.local("rootfs").run(["/bin/sh", "-c", "echo ours-started; exec sleep 1012"])
        with pytest.raises(Stop):
            engine.solve(ours, locals={"rootfs": rootfs}, progress=on_event)
        # Ours is cleaned up; the other solve's container is still running at this moment.
        assert sleepers(b"1012") == []
        assert len(sleepers(b"1011")) == 1
        assert len(engine.running_containers()) == 1
    finally:
        loop.call_soon_threadsafe(lambda: other["task"].cancel() if "task" in other else None)
        thread.join(60)
    assert not thread.is_alive()
    assert other.get("cancelled")
    assert engine.running_containers() == []
    assert mounts_under(engine.root) == []
    assert sleepers(b"1011") == []
    loop.close()
