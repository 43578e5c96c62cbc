// The built-in progress display (`progress: 'plain' | 'rawjson' | ...`) on the process's stderr,
// next to `onProgress`, and the option error for an unknown mode.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { kiln, newEngine, repo, rootfsDir, tempDir } from './helpers.mjs'

// The display writes to fd 2 of the process, so the solve runs in a child whose stderr we read.
function solveInChild(mode) {
  const script = `
    const kiln = require(${JSON.stringify(join(repo, 'node', 'index.js'))})
    const e = new kiln.Engine({ root: ${JSON.stringify(join(tempDir(), 'root'))} })
    const events = []
    e.solve(kiln.local('rootfs').run(['/bin/sh', '-c', 'echo shown-in-progress']).root(), {
      locals: { rootfs: ${JSON.stringify(rootfsDir())} },
      progress: ${JSON.stringify(mode)},
      onProgress: (ev) => events.push(ev.type),
    }).then((r) => {
      e.close()
      process.stdout.write(JSON.stringify({ executed: r.executed, events }))
    }, (err) => { console.log(String(err)); process.exit(3) })
  `
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 120_000 })
  assert.equal(r.status, 0, r.stdout + r.stderr)
  return { out: JSON.parse(r.stdout), err: r.stderr }
}

test("progress: 'plain' prints buildctl-style lines on stderr, with onProgress still called", () => {
  const { out, err } = solveInChild('plain')
  assert.ok(out.executed >= 1)
  assert.ok(out.events.includes('vertex_completed'), JSON.stringify(out.events))
  assert.match(err, /^#\d+ .*echo shown-in-progress/m)
  assert.match(err, /^#\d+ .*shown-in-progress$/m)
  assert.match(err, /^#\d+ DONE \d+\.\d+s$/m)
})

test("progress: 'rawjson' prints one JSON object per event", () => {
  const { err } = solveInChild('rawjson')
  const lines = err.split('\n').filter((l) => l.startsWith('{'))
  assert.ok(lines.length >= 2, err)
  for (const l of lines) JSON.parse(l)
})

test('an unknown progress mode throws KILN_OPTION_INVALID naming the key', async () => {
  const e = newEngine()
  try {
    assert.throws(() => e.solve(kiln.scratch(), { progress: 'fancy' }), (err) => {
      assert.equal(err.code, 'KILN_OPTION_INVALID')
      assert.equal(err.key, 'progress')
      return true
    })
  } finally {
    e.close()
  }
})
