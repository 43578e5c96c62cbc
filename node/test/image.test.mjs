// Base-image config inheritance (engine.ociLayout), image config setters, SOURCE_DATE_EPOCH
// reproducibility across two roots, platforms, and cache mounts in disk usage and prune.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { kiln, newEngine, rootfsDir, tempDir } from './helpers.mjs'

const EPOCH = 1_700_000_000
const locals = () => ({ rootfs: rootfsDir() })
const blob = (dir, digest) => JSON.parse(readFileSync(join(dir, 'blobs', 'sha256', digest.split(':')[1]), 'utf8'))

test('a base image config is inherited by runs and exports', async () => {
  const e = newEngine()
  try {
    const layout = join(tempDir(), 'layout')
    const base = kiln
      .local('rootfs')
      .withEnv('GREETING', 'hello')
      .withCwd('/srv/app')
      .withUser('1000')
      .withExposedPort('8080')
      .withVolume('/data')
      .withStopSignal('SIGINT')
      .withCmd(['serve'])
    await e.solve(base, { locals: locals(), outputs: [`type=oci,dest=${layout},tar=false,name=base`] })
    assert.deepEqual(kiln.ociLayout(layout, { tag: 'base' }).imageConfig().env, [])
    const st = await e.ociLayout(layout, { tag: 'base' })
    const cfg = st.imageConfig()
    assert.equal(cfg.env.at(-1), 'GREETING=hello')
    assert.equal(cfg.workingDir, '/srv/app')
    assert.deepEqual(cfg.exposedPorts, ['8080/tcp'])
    assert.equal(cfg.stopSignal, 'SIGINT')
    const run = st
      .withEnv('EXTRA', 'x')
      .run(['/bin/sh', '-c', 'mkdir -p /tmp/o && { echo "$GREETING $EXTRA"; pwd; id -u; } > /tmp/o/report'])
      .root()
      .withAnnotation('org.opencontainers.image.title', 'demo')
    const out = join(tempDir(), 'out')
    const img = join(tempDir(), 'img')
    await e.solve(run, { outputs: [`type=local,dest=${out}`, `type=oci,dest=${img},tar=false,name=app`] })
    assert.equal(readFileSync(join(out, 'tmp', 'o', 'report'), 'utf8'), 'hello x\n/srv/app\n1000\n')
    const index = JSON.parse(readFileSync(join(img, 'index.json'), 'utf8'))
    const manifest = blob(img, index.manifests[0].digest)
    assert.equal(manifest.annotations['org.opencontainers.image.title'], 'demo')
    const config = blob(img, manifest.config.digest).config
    assert.deepEqual(config.Env.slice(-2), ['GREETING=hello', 'EXTRA=x'])
    assert.equal(config.User, '1000')
    assert.deepEqual(config.Cmd, ['serve'])
  } finally {
    e.close()
  }
})

test('SOURCE_DATE_EPOCH gives one image digest from two fresh roots', async () => {
  const digests = []
  for (const name of ['a', 'b']) {
    const e = newEngine()
    try {
      const st = kiln.local('rootfs').run(['/bin/sh', '-c', 'echo fixed > /built']).root()
      const r = await e.solve(st, {
        locals: locals(),
        outputs: [`type=oci,dest=${join(tempDir(), name)}.tar`],
        sourceDateEpoch: EPOCH,
      })
      digests.push(r.exporterResponse['containerimage.digest'])
    } finally {
      e.close()
    }
  }
  assert.match(digests[0], /^sha256:/)
  assert.equal(digests[0], digests[1])
})

test('platforms: malformed ones are option errors, foreign ones are refused', async () => {
  const e = newEngine()
  try {
    await assert.rejects(e.solve(kiln.scratch(), { platform: 'not a platform' }), { code: 'KILN_OPTION_INVALID' })
    const foreign = process.arch === 's390x' ? 'linux/amd64' : 'linux/s390x'
    await assert.rejects(
      e.solve(kiln.local('rootfs').run(['/bin/true']).root(), { locals: locals(), platform: foreign }),
      (err) => kiln.isKilnError(err) && /s390x|amd64/.test(err.message),
    )
    assert.throws(() => kiln.image('busybox', { platform: 'nope' }), { code: 'KILN_OPTION_INVALID' })
  } finally {
    e.close()
  }
})

test('cache mounts are listed by diskUsage and removed by prune({ all })', async () => {
  const e = newEngine()
  try {
    const st = kiln
      .local('rootfs')
      .run(['/bin/sh', '-c', 'head -c 4096 /dev/zero > /cache/blob'], {
        mounts: [kiln.cacheMount('/cache', { id: 'nodecache' })],
      })
      .root()
    await e.solve(st, { locals: locals() })
    const mounts = (await e.diskUsage()).filter((u) => u.recordType === 'exec.cachemount')
    assert.equal(mounts.length, 1)
    assert.ok(mounts[0].size >= 4096)
    await e.prune({ all: true })
    assert.deepEqual((await e.diskUsage()).filter((u) => u.recordType === 'exec.cachemount'), [])
  } finally {
    e.close()
  }
})
