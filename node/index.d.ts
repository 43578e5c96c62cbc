// Hand-written entry types of the `kiln` npm package: native.d.ts (classes and functions, written
// by `napi build`), builder.d.ts (the builder's options objects, written by kiln-gen from
// dev/gen/src/surface.rs) plus typed error codes.
export * from './native'
export * from './builder'
import type { BuildContext, Definition, ExecState, Ref, SolveOptions, SolveResult, State } from './native'

/**
 * The stable `code` of a KilnError: one per kiln::ErrorKind, KILN_NOT_FOUND (a path missing from a
 * build result, kind `'file_op'`), and KILN_UNKNOWN as a fallback.
 */
export type KilnErrorCode =
  | 'KILN_DEFINITION'
  | 'KILN_OPTION_INVALID'
  | 'KILN_EXEC_FAILED'
  | 'KILN_SOURCE'
  | 'KILN_FILE_OP'
  | 'KILN_WORKER'
  | 'KILN_SNAPSHOT'
  | 'KILN_CONTENT'
  | 'KILN_CACHE'
  | 'KILN_REGISTRY'
  | 'KILN_EXPORT'
  | 'KILN_ROOT_IN_USE'
  | 'KILN_UNSUPPORTED'
  | 'KILN_CANCELLED'
  | 'KILN_IO'
  | 'KILN_INTERNAL'
  | 'KILN_NOT_FOUND'
  | 'KILN_UNKNOWN'

/** Every error thrown or rejected by kiln. Fields beyond `code`/`kind` depend on the code. */
export interface KilnError extends Error {
  name: 'KilnError'
  code: KilnErrorCode
  /** kiln::ErrorKind name (`'exec'`, `'option'`, ...). */
  kind: string
  /** KILN_EXEC_FAILED: the process exit code (128+signal when killed). */
  exitCode?: number
  /** KILN_EXEC_FAILED: name of the failed step. */
  vertex?: string
  /** KILN_EXEC_FAILED: the command line that ran. */
  command?: string
  /** KILN_EXEC_FAILED: the last lines of the step's output. */
  logTail?: string[]
  /** KILN_OPTION_INVALID: the rejected key, its value and what is accepted. */
  key?: string
  value?: string
  expected?: string
  /** KILN_DEFINITION: digest of the offending op, when known. */
  op?: string
  /** KILN_IO / KILN_ROOT_IN_USE / KILN_NOT_FOUND: the path involved. */
  path?: string
}

/** Every code, in kiln::ErrorKind order, then KILN_UNKNOWN. */
export declare const ERROR_CODES: readonly KilnErrorCode[]

/** Narrows an unknown caught value to a KilnError. */
export declare function isKilnError(e: unknown): e is KilnError

/** What a build function may return or pass to `ctx.setResult` (a graph is solved first). */
export type BuildResult = Ref | State | ExecState | Definition

/** A client-side build function: solves, reads, decides, and returns the result (or nothing). */
export type BuildFunction = (
  ctx: BuildContext,
) => BuildResult | null | undefined | void | PromiseLike<BuildResult | null | undefined | void>

/** Options of `engine.build(fn, options)`: those of `engine.solve`, plus frontend options. */
export interface BuildOptions extends SolveOptions {
  /**
   * Frontend options (BuildKit's `FrontendOpt`), readable as `ctx.frontendOpts`; `cache-imports`
   * (BuildKit's JSON list, `[{"Type":"local","Attrs":{"src":"DIR"}}]`) adds cache imports to every
   * inner solve.
   */
  frontendOpts?: Record<string, string>
}

/** Options of `engine.solve({ frontend, ... })`: a build with a built-in frontend. */
export interface FrontendSolveOptions extends SolveOptions {
  /** The frontend: `dockerfile.v0` (the Dockerfile from `locals.dockerfile`, the context from `locals.context`). */
  frontend: string
  /** Its options under BuildKit's names (`filename`, `target`, `build-arg:NAME`, `context:NAME`, ...). */
  frontendOpts?: Record<string, string>
}

declare module './native' {
  interface Engine {
    /**
     * Builds with a built-in frontend (BuildKit's `Solve` with a frontend): `dockerfile.v0` reads
     * the Dockerfile from the local `dockerfile` and the build context from the local `context`;
     * the result and its image config go to `outputs` as a solve's.
     */
    solve(options: FrontendSolveOptions): Promise<SolveResult>
    /**
     * A client-side build (BuildKit's gateway frontend, embedded): `fn(ctx)` runs on the JS thread,
     * solves graphs with `ctx.solve`, reads the refs, and returns the result (a State, Definition
     * or Ref; or `undefined` for the one set with `ctx.setResult`, else the empty result), which
     * goes to `outputs` and `cacheExports` as a solve's would. The build's options (locals,
     * secrets, cacheImports, progress, ...) apply to every inner solve. If `fn` throws or
     * rejects, the promise rejects with that same value once every ref is released; `signal`
     * cancels the whole build (`KILN_CANCELLED`). Refs are unreadable after the build.
     */
    build(fn: BuildFunction, options?: BuildOptions): Promise<SolveResult>
    /** `await using engine = new Engine(...)`: closes the handle when the scope ends. */
    [Symbol.asyncDispose](): Promise<void>
    /** `using engine = new Engine(...)`: closes the handle when the scope ends. */
    [Symbol.dispose](): void
  }
}
