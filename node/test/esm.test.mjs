// The package as an ES module: named imports by package name (self-reference through
// package.json "exports"), the same objects as the CommonJS entry, and `await using` disposal.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { Engine, local, scratch, isKilnError, ERROR_CODES } from 'kiln'
import * as esm from 'kiln'
import { require, tempDir } from './helpers.mjs'

test('named ESM imports resolve to the CommonJS exports', () => {
  const cjs = require('kiln')
  assert.equal(Engine, cjs.Engine)
  assert.equal(local, cjs.local)
  assert.equal(typeof scratch, 'function')
  assert.equal(typeof isKilnError, 'function')
  assert.ok(ERROR_CODES.includes('KILN_OPTION_INVALID'))
  for (const name of Object.keys(cjs)) {
    if (name.startsWith('__')) continue
    assert.ok(name in esm, `ESM entry lacks ${name}`)
  }
})

test('Engine supports Symbol.asyncDispose: the root is free after the scope', async () => {
  const root = join(tempDir(), 'root')
  // Node 20 has the symbols but not yet the `await using` syntax: call what it would call.
  const engine = new Engine({ root })
  assert.equal(typeof engine.root, 'string')
  assert.throws(() => new Engine({ root }), { code: 'KILN_ROOT_IN_USE' })
  await engine[Symbol.asyncDispose]()
  const again = new Engine({ root })
  again.close()
  assert.throws(() => again.workers(), { code: 'KILN_UNSUPPORTED' })
})
