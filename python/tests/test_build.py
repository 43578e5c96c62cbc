"""Client-side builds (``Engine.build``, ``Engine.build_async``) with real runc and overlayfs:
inner solves, reads from refs, a second graph chosen from a file's content, the set-once result,
the function's exception raised as is, coroutine functions, no leaks after failing builds, cache
imports reaching inner solves, and reads confined to the ref."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import stat
import threading

import pytest

import kiln
from conftest import mounts_under, read


def sh(script: str) -> kiln.State:
    return kiln.local("rootfs").run(["/bin/sh", "-c", script]).root()


def first_graph() -> kiln.State:
    return sh(
        "mkdir -p /data/sub && echo second > /choice && printf 0123456789 > /data/digits.txt"
        " && echo x > /data/notes.log && ln -s digits.txt /data/link && chmod 0640 /data/notes.log"
    )


def footprint(engine: kiln.Engine):
    """Snapshots on disk (committed, in progress, being removed, mount points), mounts under the
    root and containers: what a leak changes."""
    root = pathlib.Path(engine.root)
    snaps = sorted(str(p.relative_to(root)) for p in root.glob("snapshots/*/*"))
    snaps += sorted(str(p.relative_to(root)) for p in root.glob("snapshots/*/.mnt/*"))
    return snaps, len(mounts_under(root)), engine.running_containers()


def test_reads_choose_the_second_graph_which_is_exported(engine, rootfs, tmp_path):
    out = tmp_path / "out"
    events = []
    seen = {}

    def fn(ctx: kiln.BuildContext):
        r = ctx.solve(first_graph())
        assert isinstance(r, kiln.Ref) and not r.is_scratch
        choice = r.read_file("/choice")
        assert choice == b"second\n"
        assert r.read_file("data/digits.txt", offset=3, length=4) == b"3456"
        assert r.read_file("/data/digits.txt", 8) == b"89"
        assert r.read_file("/data/digits.txt", 50, 4) == b""
        assert r.read_file("/data/link") == b"0123456789", "symlinks are followed inside"

        entries = r.read_dir("/data", include_pattern="*.txt")
        assert [e.name for e in entries] == ["digits.txt"]
        e = entries[0]
        assert (e.path, e.size, e.is_file(), stat.S_ISREG(e.mode)) == ("/data/digits.txt", 10, True, True)
        assert e.mtime > 1_000_000_000 and e.mtime_ns > 1_000_000_000 * 10**9
        everything = r.read_dir("/data")
        assert [x.name for x in everything] == ["digits.txt", "link", "notes.log", "sub"]
        link, notes, sub = everything[1:]
        assert link.is_symlink() and link.link_target == "digits.txt"
        assert stat.S_IMODE(notes.mode) == 0o640 and notes.link_target is None
        assert sub.is_dir() and sub.size == 0

        st = r.stat_file("/data/notes.log")
        assert (st.name, st.path, st.size, st.uid, st.gid) == ("notes.log", "/data/notes.log", 2, 0, 0)
        with pytest.raises(kiln.NotFoundError) as info:
            r.stat_file("/data/nope")
        missing = info.value
        assert isinstance(missing, kiln.FileOpError) and isinstance(missing, kiln.KilnError)
        assert isinstance(missing, FileNotFoundError)
        assert (missing.path, missing.kind) == ("/data/nope", "file_op")
        assert "/data/nope" in str(missing)
        with pytest.raises(kiln.NotFoundError):
            r.read_file("/nope/deeper")
        with pytest.raises(kiln.NotFoundError):
            r.read_dir("/nope")
        with pytest.raises(kiln.FileOpError) as info:
            r.read_file("/data")
        assert not isinstance(info.value, kiln.NotFoundError)

        ctx.warn("first-graph", "chose the second graph from /choice")
        seen["opts"] = ctx.frontend_opts
        word = choice.decode().strip()
        return sh(f"echo chosen-{word} > /result")

    res = engine.build(
        fn,
        locals={"rootfs": rootfs},
        outputs=[f"type=local,dest={out}"],
        progress=events.append,
        frontend_opts={"target": "release"},
    )
    assert read(out / "result") == "chosen-second\n"
    assert seen["opts"] == {"target": "release"}
    assert res.executed >= 2, res
    assert any(
        e.type == "warning" and e.message == "first-graph: chose the second graph from /choice" for e in events
    ), events
    started = [e.name for e in events if e.type == "vertex_started"]
    assert any("echo second" in n for n in started) and any("chosen-second" in n for n in started), started
    assert mounts_under(engine.root) == []


def test_the_result_is_set_once(engine, rootfs, tmp_path):
    out = tmp_path / "out"

    def sets_twice(ctx):
        r = ctx.solve(sh("echo first > /which"))
        ctx.set_result(r)
        with pytest.raises(kiln.DefinitionError, match="result already set"):
            ctx.set_result(ctx.solve(sh("echo second > /which")))

    engine.build(sets_twice, locals={"rootfs": rootfs}, outputs=[f"type=local,dest={out}"], progress="quiet")
    assert read(out / "which") == "first\n", "the first result stands"

    def sets_then_returns(ctx):
        r = ctx.solve(sh("echo first > /which"))
        ctx.set_result(r)
        return r

    with pytest.raises(kiln.DefinitionError, match="result already set"):
        engine.build(sets_then_returns, locals={"rootfs": rootfs}, progress="quiet")

    # set_result takes a State too (solved), with an image config of its own.
    out2 = tmp_path / "out2"
    engine.build(
        lambda ctx: ctx.set_result(kiln.scratch().mkfile("/set", "by state"), {"cmd": ["/set"]}),
        outputs=[f"type=local,dest={out2}"],
        progress="quiet",
    )
    assert read(out2 / "set") == "by state"


def test_returning_nothing_exports_the_empty_filesystem(engine, tmp_path):
    out = tmp_path / "out"
    res = engine.build(lambda ctx: None, outputs=[f"type=local,dest={out}"], progress="quiet")
    assert out.is_dir() and list(out.iterdir()) == []
    assert (res.executed, res.cached) == (0, 0)


class Boom(Exception):
    pass


def test_an_exception_in_the_function_fails_the_build_with_it(engine, rootfs):
    err = Boom("the frontend says no")
    kept = []

    def fn(ctx):
        r = ctx.solve(sh("echo hi > /x"))
        assert r.read_file("/x") == b"hi\n"
        kept.append(r)
        raise err

    with pytest.raises(Boom) as info:
        engine.build(fn, locals={"rootfs": rootfs}, progress="quiet")
    assert info.value is err
    # Raised after the cleanup: the ref is released, its view unmounted.
    assert mounts_under(engine.root) == []
    with pytest.raises(kiln.UnsupportedError, match="build has ended"):
        kept[0].read_file("/x")

    # A kiln error of an inner solve, not caught, is the build's error: the same object too.
    caught = []

    def failing_step(ctx):
        try:
            ctx.solve(sh("exit 3"))
        except kiln.ExecError as e:
            caught.append(e)
            raise

    with pytest.raises(kiln.ExecError) as info:
        engine.build(failing_step, locals={"rootfs": rootfs}, progress="quiet")
    assert info.value is caught[0] and info.value.exit_code == 3

    with pytest.raises(TypeError, match="returns a kiln.State"):
        engine.build(lambda ctx: 42, progress="quiet")

    # An exception of a progress callable cancels the build and is what the build raises.
    def bad_progress(e):
        raise Boom("from progress")

    with pytest.raises(Boom, match="from progress"):
        engine.build(lambda ctx: ctx.solve(sh("echo p > /p")), locals={"rootfs": rootfs}, progress=bad_progress)
    assert engine.running_containers() == []
    assert mounts_under(engine.root) == []


def test_a_coroutine_function_awaits_the_async_methods(engine, rootfs, tmp_path):
    out = tmp_path / "out"

    async def fn(ctx):
        a, b = await asyncio.gather(
            ctx.solve_async(sh("echo one > /f")), ctx.solve_async(sh("mkdir /d && echo two > /d/g"))
        )
        await a.evaluate_async()
        one = await a.read_file_async("/f")
        two = await b.read_file_async("/d/g", 0, 3)
        names = [e.name for e in await b.read_dir_async("/d", "g*")]
        st = await b.stat_file_async("/d/g")
        with pytest.raises(kiln.NotFoundError):
            await a.read_file_async("/missing")
        return kiln.scratch().mkfile("/got", one + two + ",".join(names).encode() + str(st.size).encode())

    engine.build(fn, locals={"rootfs": rootfs}, outputs=[f"type=local,dest={out}"], progress="quiet")
    assert read(out / "got") == "one\ntwog4"


def test_ctx_is_usable_from_several_threads(engine, rootfs, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    def fn(ctx):
        def one(i):
            return ctx.solve(sh(f"echo {i} > /n")).read_file("/n")

        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(one, range(4)))
        assert got == [f"{i}\n".encode() for i in range(4)]
        return kiln.scratch().mkfile("/all", b"".join(got))

    engine.build(fn, locals={"rootfs": rootfs}, outputs=[f"type=local,dest={tmp_path / 'out'}"], progress="quiet")
    assert read(tmp_path / "out" / "all") == "0\n1\n2\n3\n"


def test_a_build_failing_before_its_function_runs_does_not_call_it(engine):
    called = []
    with pytest.raises(kiln.KilnError):
        engine.build(called.append, outputs=[f"type=local,dest={engine.root}/inside"], progress="quiet")
    assert called == []
    with pytest.raises(kiln.OptionError):
        engine.build(called.append, outputs=["type=nope"], progress="quiet")
    with pytest.raises(kiln.OptionError):
        engine.build(called.append, frontend_opts={"cache-imports": "not json"}, progress="quiet")
    assert called == []


def test_build_async_with_a_coroutine_or_a_plain_function(engine, rootfs, tmp_path):
    events = []

    async def coro(ctx):
        r = await ctx.solve_async(sh("echo async > /a"))
        assert await r.read_file_async("/a") == b"async\n"
        return r

    def plain(ctx):
        r = ctx.solve(sh("echo plain > /a"))
        assert r.read_file("/a") == b"plain\n"
        return r

    async def main():
        await engine.build_async(
            coro, locals={"rootfs": rootfs}, outputs=[f"type=local,dest={tmp_path / 'a'}"], progress=events.append
        )
        await engine.build_async(
            plain, locals={"rootfs": rootfs}, outputs=[f"type=local,dest={tmp_path / 'b'}"], progress="quiet"
        )
        err = Boom("async boom")

        async def raises(ctx):
            await ctx.solve_async(sh("echo x > /x"))
            raise err

        with pytest.raises(Boom) as info:
            await engine.build_async(raises, locals={"rootfs": rootfs}, progress="quiet")
        assert info.value is err

        # A blocking build cannot run a coroutine function on a loop that is already running.
        async def nothing(ctx):
            return None

        with pytest.raises(RuntimeError, match="build_async"):
            engine.build(nothing, progress="quiet")

    asyncio.run(main())
    assert read(tmp_path / "a" / "a") == "async\n"
    assert read(tmp_path / "b" / "a") == "plain\n"
    assert any(e.type == "vertex_started" for e in events)
    assert mounts_under(engine.root) == []


def test_cancelling_build_async_cleans_up(engine, rootfs):
    async def main():
        started = asyncio.Event()

        def progress(e):
            if e.type == "log" and e.data.startswith(b"begin"):
                started.set()

        async def slow(ctx):
            await ctx.solve_async(kiln.local("rootfs").run(["/bin/sh", "-c", "echo begin; exec sleep 1002"]))

        task = asyncio.ensure_future(engine.build_async(slow, locals={"rootfs": rootfs}, progress=progress))
        await asyncio.wait_for(started.wait(), 60)
        assert engine.running_containers() != []
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert engine.running_containers() == []
    assert mounts_under(engine.root) == []


def test_keyboard_interrupt_in_an_inner_solve_cancels_the_build(engine, rootfs):
    assert threading.current_thread() is threading.main_thread()
    started = threading.Event()
    main_ident = threading.main_thread().ident

    def interrupter():
        started.wait(60)
        signal.pthread_kill(main_ident, signal.SIGINT)

    helper = threading.Thread(target=interrupter, daemon=True)
    helper.start()

    def on_event(e):
        if e.type == "log" and b"begin" in e.data:
            started.set()

    def fn(ctx):
        ctx.solve(sh("echo ready > /r")).read_file("/r")
        ctx.solve(kiln.local("rootfs").run(["/bin/sh", "-c", "echo begin; exec sleep 1003"]))

    with pytest.raises(KeyboardInterrupt):
        engine.build(fn, locals={"rootfs": rootfs}, progress=on_event)
    helper.join(5)
    assert started.is_set()
    # Raised once the build cleaned up: no container, no mount left right now.
    assert engine.running_containers() == []
    assert mounts_under(engine.root) == []
    # The engine stays usable.
    assert engine.build(lambda ctx: ctx.solve(sh("true")), locals={"rootfs": rootfs}, progress="quiet")


def test_twenty_failing_builds_leak_nothing(engine, rootfs):
    graph = sh("echo leak-check > /f")
    engine.solve(graph, locals={"rootfs": rootfs}, progress="quiet")
    before = footprint(engine)
    for i in range(20):
        err = Boom(f"build {i} fails on purpose")

        def fn(ctx):
            r = ctx.solve(graph)
            assert r.read_file("/f") == b"leak-check\n"
            r.read_dir("/", "f")
            # The ref's read-only view is mounted while the build runs (so its release counts).
            assert mounts_under(engine.root) != []
            raise err

        with pytest.raises(Boom) as info:
            engine.build(fn, locals={"rootfs": rootfs}, progress="quiet")
        assert info.value is err
        assert footprint(engine) == before, f"after failing build {i}"


def test_cache_imports_reach_inner_solves(tmp_path, rootfs):
    cache = tmp_path / "cache"

    def graph():
        return sh("echo cached-step > /c").run(["/bin/sh", "-c", "cat /c > /d"]).root()

    def fn(ctx):
        r = ctx.solve(graph())
        assert r.read_file("/d") == b"cached-step\n"
        return r

    with kiln.Engine(tmp_path / "root-a") as a:
        res = a.build(
            fn,
            locals={"rootfs": rootfs},
            cache_exports=[f"type=local,dest={cache},mode=max"],
            progress="quiet",
        )
        assert res.executed >= 2
    assert (cache / "index.json").is_file()

    imports = {
        "option": dict(cache_imports=[f"type=local,src={cache}"]),
        "frontend opt": dict(frontend_opts={"cache-imports": f'[{{"Type":"local","Attrs":{{"src":"{cache}"}}}}]'}),
        "solve": {},
    }
    for how, kw in imports.items():
        events = []

        def inner(ctx):
            per_solve = [f"type=local,src={cache}"] if how == "solve" else None
            r = ctx.solve(graph(), cache_imports=per_solve)
            assert r.read_file("/d") == b"cached-step\n"
            return r

        with kiln.Engine(tmp_path / f"root-{how.replace(' ', '-')}") as b:
            res = b.build(inner, locals={"rootfs": rootfs}, progress=events.append, **kw)
        ran = [e.name for e in events if e.type == "vertex_started" and not e.name.startswith("local://")]
        assert ran == [], f"{how}: every inner vertex comes from the imported cache, ran {ran}"
        cached = [e for e in events if e.type == "vertex_cached"]
        assert len(cached) >= 2, (how, [e.to_dict() for e in events])


def test_reads_stay_inside_the_ref(engine, rootfs):
    host_has_hostname = os.path.exists("/etc/hostname")

    def fn(ctx):
        r = ctx.solve(
            sh(
                "echo inside > /etc/marker && rm -f /etc/hostname && ln -s /etc /escape"
                " && ln -s ../../../../../etc /rel && mkdir -p /a/b"
            )
        )
        # An absolute symlink to /etc is the ref's /etc; "../" never climbs above the ref's root.
        assert r.read_file("/escape/marker") == b"inside\n"
        assert r.read_file("/rel/marker") == b"inside\n"
        assert r.read_file("/a/b/../../../../../../etc/marker") == b"inside\n"
        assert r.read_file("../../etc/marker") == b"inside\n"
        if host_has_hostname:
            # The host has /etc/hostname, the ref does not: every way there stays inside.
            for p in ["/escape/hostname", "/rel/hostname", "../../../etc/hostname", "/a/../../etc/hostname"]:
                with pytest.raises(kiln.NotFoundError):
                    r.read_file(p)
                with pytest.raises(kiln.NotFoundError):
                    r.stat_file(p)
        listed = [e.name for e in r.read_dir("/escape")]
        assert "marker" in listed and "passwd" in listed and "hostname" not in listed, listed
        assert r.stat_file("/../..").is_dir()
        assert "escape" in [e.name for e in r.read_dir("/../../..")]
        (link,) = r.read_dir("/", "escape")
        assert link.is_symlink() and link.link_target == "/etc"

    engine.build(fn, locals={"rootfs": rootfs}, progress="quiet")
