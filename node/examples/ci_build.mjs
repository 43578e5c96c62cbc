// A CI build as users write one: a build stage (a cache mount for the toolchain's cache, a secret
// the step reads but never stores), a slim runtime stage that copies only the artifact and carries
// an image config, pushed to a registry with a reproducible digest; the build cache goes to a
// directory, and a second build in a fresh engine root (another CI machine) imports it and runs
// nothing.
//
//   node examples/ci_build.mjs REGISTRY WORKDIR      # REGISTRY like 127.0.0.1:5000
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Engine, local, cacheMount, secretMount, secretValue } from 'kiln'

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
const [registry, work] = process.argv.slice(2)
if (!registry || !work) throw new Error('usage: node examples/ci_build.mjs REGISTRY WORKDIR')
const rootfs = join(work, 'rootfs')
if (!existsSync(rootfs)) execFileSync(join(repo, 'tests/fixtures/make-rootfs'), [rootfs])

function graph() {
  const base = local('rootfs')
  const build = base
    .run(
      [
        '/bin/sh',
        '-c',
        "mkdir -p /out && printf '#!/bin/sh\\necho hello from app\\n' > /out/app && chmod 755 /out/app" +
          ' && wc -c < /run/secrets/token > /out/token-bytes && date >> /cache/builds',
      ],
      {
        mounts: [cacheMount('/cache', { id: 'ci-build' }), secretMount('/run/secrets/token', { id: 'token' })],
        customName: 'build the app',
      },
    )
    .root()
  return base
    .copy(build, '/out/app', '/usr/local/bin/app', { createDestPath: true })
    .withEnv('MODE', 'production')
    .withExposedPort('8080')
    .withCmd(['/usr/local/bin/app'])
}

const image = `${registry}/examples/node-app:1`
const cache = join(work, 'cache')
const common = {
  locals: { rootfs },
  secrets: { token: secretValue(Buffer.from('not-a-real-token')) },
  outputs: [`type=image,name=${image},push=true`],
  sourceDateEpoch: 1_700_000_000, // both machines push the very same digest
  progress: 'plain',
}

async function onMachine(name, extra) {
  const engine = new Engine({ root: join(work, `ci-machine-${name}`) })
  try {
    return await engine.solve(graph(), { ...common, ...extra })
  } finally {
    engine.close()
  }
}

const first = await onMachine('a', { cacheExports: [`type=local,dest=${cache},mode=max`] })
console.log(`pushed ${image}@${first.exporterResponse['containerimage.digest']}: ${first.executed} executed`)
const second = await onMachine('b', { cacheImports: [`type=local,src=${cache}`] })
console.log(`second machine: ${second.executed} executed, ${second.cached} cached`)
if (second.exporterResponse['containerimage.digest'] !== first.exporterResponse['containerimage.digest']) {
  throw new Error('the second machine pushed another image')
}
