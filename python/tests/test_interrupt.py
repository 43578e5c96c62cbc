"""Ctrl-C during a RUN cancels the build: container killed, no mount of the root left."""

from __future__ import annotations

import os
import signal
import threading

import pytest

import kiln
from conftest import mounts_under


def sleepers() -> list:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().split(b"\0")[:2] == [b"sleep", b"1000"]:
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
