// Builds a small graph (busybox rootfs → RUN → COPY), exports its cache to a directory, then
// rebuilds it on a fresh engine root from that cache alone: nothing runs the second time.
//
//   node examples/hello.mjs [WORKDIR]
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'

const kiln = createRequire(import.meta.url)('../index.js')
const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
const work = process.argv[2] ?? mkdtempSync(join(tmpdir(), 'kiln-hello-'))
// A temp WORKDIR goes away at exit (engines are closed by then, so nothing is mounted in it).
if (!process.argv[2]) process.on('exit', () => rmSync(work, { recursive: true, force: true }))
const rootfs = join(work, 'rootfs')
execFileSync(join(repo, 'tests/fixtures/make-rootfs'), [rootfs])

const ctx = kiln.local('ctx')
const app = kiln
  .local('rootfs')
  .run(['/bin/sh', '-c', 'cat /ctx/hello.txt > /greeting'], {
    mounts: [kiln.mount('/ctx', ctx, { readonly: true })],
    customName: 'greet',
  })
  .root()
  .copy(ctx, '/hello.txt', '/app/hello.txt', { createDestPath: true })

const locals = { rootfs, ctx: join(repo, 'tests/fixtures/scenario/ctx') }
const cache = join(work, 'cache')

async function build(name, extra) {
  const engine = new kiln.Engine({ root: join(work, `root-${name}`) })
  try {
    const out = join(work, `out-${name}`)
    const r = await engine.solve(app, {
      locals,
      outputs: [`type=local,dest=${out}`],
      onProgress: (ev) => {
        if (ev.type === 'vertex_started' || ev.type === 'vertex_cached') console.log(`[${name}] ${ev.type} ${ev.name}`)
      },
      ...extra,
    })
    console.log(`[${name}] executed=${r.executed} cached=${r.cached}: ${readFileSync(join(out, 'greeting'), 'utf8').trim()}`)
    return r
  } finally {
    engine.close()
  }
}

try {
  await build('a', { cacheExports: [`type=local,dest=${cache},mode=max`] })
  const b = await build('b', { cacheImports: [`type=local,src=${cache}`] })
  if (b.executed !== 0) throw new Error(`expected a fully cached rebuild, ${b.executed} steps ran`)
} catch (e) {
  if (kiln.isKilnError(e)) console.error(`kiln failed (${e.code}): ${e.message}`)
  throw e
}
