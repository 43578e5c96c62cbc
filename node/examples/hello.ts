// The hello example in TypeScript: type-checked by `tsc --strict --noEmit` (node/run-tests).
import * as kiln from '../index'

export async function helloBuild(root: string, rootfs: string, ctxDir: string, cacheDir: string): Promise<kiln.SolveResult> {
  const ctx: kiln.State = kiln.local('ctx', { include: ['hello.txt'] })
  const exec: kiln.ExecState = kiln.local('rootfs').run(['/bin/sh', '-c', 'cat /ctx/hello.txt > /greeting'], {
    mounts: [kiln.mount('/ctx', ctx, { readonly: true }), kiln.cacheMount('/var/cache', { sharing: 'locked' })],
    env: { LANG: 'C' },
    network: 'none',
  })
  const app = exec.root().copy(ctx, '/hello.txt', '/app/hello.txt', { createDestPath: true }).withCustomName('copy hello')
  const engine = new kiln.Engine({ root })
  const ac = new AbortController()
  try {
    return await engine.solve(app, {
      locals: { rootfs, ctx: ctxDir },
      cacheExports: [`type=local,dest=${cacheDir},mode=max`],
      cacheImports: [`type=local,src=${cacheDir}`],
      secrets: { token: kiln.secretValue('x') },
      signal: ac.signal,
      onProgress: (ev: kiln.ProgressEvent) => {
        if (ev.type === 'log' && ev.data !== undefined) process.stdout.write(ev.data)
      },
    })
  } catch (e: unknown) {
    if (kiln.isKilnError(e) && e.code === 'KILN_EXEC_FAILED') {
      const tail: string[] = e.logTail ?? []
      console.error(`step ${e.vertex} exited ${e.exitCode}:\n${tail.join('\n')}`)
    }
    throw e
  } finally {
    engine.close()
  }
}

export function roundTrip(state: kiln.State): kiln.Definition {
  const codes: readonly kiln.KilnErrorCode[] = kiln.ERROR_CODES
  void codes
  return kiln.Definition.fromBytes(state.toBytes())
}
