"""Blocking solves release the GIL; solve_async works with asyncio.gather."""

from __future__ import annotations

import asyncio
import threading

import kiln
from conftest import read


def test_solve_releases_the_gil(engine, rootfs, tmp_path):
    # While a solve blocks in a background thread, the main thread keeps running Python code:
    # with the GIL held by the solve it would not get to count at all.
    st = kiln.local("rootfs").run(["/bin/sh", "-c", "echo done > /out"], ignore_cache=True)
    result = {}

    def worker():
        try:
            result["r"] = engine.solve(
                st.root(), locals={"rootfs": rootfs}, outputs=[f"type=local,dest={tmp_path / 'o'}"],
                progress="quiet",
            )
        except BaseException as e:  # reported below
            result["e"] = e

    t = threading.Thread(target=worker)
    t.start()
    count = 0
    while t.is_alive():
        count += 1
    t.join()
    assert "e" not in result, result.get("e")
    assert read(tmp_path / "o" / "out") == "done\n"
    assert count > 1000, count


def test_asyncio_gather_two_solves(engine, rootfs, tmp_path):
    def graph(word: str) -> kiln.State:
        return kiln.local("rootfs").run(["/bin/sh", "-c", f"echo {word} > /w"]).root()

    async def main():
        events = []
        return await asyncio.gather(
            engine.solve_async(
                graph("one"), locals={"rootfs": rootfs}, outputs=[f"type=local,dest={tmp_path / 'a'}"],
                progress=events.append,
            ),
            engine.solve_async(
                graph("two"), locals={"rootfs": rootfs}, outputs=[f"type=local,dest={tmp_path / 'b'}"],
                progress="quiet",
            ),
        ), events

    (ra, rb), events = asyncio.run(main())
    assert isinstance(ra, kiln.SolveResult) and isinstance(rb, kiln.SolveResult)
    assert read(tmp_path / "a" / "w") == "one\n"
    assert read(tmp_path / "b" / "w") == "two\n"
    assert any(e.type == "vertex_completed" for e in events)


def test_async_errors_are_typed(engine, rootfs):
    async def main():
        await engine.solve_async(
            kiln.local("rootfs").run(["/bin/sh", "-c", "exit 3"]), locals={"rootfs": rootfs}, progress="quiet"
        )

    try:
        asyncio.run(main())
    except kiln.ExecError as e:
        assert e.exit_code == 3
    else:
        raise AssertionError("expected ExecError")


def test_fork_gets_a_fresh_runtime(engine, tmp_path):
    import os

    # The parent's runtime exists (this solve created it); a forked child must build its own.
    engine.solve(kiln.scratch().mkfile("/p", "parent"), outputs=[f"type=local,dest={tmp_path / 'p'}"],
                 progress="quiet")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with kiln.Engine(tmp_path / "child-root") as child:
                child.solve(kiln.scratch().mkfile("/c", "child"), outputs=[f"type=local,dest={tmp_path / 'c'}"],
                            progress="quiet")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert read(tmp_path / "c" / "c") == "child"


def test_closed_engine_releases_the_root_as_soon_as_solve_returns(tmp_path):
    # No engine handle outlives a finished solve: a new engine opens the root right away.
    st = kiln.scratch().mkfile("/a", "a")
    for _ in range(3):
        with kiln.Engine(tmp_path / "root") as e:
            e.solve(st, progress="quiet")

    async def main():
        for _ in range(3):
            with kiln.Engine(tmp_path / "root") as e:
                await e.solve_async(st, progress="quiet")

    asyncio.run(main())
