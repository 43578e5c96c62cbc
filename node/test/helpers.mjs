// Shared fixtures of the Node tests: temp dirs, the busybox rootfs (tests/fixtures/make-rootfs)
// and leak checks against the engine root.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'

export const require = createRequire(import.meta.url)
export const kiln = require('../index.js')
export const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const ctxDir = join(repo, 'tests', 'fixtures', 'scenario', 'ctx')

/** A fresh temp dir removed at process exit. */
export function tempDir(prefix = 'kiln-node-') {
  const d = mkdtempSync(join(tmpdir(), prefix))
  process.on('exit', () => rmSync(d, { recursive: true, force: true }))
  return d
}

let rootfs
/** The busybox rootfs made once per test process; fails loudly without busybox-static. */
export function rootfsDir() {
  if (!rootfs) {
    rootfs = join(tempDir('kiln-rootfs-'), 'rootfs')
    execFileSync(join(repo, 'tests', 'fixtures', 'make-rootfs'), [rootfs], { stdio: 'inherit' })
  }
  return rootfs
}

/** `local('rootfs')`, the base of every container step. */
export function base() {
  return kiln.local('rootfs')
}

/** The shared scenario's graph `app` (tests/fixtures/scenario/README.md, step 1). */
export function scenarioApp() {
  const ctx = kiln.local('ctx')
  return base()
    .run(['/bin/sh', '-c', 'cat /ctx/hello.txt > /greeting'], {
      mounts: [kiln.mount('/ctx', ctx, { readonly: true })],
    })
    .root()
    .copy(ctx, '/hello.txt', '/app/hello.txt', { createDestPath: true })
}

/** An engine on a fresh root. */
export function newEngine() {
  return new kiln.Engine({ root: join(tempDir('kiln-root-'), 'root') })
}

/** True while any mount under the engine root is listed in /proc/self/mountinfo. */
export function mountedUnder(root) {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.includes(root))
}
