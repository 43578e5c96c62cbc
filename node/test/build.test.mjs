// Client-side builds from JavaScript (`engine.build(fn, options)`, BuildKit's LLB bridge): inner
// solves, reads from refs (whole, ranged, directory listings with a pattern, stats, missing paths),
// a second graph chosen from a file's content, the set-once result, the function's own error
// failing the build, AbortSignal, no leaks after failing builds, cache imports reaching inner
// solves, and reads confined to the ref. Every wait is bounded (test timeouts and `within`).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { kiln, base, repo, rootfsDir, tempDir, mountedUnder } from './helpers.mjs'

const locals = () => ({ rootfs: rootfsDir() })
const sh = (script) => ['/bin/sh', '-c', script]
const LONG = { timeout: 300_000 }

// One temp dir for the whole file (removed at exit), a fresh subdirectory per use.
const work = tempDir('kiln-node-build-')
let made = 0
const fresh = (name) => join(work, `${name}-${made++}`)
const newEngine = () => new kiln.Engine({ root: fresh('root') })

/** `p`, or a rejection naming `what` after `ms`. */
async function within(ms, p, what) {
  let timer
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([p, limit])
  } finally {
    clearTimeout(timer)
  }
}

/** Snapshot directories on disk (every snapshotter of the root), including mountpoints. */
function snapshotCount(root) {
  const dir = join(root, 'snapshots')
  if (!existsSync(dir)) return 0
  let n = 0
  for (const kind of readdirSync(dir)) {
    for (const name of readdirSync(join(dir, kind))) {
      n += 1
      if (name === 'mnt') n += readdirSync(join(dir, kind, name)).length
    }
  }
  return n
}

/** Snapshots, mounts under the root (/proc/self/mountinfo) and containers: what a leak changes. */
function footprint(e) {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(e.root)).length
  return { snapshots: snapshotCount(e.root), mounts, containers: e.runningContainers().length }
}

const firstGraph = () =>
  base()
    .run(
      sh(
        'mkdir -p /data/sub && echo second > /choice && printf 0123456789 > /data/digits.txt' +
          ' && echo x > /data/notes.log && ln -s digits.txt /data/link && chmod 0640 /data/notes.log',
      ),
    )
    .root()

test('a build solves, reads, chooses the second graph from a file and exports it', LONG, async () => {
  const e = newEngine()
  const out = fresh('out')
  const events = []
  let ticks = 0
  const timer = setInterval(() => ticks++, 20)
  let seen
  try {
    const res = await within(
      240_000,
      e.build(
        async (ctx) => {
          assert.ok(ctx instanceof kiln.BuildContext)
          assert.deepEqual(ctx.frontendOpts, { mode: 'fast' })
          const r = await ctx.solve(firstGraph())
          assert.ok(r instanceof kiln.Ref)
          const choice = await r.readFile('/choice')
          assert.ok(Buffer.isBuffer(choice))
          assert.equal(choice.toString(), 'second\n')
          assert.equal((await r.readFile('data/digits.txt', { offset: 3, length: 4 })).toString(), '3456')
          assert.equal((await r.readFile('/data/digits.txt', { offset: 8 })).toString(), '89')
          assert.equal((await r.readFile('/data/digits.txt', { length: 2 })).toString(), '01')
          assert.equal((await r.readFile('/data/digits.txt', { offset: 50, length: 4 })).length, 0)
          assert.equal((await r.readFile('/data/link')).toString(), '0123456789', 'symlinks are followed inside')
          const txt = await r.readDir('/data', { includePattern: '*.txt' })
          assert.deepEqual(
            txt.map((d) => d.name),
            ['digits.txt'],
          )
          assert.equal(txt[0].path, 'digits.txt')
          assert.equal(txt[0].size, 10)
          assert.ok(txt[0].isFile && !txt[0].isDir && !txt[0].isSymlink)
          assert.ok(txt[0].mtimeMs > 1_000_000_000_000, `mtimeMs ${txt[0].mtimeMs}`)
          assert.equal(typeof txt[0].mtimeNs, 'bigint')
          const all = await r.readDir('/data')
          assert.deepEqual(
            all.map((d) => d.name),
            ['digits.txt', 'link', 'notes.log', 'sub'],
          )
          assert.ok(all[1].isSymlink)
          assert.equal(all[1].linkTarget, 'digits.txt')
          assert.equal(all[2].mode & 0o7777, 0o640)
          assert.ok(all[3].isDir && all[3].size === 0)
          const st = await r.statFile('/data/notes.log')
          assert.equal(st.name, 'notes.log')
          assert.equal(st.size, 2)
          assert.equal(st.uid, 0)
          assert.equal(st.linkTarget, undefined)
          await assert.rejects(r.statFile('/data/nope'), (err) => {
            assert.equal(err.code, 'KILN_NOT_FOUND')
            assert.equal(err.kind, 'file_op')
            assert.equal(err.path, '/data/nope')
            assert.ok(kiln.isKilnError(err))
            return true
          })
          await assert.rejects(r.readFile('/nope/deeper'), { code: 'KILN_NOT_FOUND' })
          await assert.rejects(r.readDir('/nope'), { code: 'KILN_NOT_FOUND' })
          await assert.rejects(r.readFile('/data'), { code: 'KILN_FILE_OP' })
          assert.throws(() => r.readFile('/choice', { offset: -1 }), { code: 'KILN_OPTION_INVALID' })
          await r.evaluate()
          ctx.warn('first-graph', 'chose the second graph from /choice')
          const word = choice.toString().trim()
          seen = r
          return base().run(sh(`echo chosen-${word} > /result`)).root()
        },
        {
          locals: locals(),
          outputs: [`type=local,dest=${out}`],
          frontendOpts: { mode: 'fast' },
          onProgress: (ev) => events.push(ev),
        },
      ),
      'build',
    )
    assert.ok(res.executed >= 2, JSON.stringify(res))
  } finally {
    clearInterval(timer)
  }
  assert.equal(readFileSync(join(out, 'result'), 'utf8'), 'chosen-second\n')
  assert.ok(ticks >= 2, `the event loop ticked only ${ticks} times during the build`)
  // Progress calls are queued to the JS thread; let the queue drain.
  await new Promise((r) => setImmediate(r))
  assert.ok(
    events.some((ev) => ev.type === 'warning' && ev.message === 'first-graph: chose the second graph from /choice'),
    JSON.stringify(events.filter((ev) => ev.type === 'warning')),
  )
  const started = events.filter((ev) => ev.type === 'vertex_started').map((ev) => ev.name)
  assert.ok(started.some((n) => n.includes('echo second')) && started.some((n) => n.includes('chosen-')), `${started}`)
  // Refs do not outlive their build: a clear rejection, nothing mounted.
  await assert.rejects(within(30_000, seen.readFile('/choice'), 'read after the build'), (err) => {
    assert.equal(err.code, 'KILN_UNSUPPORTED')
    assert.match(err.message, /build has ended/)
    return true
  })
  assert.ok(!mountedUnder(e.root), 'a view of a ref is still mounted')
  assert.deepEqual(e.runningContainers(), [])
  e.close()
})

test('the result is set once: a second setResult, or returning after one, is an error', LONG, async () => {
  const e = newEngine()
  const out = fresh('out')
  let second
  const res = await within(
    120_000,
    e.build(
      async (ctx) => {
        await ctx.setResult(kiln.scratch().mkfile('/first', 'one'), { imageConfig: { cmd: ['/first'] } })
        const r = await ctx.solve(kiln.scratch().mkfile('/second', 'two'))
        second = await ctx.setResult(r).then(
          () => null,
          (err) => err,
        )
      },
      { outputs: [`type=local,dest=${out}`] },
    ),
    'build',
  )
  assert.ok(res.executed >= 1)
  assert.ok(second, 'the second setResult must reject')
  assert.equal(second.code, 'KILN_DEFINITION')
  assert.match(second.message, /result already set/)
  assert.equal(readFileSync(join(out, 'first'), 'utf8'), 'one', 'the first result stays')
  assert.ok(!existsSync(join(out, 'second')))

  await assert.rejects(
    within(
      120_000,
      e.build(async (ctx) => {
        const r = await ctx.solve(kiln.scratch().mkfile('/a', 'a'))
        await ctx.setResult(r)
        return r
      }),
      'build',
    ),
    (err) => {
      assert.equal(err.code, 'KILN_DEFINITION')
      assert.match(err.message, /result already set/)
      return true
    },
  )
  // Nothing returned or set: the empty result. A wrong return value is a TypeError.
  const empty = fresh('empty')
  await within(60_000, e.build(async () => {}, { outputs: [`type=local,dest=${empty}`] }), 'empty build')
  assert.deepEqual(readdirSync(empty), [])
  await assert.rejects(
    within(
      60_000,
      e.build(() => 42),
      'build',
    ),
    TypeError,
  )
  await assert.rejects(e.build('not a function'), TypeError)
  e.close()
})

test('an error thrown in the function fails the build with that same error', LONG, async () => {
  const e = newEngine()
  const mine = new Error('my build logic failed')
  let kept
  const err = await within(
    120_000,
    e.build(
      async (ctx) => {
        kept = await ctx.solve(base().run(sh('echo inner > /f')).root())
        assert.equal((await kept.readFile('/f')).toString(), 'inner\n')
        throw mine
      },
      { locals: locals() },
    ).then(
      () => assert.fail('the build must fail'),
      (x) => x,
    ),
    'build',
  )
  assert.equal(err, mine, 'the very error object thrown by the function')
  // The rejection comes after cleanup: nothing mounted, the ref unreadable.
  assert.ok(!mountedUnder(e.root))
  await assert.rejects(kept.readFile('/f'), { code: 'KILN_UNSUPPORTED' })
  // A synchronous throw, and a non-Error value, are passed through as they are.
  const sync = new RangeError('sync')
  await assert.rejects(
    within(
      30_000,
      e.build(() => {
        throw sync
      }),
      'build',
    ),
    (x) => x === sync,
  )
  const value = { reason: 'plain object' }
  await assert.rejects(
    within(
      30_000,
      e.build(async () => Promise.reject(value)),
      'build',
    ),
    (x) => x === value,
  )
  // A build's inner failure the function does not catch is that KilnError.
  await assert.rejects(
    within(
      120_000,
      e.build(async (ctx) => ctx.solve(base().run(sh('exit 3')).root()), { locals: locals() }),
      'build',
    ),
    (x) => x.code === 'KILN_EXEC_FAILED' && x.exitCode === 3,
  )
  assert.deepEqual(e.runningContainers(), [])
  e.close()
})

test('AbortSignal cancels the whole build; nothing is left behind', LONG, async () => {
  const e = newEngine()
  const ac = new AbortController()
  let late
  const p = e.build(
    async (ctx) => {
      const ready = await ctx.solve(base().run(sh('echo ready > /r')).root())
      await ready.readFile('/r')
      try {
        await ctx.solve(base().run(sh('echo begin; exec sleep 1000')).root())
      } catch (err) {
        late = err
        throw err
      }
    },
    {
      locals: locals(),
      signal: ac.signal,
      onProgress: (ev) => {
        if (ev.type === 'log' && ev.data.includes('begin')) ac.abort()
      },
    },
  )
  await assert.rejects(within(120_000, p, 'aborted build'), { code: 'KILN_CANCELLED' })
  assert.deepEqual(e.runningContainers(), [])
  assert.ok(!mountedUnder(e.root), 'a mount under the engine root survived the abort')
  // The function's pending solve was ended too (its rejection is handled by the wrapper).
  await within(
    30_000,
    (async () => {
      while (!late) await new Promise((r) => setTimeout(r, 10))
    })(),
    'the pending inner solve',
  )
  assert.ok(kiln.isKilnError(late), String(late))

  const pre = new AbortController()
  pre.abort()
  let called = false
  await assert.rejects(
    within(
      30_000,
      e.build(
        () => {
          called = true
        },
        { signal: pre.signal },
      ),
      'build',
    ),
    { code: 'KILN_CANCELLED' },
  )
  assert.equal(called, false, 'an already-aborted build does not call the function')
  e.close()
})

test('20 builds failing after an inner solve leave snapshots, mounts and containers as before', LONG, async () => {
  const e = newEngine()
  const graph = base().run(sh('echo leak-check > /f')).root()
  await within(120_000, e.solve(graph, { locals: locals() }), 'warm-up solve')
  const before = footprint(e)
  assert.ok(before.snapshots > 0, 'snapshots are counted on disk')
  for (let i = 0; i < 20; i++) {
    const mine = new Error(`build ${i} fails on purpose`)
    const err = await within(
      60_000,
      e
        .build(
          async (ctx) => {
            const r = await ctx.solve(graph)
            assert.equal((await r.readFile('/f')).toString(), 'leak-check\n')
            await r.readDir('/', { includePattern: 'f' })
            // The ref's read-only view is mounted while the build runs (so its release counts).
            assert.ok(mountedUnder(e.root), 'the view of the ref is mounted')
            throw mine
          },
          { locals: locals() },
        )
        .then(
          () => null,
          (x) => x,
        ),
      `build ${i}`,
    )
    assert.equal(err, mine)
    assert.deepEqual(footprint(e), before, `after failing build ${i}`)
  }
  e.close()
})

test('cache imports reach inner solves: a fresh root importing a build’s cache runs nothing', LONG, async () => {
  const cache = fresh('cache')
  const graph = () =>
    base()
      .run(sh('echo cached-step > /c'))
      .root()
      .run(sh('cat /c > /d'))
      .root()
  const a = newEngine()
  await within(
    180_000,
    a.build(async (ctx) => ctx.solve(graph()), {
      locals: locals(),
      cacheExports: [`type=local,dest=${cache},mode=max`],
    }),
    'exporting build',
  )
  a.close()
  const json = JSON.stringify([{ Type: 'local', Attrs: { src: cache } }])
  const ways = [
    ['cacheImports option', { cacheImports: [`type=local,src=${cache}`] }, undefined],
    ['cache-imports frontend option', { frontendOpts: { 'cache-imports': json } }, undefined],
    ['ctx.solve cacheImports', {}, { cacheImports: [`type=local,src=${cache}`] }],
  ]
  for (const [how, opts, req] of ways) {
    const b = newEngine()
    const events = []
    const out = fresh('out')
    const res = await within(
      180_000,
      b.build(
        async (ctx) => {
          const r = await ctx.solve(graph(), req)
          assert.equal((await r.readFile('/d')).toString(), 'cached-step\n')
          return r
        },
        { locals: locals(), outputs: [`type=local,dest=${out}`], onProgress: (ev) => events.push(ev), ...opts },
      ),
      how,
    )
    await new Promise((r) => setImmediate(r))
    // Vertices of the graph (op digests), not the exporter's status; local sources are checked.
    const ran = events
      .filter((ev) => ev.type === 'vertex_started' && ev.vertex.startsWith('sha256:'))
      .map((ev) => ev.name)
      .filter((n) => !n.startsWith('local://'))
    assert.deepEqual(ran, [], `${how}: every inner vertex comes from the imported cache`)
    const cached = events.filter((ev) => ev.type === 'vertex_cached')
    assert.ok(cached.length >= 2, `${how}: ${JSON.stringify(events)}`)
    assert.equal(res.executed, 0, how)
    assert.equal(readFileSync(join(out, 'd'), 'utf8'), 'cached-step\n')
    b.close()
  }
})

test('reads stay inside the ref: a symlink to /etc and ../ paths', LONG, async () => {
  const e = newEngine()
  const hostHasHostname = existsSync('/etc/hostname')
  await within(
    120_000,
    e.build(
      async (ctx) => {
        const st = base()
          .run(
            sh(
              'echo inside > /etc/marker && rm -f /etc/hostname && ln -s /etc /escape' +
                ' && ln -s ../../../../../etc /rel && mkdir -p /a/b',
            ),
          )
          .root()
        const r = await ctx.solve(st)
        for (const p of ['/escape/marker', '/rel/marker', '/a/b/../../../../../../etc/marker', '../../etc/marker']) {
          assert.equal((await r.readFile(p)).toString(), 'inside\n', p)
        }
        if (hostHasHostname) {
          for (const p of ['/escape/hostname', '/rel/hostname', '../../../etc/hostname', '/a/../../etc/hostname']) {
            await assert.rejects(r.readFile(p), { code: 'KILN_NOT_FOUND' }, p)
            await assert.rejects(r.statFile(p), { code: 'KILN_NOT_FOUND' }, p)
          }
        }
        const listed = (await r.readDir('/escape')).map((d) => d.name)
        assert.ok(listed.includes('marker') && listed.includes('passwd'), `${listed}`)
        assert.ok(!listed.includes('hostname'), `${listed}`)
        assert.ok((await r.statFile('/../..')).isDir)
        const rootNames = (await r.readDir('/../../..')).map((d) => d.name)
        assert.ok(rootNames.includes('escape'), `the ref's root: ${rootNames}`)
        const links = await r.readDir('/', { includePattern: 'escape' })
        assert.equal(links[0].linkTarget, '/etc')
      },
      { locals: locals() },
    ),
    'build',
  )
  assert.ok(!mountedUnder(e.root))
  e.close()
})

test('inner solves run concurrently; two builds share one engine; a ctx used late rejects', LONG, async () => {
  const e = newEngine()
  const outs = [fresh('out'), fresh('out')]
  const shared = base().run(sh('echo shared > /s')).root()
  const late = []
  const builds = outs.map((out, i) =>
    e.build(
      async (ctx) => {
        late.push(ctx)
        const [a, b] = await Promise.all([
          ctx.solve(shared),
          ctx.solve(shared.run(sh(`cat /s > /mine && echo ${i} >> /mine`)).root()),
        ])
        assert.equal((await a.readFile('/s')).toString(), 'shared\n')
        return b
      },
      { locals: locals(), outputs: [`type=local,dest=${out}`] },
    ),
  )
  await within(180_000, Promise.all(builds), 'two builds')
  outs.forEach((out, i) => assert.equal(readFileSync(join(out, 'mine'), 'utf8'), `shared\n${i}\n`))
  await assert.rejects(within(30_000, late[0].solve(shared), 'late solve'), { code: 'KILN_UNSUPPORTED' })
  assert.ok(!mountedUnder(e.root))
  e.close()
})

test('refs and contexts kept after the build do not keep the process alive', LONG, () => {
  // A child keeps the build's Ref and BuildContext (which hold the build's session, and so its
  // progress sink) reachable after the build and must still exit on its own.
  const script = `
    const kiln = require(${JSON.stringify(join(repo, 'node', 'index.js'))})
    const e = new kiln.Engine({ root: ${JSON.stringify(fresh('root'))} })
    globalThis.kept = []
    e.build(async (ctx) => {
      kept.push(ctx)
      const r = await ctx.solve(kiln.scratch().mkfile('/a', 'a'))
      kept.push(r)
      return r
    }, { onProgress: () => {} }).then(() => { e.close(); process.stdout.write('built') },
      (err) => { console.log(String(err)); process.exit(3) })
  `
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 })
  assert.equal(r.signal, null, 'the child did not exit on its own within 60 s')
  assert.equal(r.status, 0, r.stdout + r.stderr)
  assert.equal(r.stdout, 'built')
})
