// Node face of bench/ffi: the 1,000-step file chain solved cold once on ROOT, then re-solved
// fully cached in a new Engine on ROOT 5 times; prints `node <median ms>`.
//
//   node bench.mjs ROOT
import { createRequire } from 'node:module'
import { performance } from 'node:perf_hooks'

const require = createRequire(import.meta.url)
const kiln = require('../../node/index.js')
const STEPS = 1000
const RUNS = 5

function graph() {
  // A custom name ends the chain of file actions: every step is its own vertex.
  let st = kiln.scratch()
  for (let i = 0; i < STEPS; i++) st = st.mkfile(`/f${i}`, `${i}`).withCustomName(`step ${i}`)
  return st
}

const root = process.argv[2]
if (!root) {
  console.error('usage: node bench.mjs ROOT')
  process.exit(2)
}
const st = graph()
{
  const engine = new kiln.Engine({ root })
  const cold = await engine.solve(st)
  if (cold.executed !== STEPS) throw new Error(`cold solve executed ${cold.executed} steps`)
  engine.close()
}
const times = []
for (let i = 0; i < RUNS; i++) {
  const engine = new kiln.Engine({ root })
  const t = performance.now()
  const warm = await engine.solve(st)
  times.push(performance.now() - t)
  if (warm.executed !== 0) throw new Error(`cached solve executed ${warm.executed} steps`)
  engine.close()
}
times.sort((a, b) => a - b)
console.log(`node ${times[Math.floor(RUNS / 2)].toFixed(1)}`)
