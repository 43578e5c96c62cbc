// Hand-written entry types of the `kiln` npm package: native.d.ts (classes and functions, written
// by `napi build`), builder.d.ts (the builder's options objects, written by kiln-gen from
// dev/gen/src/surface.rs) plus typed error codes.
export * from './native'
export * from './builder'

/** The stable `code` of a KilnError: one per kiln::ErrorKind, plus KILN_UNKNOWN as a fallback. */
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
  /** KILN_IO / KILN_ROOT_IN_USE: the path involved. */
  path?: string
}

/** Every code, in kiln::ErrorKind order, then KILN_UNKNOWN. */
export declare const ERROR_CODES: readonly KilnErrorCode[]

/** Narrows an unknown caught value to a KilnError. */
export declare function isKilnError(e: unknown): e is KilnError

declare module './native' {
  interface Engine {
    /** `await using engine = new Engine(...)`: closes the handle when the scope ends. */
    [Symbol.asyncDispose](): Promise<void>
    /** `using engine = new Engine(...)`: closes the handle when the scope ends. */
    [Symbol.dispose](): void
  }
}
