// Typed errors: every kiln::ErrorKind has a distinct code known to the TypeScript union, and real
// failures of several kinds carry their code.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { kiln, newEngine, tempDir } from './helpers.mjs'
import { join } from 'node:path'

test('every error kind maps to a distinct code listed in ERROR_CODES', () => {
  const rows = kiln.errorCodes()
  assert.ok(rows.length >= 16)
  const codes = rows.map((r) => r.code)
  assert.equal(new Set(codes).size, codes.length, 'codes must be distinct')
  assert.equal(new Set(rows.map((r) => r.kind)).size, rows.length)
  for (const c of codes) {
    assert.ok(kiln.ERROR_CODES.includes(c), `${c} missing from ERROR_CODES / KilnErrorCode`)
    assert.notEqual(c, 'KILN_UNKNOWN')
  }
  // Besides one code per kind: KILN_NOT_FOUND (a path missing from a build result, kind file_op).
  assert.deepEqual([...codes, 'KILN_NOT_FOUND', 'KILN_UNKNOWN'].sort(), [...kiln.ERROR_CODES].sort())
  assert.equal(rows.find((r) => r.kind === 'exec').code, 'KILN_EXEC_FAILED')
})

test('synchronous option errors throw KILN_OPTION_INVALID', () => {
  assert.throws(() => kiln.cacheMount('/c', { sharing: 'bogus' }), (e) => {
    assert.equal(e.code, 'KILN_OPTION_INVALID')
    assert.equal(e.key, 'sharing')
    assert.equal(e.value, 'bogus')
    assert.match(e.message, /shared, private or locked/)
    return true
  })
  assert.throws(() => kiln.scratch().run(['true'], { network: 'bridge' }), { code: 'KILN_OPTION_INVALID' })
  assert.throws(() => kiln.http('https://example.invalid/x', { checksum: 'md5:1' }), { code: 'KILN_OPTION_INVALID' })
})

test('garbage definition bytes throw KILN_DEFINITION', () => {
  assert.throws(() => kiln.Definition.fromBytes(Buffer.from([0xff, 0xff, 0xff])), { code: 'KILN_DEFINITION' })
})

test('a second engine on the same root throws KILN_ROOT_IN_USE; a closed engine rejects', async () => {
  const root = join(tempDir(), 'root')
  const a = new kiln.Engine({ root })
  assert.throws(() => new kiln.Engine({ root }), (e) => {
    assert.equal(e.code, 'KILN_ROOT_IN_USE')
    assert.equal(typeof e.path, 'string')
    return true
  })
  a.close()
  assert.throws(() => a.workers(), { code: 'KILN_UNSUPPORTED' })
  await assert.rejects(a.solve(kiln.scratch()), { code: 'KILN_UNSUPPORTED' })
  const b = new kiln.Engine({ root })
  b.close()
})

test('a missing local rejects with a KilnError', async () => {
  const e = newEngine()
  await assert.rejects(e.solve(kiln.local('nope').mkdir('/x')), (err) => {
    assert.ok(kiln.isKilnError(err), String(err))
    return true
  })
  e.close()
})

test('an I/O error inside a file op rejects with KILN_IO, its path and its cause', async () => {
  // A name longer than NAME_MAX fails with ENAMETOOLONG inside the file op's vertex task; the
  // error crosses into the dependent copy's task and keeps its kind, path and cause.
  const e = newEngine()
  const long = 'n'.repeat(300)
  const made = kiln.scratch().mkdir('/d').mkfile(`/d/${long}`, 'x')
  const st = kiln.scratch().copy(made, '/d', '/copied')
  await assert.rejects(e.solve(st), (err) => {
    assert.ok(kiln.isKilnError(err), String(err))
    assert.equal(err.code, 'KILN_IO')
    assert.equal(err.kind, 'io')
    assert.equal(typeof err.path, 'string')
    assert.ok(err.path.endsWith(`d/${long}`), err.path)
    assert.ok(err.message.includes(`mkfile /d/${long}`), err.message)
    assert.match(err.message, /File name too long/)
    return true
  })
  e.close()
})

test('options objects: unknown keys and wrong types throw KILN_OPTION_INVALID naming the key', () => {
  const check = (fn, key, re) =>
    assert.throws(fn, (e) => {
      assert.ok(kiln.isKilnError(e), String(e))
      assert.equal(e.code, 'KILN_OPTION_INVALID')
      assert.equal(e.key, key)
      if (re) assert.match(e.message, re)
      return true
    })
  check(() => kiln.scratch().mkdir('/a', { parents: true }), 'parents', /makeParents/)
  check(() => kiln.scratch().mkdir('/a', { mode: '0755' }), 'mode', /integer/)
  check(() => kiln.scratch().run(['true'], { mounts: 'nope' }), 'mounts', /array of Mount/)
  check(() => kiln.scratch().run(['true'], { env: { A: 1 } }), 'env.A', /string/)
  check(() => kiln.cacheMount('/c', { sharing: 'bogus' }), 'sharing')
  check(() => kiln.secretMount('/s', { mode: 0o17777 }), 'mode')
  check(() => kiln.tmpfsMount('/t', { size: -1 }), 'size')
})

test('ExecState is accepted wherever a State is (copy, merge, mount)', () => {
  const ex = kiln.scratch().run(['true'])
  const a = kiln.scratch().copy(ex, '/a', '/b')
  const b = kiln.scratch().copy(ex.root(), '/a', '/b')
  assert.deepEqual(a.toBytes(), b.toBytes())
  assert.deepEqual(kiln.merge([ex, kiln.scratch()]).toBytes(), kiln.merge([ex.root()]).toBytes())
})

test('secrets: plain strings are refused; errors never show a value', async () => {
  const e = newEngine()
  const st = kiln.local('rootfs').run(['/bin/true'], { mounts: [kiln.secretMount('/run/secrets/tok')] })
  for (const plain of ['hunter2', Buffer.from('hunter2')]) {
    await assert.rejects(async () => e.solve(st, { secrets: { tok: plain } }), (err) => {
      assert.equal(err.code, 'KILN_OPTION_INVALID')
      assert.match(err.message, /secretFile/)
      assert.ok(!err.message.includes('hunter2'))
      return true
    })
  }
  await assert.rejects(async () => e.solve(st, { secrets: { tok: kiln.secretFile('hunter2') } }), (err) => {
    assert.ok(kiln.isKilnError(err))
    assert.ok(!err.message.includes('hunter2'), err.message)
    assert.match(err.message, /tok/)
    return true
  })
  assert.equal(kiln.secretValue('hunter2').kind, 'value')
  e.close()
})

test('engine options objects refuse unknown keys, naming them (solve, build, prune, new Engine)', async () => {
  const e = newEngine()
  const st = kiln.scratch().mkfile('/f', 'x')
  const named = (key) => (err) => {
    assert.ok(kiln.isKilnError(err), String(err))
    assert.equal(err.code, 'KILN_OPTION_INVALID')
    assert.equal(err.key, key)
    return true
  }
  // A misspelt option was silently ignored before (napi reads only the fields it knows).
  await assert.rejects(async () => e.solve(st, { output: ['type=local,dest=/tmp/x'] }), named('output'))
  await assert.rejects(async () => e.build(async () => st, { cacheImport: [] }), named('cacheImport'))
  await assert.rejects(async () => e.prune({ keepStorage: 1 }), named('keepStorage'))
  assert.throws(() => new kiln.Engine({ rooot: tempDir() }), named('rooot'))
  // Every documented key is accepted.
  const r = await e.solve(st, { outputs: [], cacheExports: [], cacheImports: [], progress: 'quiet', locals: {} })
  assert.equal(typeof r.executed, 'number')
  e.close()
})
