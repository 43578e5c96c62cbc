// The example users copy (examples/ci_build.mjs) runs end to end against a real docker-registry
// on 127.0.0.1: multi-stage build, cache mount, secret, image push, cache export and re-import in
// a fresh root.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { repo, tempDir } from './helpers.mjs'

const REGISTRY = '/usr/bin/docker-registry'

async function freePort() {
  return new Promise((resolvePort, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolvePort(port))
    })
  })
}

async function startRegistry(dir) {
  assert.ok(existsSync(REGISTRY), `${REGISTRY} is missing: install the docker-registry package (scripts/setup)`)
  const addr = `127.0.0.1:${await freePort()}`
  const cfg = join(dir, 'registry.yml')
  writeFileSync(cfg, `version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'data')}\nhttp:\n  addr: ${addr}\n`)
  const log = openSync(join(dir, 'registry.log'), 'w')
  const proc = spawn(REGISTRY, ['serve', cfg], { stdio: ['ignore', log, log] })
  const deadline = Date.now() + 30_000
  for (;;) {
    try {
      const r = await fetch(`http://${addr}/v2/`, { signal: AbortSignal.timeout(2000) })
      if (r.ok) return { addr, proc }
    } catch {
      // not listening yet
    }
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill()
      throw new Error(`docker-registry did not start: ${readFileSync(join(dir, 'registry.log'), 'utf8')}`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
}

test('examples/ci_build.mjs pushes, exports the cache and rebuilds from it on a fresh root', async () => {
  const dir = tempDir()
  const { addr, proc } = await startRegistry(dir)
  try {
    const r = spawnSync(process.execPath, [join(repo, 'node', 'examples', 'ci_build.mjs'), addr, join(dir, 'work')], {
      encoding: 'utf8',
      timeout: 600_000,
      cwd: join(repo, 'node'),
    })
    assert.equal(r.status, 0, r.stdout + r.stderr)
    assert.match(r.stdout, /second machine: 0 executed/)
    assert.ok(!(r.stdout + r.stderr).includes('not-a-real-token'))
    const tags = await (await fetch(`http://${addr}/v2/examples/node-app/tags/list`)).json()
    assert.deepEqual(tags.tags, ['1'])
  } finally {
    proc.kill()
  }
})
