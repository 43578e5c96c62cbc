// kiln.connect(): the shared scenario's graph, its typed errors and a Dockerfile build on a
// `kiln serve` daemon and on a real buildkitd (KILN_BUILDKIT_ADDR, or ../shared/buildkit started
// here), through the same Engine surface as an embedded engine.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { connect as netConnect } from 'node:net'
import { join } from 'node:path'
import { kiln, base, ctxDir, repo, rootfsDir, tempDir, scenarioApp } from './helpers.mjs'

const HELLO = 'hello from the shared scenario\n'
const tmp = tempDir('kiln-connect-')

const app = scenarioApp

function kilnBin() {
  const target = process.env.CARGO_TARGET_DIR ?? join(repo, 'target')
  const bin = process.env.KILN_BIN ?? join(target, 'debug', 'kiln')
  if (!existsSync(bin)) throw new Error(`${bin} does not exist: build it with \`cargo build -p kiln-cli\` (or set KILN_BIN)`)
  return bin
}

function canConnect(path) {
  return new Promise((resolve) => {
    const s = netConnect(path)
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}

// kiln serve on a unix socket, stopped after the tests.
const sock = join(tmp, 'kiln.sock')
const serve = spawn(kilnBin(), ['--root', join(tmp, 'root'), 'serve', '--addr', `unix://${sock}`], {
  stdio: ['ignore', 'ignore', 'inherit'],
})
let exited = false
serve.once('exit', () => { exited = true })
const deadline = Date.now() + 30_000
while (!(await canConnect(sock))) {
  if (exited) throw new Error('kiln serve exited before listening')
  if (Date.now() > deadline) throw new Error(`kiln serve did not listen on ${sock} within 30 s`)
  await new Promise((r) => setTimeout(r, 20))
}

// buildkitd: the one CI runs, else one started here.
let bkAddr = process.env.KILN_BUILDKIT_ADDR ?? ''
let bkStop = null
if (!bkAddr) {
  const dir = process.env.KILN_BUILDKIT_DIR ?? join(repo, '..', 'shared', 'buildkit')
  if (!existsSync(join(dir, 'start'))) throw new Error(`no BuildKit at ${dir}: set KILN_BUILDKIT_DIR or KILN_BUILDKIT_ADDR`)
  const state = join(tmp, 'buildkitd')
  bkAddr = execFileSync(join(dir, 'start'), [state], { encoding: 'utf8', timeout: 120_000 }).trim()
  bkStop = () => execFileSync(join(dir, 'stop'), [state], { timeout: 120_000 })
}

after(() => {
  serve.kill('SIGTERM')
  if (bkStop) bkStop()
})

const daemons = { 'kiln-serve': `unix://${sock}`, buildkitd: bkAddr }

for (const [name, addr] of Object.entries(daemons)) {
  test(`${name}: connect() is an Engine on the daemon`, async () => {
    const e = await kiln.connect(addr)
    assert.ok(e instanceof kiln.Engine)
    assert.equal(e.address, addr)
    assert.equal(e.root, null)
    assert.ok(e.workers().length >= 1)
    e.close()
  })

  test(`${name}: the scenario graph, its progress and disk usage`, async () => {
    const e = await kiln.connect(addr)
    const out = join(tmp, `${name}-out`)
    const names = []
    const r = await e.solve(app(), {
      locals: { rootfs: rootfsDir(), ctx: ctxDir },
      outputs: [`type=local,dest=${out}`],
      onProgress: (ev) => { if (ev.type === 'vertex_completed' || ev.type === 'vertex_cached') names.push(ev.name) },
    })
    assert.ok(r.executed + r.cached >= 1, JSON.stringify(r))
    assert.equal(readFileSync(join(out, 'greeting'), 'utf8'), HELLO)
    assert.equal(readFileSync(join(out, 'app/hello.txt'), 'utf8'), HELLO)
    assert.ok(names.some((n) => n.includes('cat /ctx/hello.txt')), JSON.stringify(names))
    assert.ok((await e.diskUsage()).length >= 1)
    e.close()
  })

  test(`${name}: a failing step is KILN_EXEC_FAILED with its exit code and output`, async () => {
    const e = await kiln.connect(addr)
    const bad = base().run(['/bin/sh', '-c', 'echo bad-step-output; exit 7'])
    await assert.rejects(e.solve(bad, { locals: { rootfs: rootfsDir() } }), (err) => {
      assert.equal(err.code, 'KILN_EXEC_FAILED')
      assert.equal(err.exitCode, 7)
      assert.ok(err.logTail.some((l) => l.includes('bad-step-output')), JSON.stringify(err.logTail))
      return true
    })
    e.close()
  })

  test(`${name}: scenario steps 2-3, the local cache directory on this side`, async () => {
    // The emptied (pruned) daemon imports what it exported. BuildKit keys a RUN on a local
    // rootfs by its session, so only on kiln serve is the RUN a cache hit.
    const e = await kiln.connect(addr)
    const locals = { rootfs: rootfsDir(), ctx: ctxDir }
    const cache = join(tmp, `${name}-cache`)
    await e.solve(app(), { locals, cacheExports: [`type=local,dest=${cache},mode=max`] })
    assert.ok(readFileSync(join(cache, 'index.json'), 'utf8').includes('"org.opencontainers.image.ref.name":"latest"'))
    await e.prune({ all: true })
    const out = join(tmp, `${name}-imported`)
    const ran = []
    await e.solve(app(), {
      locals,
      outputs: [`type=local,dest=${out}`],
      cacheImports: [`type=local,src=${cache}`],
      onProgress: (ev) => { if (ev.type === 'vertex_completed') ran.push(ev.name) },
    })
    assert.equal(readFileSync(join(out, 'greeting'), 'utf8'), HELLO)
    assert.equal(readFileSync(join(out, 'app/hello.txt'), 'utf8'), HELLO)
    if (name === 'kiln-serve') assert.ok(!ran.some((n) => n.includes('cat /ctx/hello.txt')), JSON.stringify(ran))
    e.close()
  })

  test(`${name}: a client-side build through the daemon's LLB bridge`, async () => {
    const e = await kiln.connect(addr)
    const out = join(tmp, `${name}-build`)
    await e.build(
      async (ctx) => {
        const r = await ctx.solve(app())
        const greeting = (await r.readFile('/greeting')).toString().trim()
        const names = (await r.readDir('/app')).map((d) => d.name)
        await assert.rejects(r.readFile('/nope'), (err) => err.code === 'KILN_NOT_FOUND')
        return ctx.solve(kiln.scratch().mkfile('/report', `${ctx.frontendOpts.who}: ${greeting} ${names.join(',')}\n`))
      },
      { locals: { rootfs: rootfsDir(), ctx: ctxDir }, outputs: [`type=local,dest=${out}`], frontendOpts: { who: 'node' } },
    )
    assert.equal(readFileSync(join(out, 'report'), 'utf8'), 'node: hello from the shared scenario hello.txt\n')
    e.close()
  })

  test(`${name}: a Dockerfile through the dockerfile.v0 frontend`, async () => {
    const e = await kiln.connect(addr)
    const proj = join(tmp, `${name}-proj`)
    mkdirSync(proj, { recursive: true })
    writeFileSync(join(proj, 'Dockerfile'), 'FROM base\nCOPY msg.txt /msg.txt\nRUN cat /msg.txt > /copied\n')
    writeFileSync(join(proj, 'msg.txt'), 'through the daemon\n')
    const out = join(tmp, `${name}-df`)
    await e.solve({
      frontend: 'dockerfile.v0',
      frontendOpts: { 'context:base': 'local:rootfs' },
      locals: { context: proj, dockerfile: proj, rootfs: rootfsDir() },
      outputs: [`type=local,dest=${out}`],
    })
    assert.equal(readFileSync(join(out, 'copied'), 'utf8'), 'through the daemon\n')
    e.close()
  })
}

test('connect() to nothing rejects naming the address', async () => {
  await assert.rejects(kiln.connect(`unix://${join(tmp, 'none.sock')}`), (err) => {
    assert.ok(err.message.includes('none.sock'), err.message)
    return true
  })
})
