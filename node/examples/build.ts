// A client-side build in TypeScript (engine.build): type-checked by `tsc --strict --noEmit`
// (node/run-tests); node/test/build.test.mjs runs the same calls.
import * as kiln from '../index'

export async function pickAndBuild(root: string, rootfs: string, out: string, signal?: AbortSignal): Promise<kiln.SolveResult> {
  const engine = new kiln.Engine({ root })
  try {
    return await engine.build(
      async (ctx: kiln.BuildContext): Promise<kiln.BuildResult | undefined> => {
        const base = kiln.local('rootfs')
        const probe: kiln.Ref = await ctx.solve(base.run(['/bin/sh', '-c', 'echo second > /choice']).root())
        const choice: Buffer = await probe.readFile('/choice')
        const head: Buffer = await probe.readFile('/choice', { offset: 0, length: 3 })
        const bins: kiln.DirEntry[] = await probe.readDir('/bin', { includePattern: 's*' })
        const names: string[] = bins.filter((d) => d.isFile || d.isSymlink).map((d) => d.name)
        try {
          await probe.statFile('/nope')
        } catch (e: unknown) {
          if (!(kiln.isKilnError(e) && e.code === 'KILN_NOT_FOUND')) throw e
        }
        ctx.warn('probe', `read ${head.length} bytes; /bin has ${names.length} s* entries`)
        const mode: string | undefined = ctx.frontendOpts['mode']
        const next = base.run(['/bin/sh', '-c', `echo ${choice.toString().trim()} ${mode ?? ''} > /result`]).root()
        if (mode === 'set') {
          await ctx.setResult(next, { imageConfig: { cmd: ['cat', '/result'] } })
          return undefined
        }
        return next
      },
      {
        locals: { rootfs },
        outputs: [`type=local,dest=${out}`],
        frontendOpts: { mode: 'return' },
        signal,
        onProgress: (ev: kiln.ProgressEvent) => {
          if (ev.type === 'warning') console.log(ev.message)
        },
      },
    )
  } finally {
    engine.close()
  }
}
