"""Progress: typed events for a callable, buildctl-style plain lines on a non-tty stderr."""

from __future__ import annotations

import kiln


def test_callable_receives_typed_events(engine, rootfs):
    events = []
    st = kiln.local("rootfs").run(["/bin/sh", "-c", "echo out-line; echo err-line >&2"]).root()
    r = engine.solve(st, locals={"rootfs": rootfs}, progress=events.append)
    types = [e.type for e in events]
    assert "vertex_started" in types and "vertex_completed" in types and "log" in types, types
    done = [e for e in events if e.type == "vertex_completed"]
    assert all(isinstance(e.duration, float) and e.vertex.startswith("sha256:") and e.name for e in done)
    logs = [e for e in events if e.type == "log"]
    assert {e.stream for e in logs} <= {"stdout", "stderr"}
    assert b"out-line" in b"".join(e.data for e in logs if e.stream == "stdout")
    assert b"err-line" in b"".join(e.data for e in logs if e.stream == "stderr")
    d = done[0].to_dict()
    assert d["type"] == "vertex_completed" and "data" not in d
    assert r.executed == len(done)
    # A second solve is cached and says so.
    events.clear()
    r = engine.solve(st, locals={"rootfs": rootfs}, progress=events.append)
    assert r.executed == 0
    assert sum(e.type == "vertex_cached" for e in events) == r.cached


def test_plain_display_on_non_tty(engine, rootfs, capsys):
    st = kiln.local("rootfs").run(["/bin/sh", "-c", "echo visible-line"]).root()
    engine.solve(st, locals={"rootfs": rootfs})  # progress defaults to "auto"
    err = capsys.readouterr().err
    assert "#1 " in err
    assert "DONE" in err
    assert "visible-line" in err
    assert "\x1b[" not in err  # no cursor movement on a non-terminal


def test_quiet_prints_nothing(engine, rootfs, capsys):
    engine.solve(kiln.local("rootfs").run(["/bin/true"]), locals={"rootfs": rootfs}, progress="quiet")
    assert capsys.readouterr().err == ""


def test_auto_is_a_live_view_on_a_terminal(rootfs, tmp_path):
    # A child process whose stderr is a pseudo-terminal gets the redrawn tty view.
    import os
    import pty
    import subprocess
    import sys

    script = (
        "import kiln, sys\n"
        f"with kiln.Engine({str(tmp_path / 'root')!r}) as e:\n"
        "    e.solve(kiln.local('rootfs').run(['/bin/sh', '-c', 'echo tty-line']),\n"
        f"            locals={{'rootfs': {str(rootfs)!r}}})\n"
    )
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=slave, stdout=subprocess.DEVNULL)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO once the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait() == 0, out.decode(errors="replace")
    text = out.decode(errors="replace")
    assert " => #1 " in text, text
    assert "\x1b[" in text, text  # the view redraws itself in place
