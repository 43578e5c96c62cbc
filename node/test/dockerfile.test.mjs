// The Dockerfile frontend from Node: kiln.dockerfile(...) as an extensible State and
// engine.solve({ frontend: 'dockerfile.v0', frontendOpts, locals }), built offline on the busybox
// rootfs as the named context `base`; option and Dockerfile errors.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { kiln, newEngine, rootfsDir, tempDir } from './helpers.mjs'

const DOCKERFILE = `ARG MSG=default
FROM base AS build
ARG MSG
ENV STAGE=build
WORKDIR /w
COPY . .
RUN echo "$MSG $STAGE" > msg && ls > list
FROM scratch
COPY --from=build /w /out
ENV K=v
WORKDIR /out
ENTRYPOINT ["/bin/sh"]
`

function project() {
  const ctx = join(tempDir(), 'ctx')
  mkdirSync(join(ctx, 'sub'), { recursive: true })
  writeFileSync(join(ctx, 'a.txt'), 'a\n')
  writeFileSync(join(ctx, 'skip.log'), 'x\n')
  writeFileSync(join(ctx, 'sub', 'b.txt'), 'b\n')
  writeFileSync(join(ctx, '.dockerignore'), '*.log\n')
  writeFileSync(join(ctx, 'Dockerfile'), DOCKERFILE)
  return ctx
}

const read = (...p) => readFileSync(join(...p), 'utf8')
const blob = (dir, digest) => JSON.parse(read(dir, 'blobs', 'sha256', digest.split(':')[1]))
function imageConfigOf(layout) {
  const index = JSON.parse(read(layout, 'index.json'))
  return blob(layout, blob(layout, index.manifests[0].digest).config.digest).config
}

test('kiln.dockerfile gives a state that is extended and solved', async () => {
  const e = newEngine()
  try {
    const ctx = project()
    const st = kiln.dockerfile(ctx, {
      buildArgs: { MSG: 'hello' },
      contexts: { base: 'local:rootfs' },
      labels: { 'org.example': '1' },
    })
    const cfg = st.imageConfig()
    assert.equal(cfg.env.at(-1), 'K=v')
    assert.equal(cfg.workingDir, '/out')
    assert.deepEqual(cfg.entrypoint, ['/bin/sh'])
    const extended = st.mkfile('/extra', Buffer.from('more\n')).withEnv('EXTRA', '1')
    const locals = { context: ctx, rootfs: rootfsDir() }
    const out = join(tempDir(), 'out')
    await e.solve(extended, { locals, outputs: [`type=local,dest=${out}`] })
    assert.equal(read(out, 'out', 'msg'), 'hello build\n')
    assert.equal(read(out, 'out', 'list'), 'Dockerfile\na.txt\nlist\nmsg\nsub\n') // .dockerignore: no skip.log
    assert.equal(read(out, 'out', 'sub', 'b.txt'), 'b\n')
    assert.equal(read(out, 'extra'), 'more\n')
    const layout = join(tempDir(), 'img')
    await e.solve(extended, { locals, outputs: [`type=oci,dest=${layout},tar=false`] })
    const config = imageConfigOf(layout)
    assert.deepEqual(config.Env.slice(-2), ['K=v', 'EXTRA=1'])
    assert.deepEqual(config.Entrypoint, ['/bin/sh'])
    assert.deepEqual(config.Labels, { 'org.example': '1' })

    const build = await e.dockerfile(ctx, { target: 'build', contexts: { base: 'local:rootfs' } })
    assert.equal(build.cwd, '/w')
    const stage = join(tempDir(), 'stage')
    await e.solve(build.run(['/bin/sh', '-c', 'cat msg > /w/copy']).root(), {
      locals,
      outputs: [`type=local,dest=${stage}`],
    })
    assert.equal(read(stage, 'w', 'copy'), 'default build\n')
  } finally {
    e.close()
  }
})

test('engine.solve with the dockerfile.v0 frontend', async () => {
  const e = newEngine()
  try {
    const ctx = project()
    const locals = { context: ctx, dockerfile: ctx, rootfs: rootfsDir() }
    const frontendOpts = { 'build-arg:MSG': 'from-frontend', 'context:base': 'local:rootfs' }
    const out = join(tempDir(), 'out')
    const r = await e.solve({ frontend: 'dockerfile.v0', frontendOpts, locals, outputs: [`type=local,dest=${out}`] })
    assert.ok(r.executed >= 1)
    assert.equal(read(out, 'out', 'msg'), 'from-frontend build\n')
    const layout = join(tempDir(), 'img')
    const again = await e.solve({
      frontend: 'dockerfile.v0',
      frontendOpts,
      locals,
      outputs: [`type=oci,dest=${layout},tar=false`],
    })
    assert.equal(again.executed, 0)
    assert.deepEqual(imageConfigOf(layout).Entrypoint, ['/bin/sh'])
  } finally {
    e.close()
  }
})

test('dockerfile errors', async () => {
  const e = newEngine()
  try {
    const ctx = project()
    const locals = { context: ctx, dockerfile: ctx, rootfs: rootfsDir() }
    await assert.rejects(e.solve({ frontend: 'nope.v1', locals }), (err) => {
      assert.equal(err.code, 'KILN_UNSUPPORTED')
      assert.match(err.message, /frontend "nope.v1" is not supported/)
      return true
    })
    assert.throws(() => e.solve(kiln.scratch(), { frontend: 'dockerfile.v0' }), /not both/)
    assert.throws(() => e.solve({ locals }), /options.frontend must name a frontend/)
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM base\nRUNN true\n')
    await assert.rejects(
      e.solve({ frontend: 'dockerfile.v0', frontendOpts: { 'context:base': 'local:rootfs' }, locals }),
      (err) => err.code === 'KILN_DEFINITION' && /Dockerfile:2: unknown instruction: RUNN/.test(err.message),
    )
    assert.throws(
      () => kiln.dockerfile(ctx, { contexts: { base: 'local:rootfs' } }),
      (err) => err.code === 'KILN_DEFINITION' && /Dockerfile:2: unknown instruction: RUNN/.test(err.message),
    )
    assert.throws(
      () => kiln.dockerfile(ctx, { buildArg: { A: '1' } }),
      (err) => err.code === 'KILN_OPTION_INVALID' && /buildArg/.test(err.message),
    )
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM busybox\n')
    assert.throws(
      () => kiln.dockerfile(ctx),
      (err) => err.code === 'KILN_UNSUPPORTED' && /resolved through an engine/.test(err.message),
    )
  } finally {
    e.close()
  }
})

test('ssh forwards agent sockets to RUN --mount=type=ssh; allow grants entitlements', async () => {
  const { spawn } = await import('node:child_process')
  const { existsSync } = await import('node:fs')
  const dir = tempDir()
  const sock = join(dir, 'agent.sock')
  const agent = spawn('ssh-agent', ['-D', '-a', sock], { stdio: 'ignore' })
  const e = newEngine()
  try {
    const deadline = Date.now() + 30000
    while (!existsSync(sock)) {
      assert.ok(Date.now() < deadline, 'ssh-agent did not listen within 30 s')
      await new Promise((r) => setTimeout(r, 20))
    }
    const ctx = join(dir, 'ctx')
    mkdirSync(ctx)
    writeFileSync(
      join(ctx, 'Dockerfile'),
      'FROM base\nRUN --mount=type=ssh (test -S "$SSH_AUTH_SOCK" && echo socket) > /ssh\n' +
        'RUN --network=host echo host > /net\n',
    )
    const base = {
      frontend: 'dockerfile.v0',
      frontendOpts: { 'context:base': 'local:rootfs' },
      locals: { context: ctx, dockerfile: ctx, rootfs: rootfsDir() },
    }
    await assert.rejects(e.solve({ ...base, ssh: { default: sock } }), /network\.host/)
    await assert.rejects(e.solve({ ...base, allow: ['nope'] }), /unknown entitlement/)
    const out = join(dir, 'out')
    await e.solve({ ...base, ssh: { default: sock }, allow: ['network.host'], outputs: [`type=local,dest=${out}`] })
    assert.equal(read(out, 'ssh'), 'socket\n')
    assert.equal(read(out, 'net'), 'host\n')
  } finally {
    agent.kill()
    e.close()
  }
})
