// Engine behaviour from JavaScript: graph round trip, concurrent solves, a responsive event loop,
// progress events, AbortSignal cancellation without leaks, disk usage and prune.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { kiln, base, newEngine, rootfsDir, tempDir, mountedUnder } from './helpers.mjs'

const locals = () => ({ rootfs: rootfsDir() })

test('graph builders marshal deterministically and round-trip through bytes', () => {
  const mk = () =>
    kiln
      .scratch()
      .mkdir('/a', { mode: 0o750, makeParents: true })
      .mkfile('/a/f', 'data')
      .symlink('/a/f', '/a/l')
      .withEnv('K', 'V')
      .withCwd('/a')
      .withUser('nobody')
      .withCustomName('files')
  const s = mk()
  assert.equal(s.cwd, '/a')
  assert.equal(s.user, 'nobody')
  assert.deepEqual(s.env, { K: 'V' })
  // The getter keeps the order env was set in (not sorted, not hashed), as Python and C do.
  const ordered = s.withEnv('Z', '1').withEnv('A', '2').withEnv('M', '3')
  assert.deepEqual(Object.keys(ordered.env), ['K', 'Z', 'A', 'M'])
  assert.deepEqual(s.toBytes(), mk().toBytes())
  const def = kiln.Definition.fromBytes(s.toBytes())
  assert.deepEqual(def.toBytes(), s.toBytes())
  assert.match(def.digest, /^sha256:[0-9a-f]{64}$/)
  const ex = base().run(['/bin/true'], {
    mounts: [
      kiln.mount('/out', kiln.scratch()),
      kiln.cacheMount('/cache', { id: 'c1', sharing: 'locked' }),
      kiln.tmpfsMount('/tmp', { size: 1 << 20 }),
      kiln.secretMount('/run/secrets/token', { id: 'token' }),
    ],
    env: { B: '2', A: '1' },
    cwd: '/w',
    readonlyRootfs: false,
    network: 'none',
    user: 'root',
    customName: 'run-it',
  })
  assert.ok(ex.mountOutput('/out') instanceof kiln.State)
  assert.equal(ex.mountOutput('/cache'), null)
  assert.ok(kiln.merge([ex.root(), kiln.scratch().mkdir('/m')]).toBytes().length > 0)
  assert.ok(kiln.scratch().isScratch)
  assert.ok(kiln.ociLayout('/tmp/layout', { tag: 'v1' }).toBytes().length > 0)
  assert.ok(kiln.image('busybox').toBytes().length > 0)
  assert.ok(kiln.git('https://example.invalid/r.git', 'main').toBytes().length > 0)
})

test('files, mounts, env and secrets reach the container; outputs land on disk', async () => {
  const e = newEngine()
  const out = join(tempDir(), 'out')
  const st = base()
    .withEnv('GREETING', 'hi')
    .run(['/bin/sh', '-c', 'mkdir -p /out && echo "$GREETING $EXTRA" > /out/env && wc -c < /run/secrets/tok > /out/secret-len'], {
      env: { EXTRA: 'there' },
      mounts: [kiln.secretMount('/run/secrets/tok', { id: 'tok' }), kiln.cacheMount('/var/cache')],
    })
    .root()
  const r = await e.solve(st, { locals: locals(), secrets: { tok: kiln.secretValue('abc') }, outputs: [`type=local,dest=${out}`] })
  assert.ok(r.executed >= 1)
  assert.equal(readFileSync(join(out, 'out/env'), 'utf8'), 'hi there\n')
  assert.equal(readFileSync(join(out, 'out/secret-len'), 'utf8').trim(), '3')
  assert.ok(e.workers().length >= 1)
  assert.ok((await e.diskUsage()).length >= 1)
  const p = await e.prune({ all: true })
  assert.ok(p.removed >= 1, JSON.stringify(p))
  assert.equal((await e.diskUsage()).length, 0)
  assert.ok(!mountedUnder(e.root))
  e.close()
})

test('two concurrent solves from one process both succeed', async () => {
  const e = newEngine()
  const d1 = join(tempDir(), 'o1')
  const d2 = join(tempDir(), 'o2')
  const mk = (n) => base().run(['/bin/sh', '-c', `sleep 0.3; echo ${n} > /n`]).root()
  const [r1, r2] = await Promise.all([
    e.solve(mk('one'), { locals: locals(), outputs: [`type=local,dest=${d1}`] }),
    e.solve(mk('two'), { locals: locals(), outputs: [`type=local,dest=${d2}`] }),
  ])
  assert.ok(r1.executed >= 1 && r2.executed >= 1)
  assert.equal(readFileSync(join(d1, 'n'), 'utf8'), 'one\n')
  assert.equal(readFileSync(join(d2, 'n'), 'utf8'), 'two\n')
  e.close()
})

test('the event loop keeps ticking while a RUN sleeps in the container; progress events arrive', async () => {
  const e = newEngine()
  let ticks = 0
  const timer = setInterval(() => ticks++, 20)
  const events = []
  try {
    await e.solve(base().run(['/bin/sh', '-c', 'echo napping; sleep 1']).root(), {
      locals: locals(),
      onProgress: (ev) => events.push(ev),
    })
  } finally {
    clearInterval(timer)
  }
  assert.ok(ticks >= 5, `setInterval ticked only ${ticks} times during the solve`)
  // Progress calls are queued to the JS thread; let the queue drain.
  await new Promise((r) => setImmediate(r))
  const types = new Set(events.map((ev) => ev.type))
  for (const t of ['vertex_started', 'vertex_completed', 'log']) assert.ok(types.has(t), `no ${t} in ${[...types]}`)
  const log = events.find((ev) => ev.type === 'log' && ev.data.includes('napping'))
  assert.ok(log, 'container output reaches onProgress')
  assert.equal(log.stream, 'stdout')
  assert.match(log.vertex, /^sha256:/)
  const done = events.find((ev) => ev.type === 'vertex_completed')
  assert.equal(typeof done.duration, 'number')
  assert.equal(typeof done.name, 'string')
  e.close()
})

test('AbortSignal cancels a running RUN; no container, process or mount is left', async () => {
  const e = newEngine()
  const ac = new AbortController()
  const st = base().run(['/bin/sh', '-c', 'echo started; exec sleep 1000']).root()
  const p = e.solve(st, {
    locals: locals(),
    signal: ac.signal,
    onProgress: (ev) => {
      if (ev.type === 'log' && ev.data.includes('started')) ac.abort()
    },
  })
  await assert.rejects(p, (err) => {
    assert.equal(err.code, 'KILN_CANCELLED')
    return true
  })
  // The rejection settles only after the cancelled solve's cleanup: nothing is left right now.
  assert.deepEqual(e.runningContainers(), [])
  assert.ok(!mountedUnder(e.root), 'a mount under the engine root survived the cancel')
  const ps = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' })
  assert.ok(!ps.split('\n').some((l) => l.trim() === 'sleep 1000'), 'container process survived')
  e.close()
})

test('aborting one solve settles without waiting for another solve on the same engine', async () => {
  const e = newEngine()
  const sleeping = (secs) => {
    const ps = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' })
    return ps.split('\n').filter((l) => l.trim() === `sleep ${secs}`).length
  }
  const otherAc = new AbortController()
  let otherStarted
  const otherRunning = new Promise((res) => (otherStarted = res))
  const other = e.solve(base().run(['/bin/sh', '-c', 'echo other-started; exec sleep 1011']).root(), {
    locals: locals(),
    signal: otherAc.signal,
    onProgress: (ev) => {
      if (ev.type === 'log' && ev.data.includes('other-started')) otherStarted()
    },
  })
  const otherOutcome = other.then(
    () => null,
    (err) => err,
  )
  try {
    await otherRunning
    const ac = new AbortController()
    const ours = e.solve(base().run(['/bin/sh', '-c', 'echo ours-started; exec sleep 1012']).root(), {
      locals: locals(),
      signal: ac.signal,
      onProgress: (ev) => {
        if (ev.type === 'log' && ev.data.includes('ours-started')) ac.abort()
      },
    })
    await assert.rejects(ours, { code: 'KILN_CANCELLED' })
    // Ours is cleaned up; the other solve's container is still running at this moment.
    assert.equal(sleeping(1012), 0, 'the aborted solve left its container process')
    assert.equal(sleeping(1011), 1, 'the other solve should still be running')
    assert.equal(e.runningContainers().length, 1)
  } finally {
    otherAc.abort()
  }
  const err = await otherOutcome
  assert.equal(err?.code, 'KILN_CANCELLED')
  assert.deepEqual(e.runningContainers(), [])
  assert.ok(!mountedUnder(e.root), 'a mount under the engine root survived the cancels')
  assert.equal(sleeping(1011), 0, 'the other solve left its container process')
  e.close()
})

test('an already-aborted signal rejects without running anything', async () => {
  const e = newEngine()
  const ac = new AbortController()
  ac.abort()
  await assert.rejects(e.solve(base().run(['/bin/true']).root(), { locals: locals(), signal: ac.signal }), {
    code: 'KILN_CANCELLED',
  })
  e.close()
})

test('imageConfig reflects the state and can be overridden per solve', async () => {
  const st = kiln
    .scratch()
    .mkfile('/app', 'x')
    .withEnv('A', '1')
    .withCwd('/w')
    .withUser('nobody')
    .withEntrypoint(['/app'])
    .withCmd(['--help'])
    .withLabel('org.example', 'yes')
  assert.deepEqual(st.imageConfig(), {
    entrypoint: ['/app'],
    cmd: ['--help'],
    env: ['A=1'],
    workingDir: '/w',
    user: 'nobody',
    labels: { 'org.example': 'yes' },
  })
  const e = newEngine()
  const dir = tempDir()
  const layout = (name) => join(dir, name)
  await e.solve(st, { outputs: [`type=oci,dest=${layout('own')},tar=false`] })
  await e.solve(st, {
    outputs: [`type=oci,dest=${layout('override')},tar=false`],
    imageConfig: { cmd: ['other'], env: ['B=2'] },
  })
  const config = (name) => {
    const blob = (d) => join(layout(name), 'blobs', ...d.split(':'))
    const index = JSON.parse(readFileSync(join(layout(name), 'index.json'), 'utf8'))
    const manifest = JSON.parse(readFileSync(blob(index.manifests[0].digest), 'utf8'))
    return JSON.parse(readFileSync(blob(manifest.config.digest), 'utf8')).config
  }
  assert.deepEqual(config('own').Cmd, ['--help'])
  assert.deepEqual(config('own').Entrypoint, ['/app'])
  assert.ok(config('own').Env.includes('A=1'))
  assert.deepEqual(config('override').Cmd, ['other'])
  assert.ok(config('override').Env.includes('B=2'))
  e.close()
})

test('worker selectors pick a worker by label; an unknown label is a KILN_WORKER error', async () => {
  const e = newEngine()
  const w = e.workers()[0]
  assert.ok(w.labels.snapshotter, JSON.stringify(w))
  const ok = kiln.scratch().mkfile('/f', 'x').withWorkerSelector({ snapshotter: w.labels.snapshotter })
  assert.ok((await e.solve(ok)).executed >= 1)
  const r = await e.solve(base().run(['/bin/true'], { workerSelector: { name: w.name } }).root(), { locals: locals() })
  assert.ok(r.executed >= 1)
  const bad = kiln.scratch().mkfile('/g', 'x').withWorkerSelector({ snapshotter: 'no-such-snapshotter' })
  await assert.rejects(e.solve(bad), { code: 'KILN_WORKER' })
  e.close()
})
