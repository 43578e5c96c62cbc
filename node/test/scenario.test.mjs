// The shared cross-language scenario (tests/fixtures/scenario/README.md) in Node.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { kiln, base, ctxDir, newEngine, rootfsDir, tempDir, mountedUnder, scenarioApp } from './helpers.mjs'

const HELLO = 'hello from the shared scenario\n'

const app = scenarioApp

const tmp = tempDir()
const locals = () => ({ rootfs: rootfsDir(), ctx: ctxDir })

test('scenario steps 2-3: export the cache from root A, import it into fresh root B', async () => {
  const a = newEngine()
  const outA = join(tmp, 'out-a')
  const cache = join(tmp, 'cache')
  const ra = await a.solve(app(), {
    locals: locals(),
    outputs: [`type=local,dest=${outA}`],
    cacheExports: [`type=local,dest=${cache},mode=max`],
  })
  assert.ok(ra.executed >= 1, JSON.stringify(ra))
  assert.equal(readFileSync(join(outA, 'greeting'), 'utf8'), HELLO)
  assert.equal(readFileSync(join(outA, 'app/hello.txt'), 'utf8'), HELLO)
  assert.ok(!mountedUnder(a.root))
  a.close()

  const b = newEngine()
  const outB = join(tmp, 'out-b')
  const rb = await b.solve(app(), {
    locals: locals(),
    outputs: [`type=local,dest=${outB}`],
    cacheImports: [`type=local,src=${cache}`],
  })
  assert.equal(rb.executed, 0, `every vertex must come from the imported cache: ${JSON.stringify(rb)}`)
  assert.equal(readFileSync(join(outB, 'greeting'), 'utf8'), HELLO)
  assert.equal(readFileSync(join(outB, 'app/hello.txt'), 'utf8'), HELLO)
  b.close()
})

test('scenario step 4: a failing RUN rejects with KILN_EXEC_FAILED, exitCode and logTail', async () => {
  const e = newEngine()
  const st = base().run(['/bin/sh', '-c', 'echo bad-step-output; exit 7']).root()
  await assert.rejects(e.solve(st, { locals: locals() }), (err) => {
    assert.ok(err instanceof Error)
    assert.ok(kiln.isKilnError(err))
    assert.equal(err.name, 'KilnError')
    assert.equal(err.code, 'KILN_EXEC_FAILED')
    assert.equal(err.kind, 'exec')
    assert.equal(err.exitCode, 7)
    assert.equal(typeof err.vertex, 'string')
    assert.ok(err.logTail.some((l) => l.includes('bad-step-output')), JSON.stringify(err.logTail))
    return true
  })
  e.close()
})

test('scenario step 5: a bad cache export option rejects with KILN_OPTION_INVALID naming key, value and accepted', async () => {
  const e = newEngine()
  const x = join(tmp, 'x')
  await assert.rejects(e.solve(app(), { locals: locals(), cacheExports: [`type=local,dest=${x},mode=maxx`] }), (err) => {
    assert.equal(err.code, 'KILN_OPTION_INVALID')
    assert.equal(err.key, 'mode')
    assert.equal(err.value, 'maxx')
    assert.match(err.message, /mode/)
    assert.match(err.message, /maxx/)
    assert.match(err.message, /min/)
    assert.match(err.message, /max/)
    return true
  })
  e.close()
})

test('scenario step 6: the golden definition is byte-identical to every face', async () => {
  const { createHash } = await import('node:crypto')
  const { fileURLToPath } = await import('node:url')
  const fixtures = fileURLToPath(new URL('../../tests/fixtures/scenario/', import.meta.url))
  const golden = app()
    .run(['/bin/sh', '-c', 'true'], {
      env: { Z: '1', A: '2' },
      network: 'none',
      customName: 'golden',
      mounts: [kiln.cacheMount('/cache'), kiln.secretMount('/run/secrets/tok')],
    })
    .root()
    .mkdir('/p/q', { mode: 0o750, makeParents: true })
  const bytes = golden.toBytes()
  assert.equal(createHash('sha256').update(bytes).digest('hex'), readFileSync(join(fixtures, 'definition.sha256'), 'utf8').trim())
  assert.deepEqual(bytes, readFileSync(join(fixtures, 'definition.pb')))
})
