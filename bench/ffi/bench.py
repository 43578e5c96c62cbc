"""Python face of bench/ffi: the 1,000-step file chain solved cold once on ROOT, then re-solved
fully cached in a new Engine on ROOT 5 times; prints `python <median ms>`.

    python bench.py ROOT
"""

from __future__ import annotations

import statistics
import sys
import time

import kiln

STEPS = 1000
RUNS = 5


def graph() -> kiln.State:
    # A custom name ends the chain of file actions: every step is its own vertex.
    st = kiln.scratch()
    for i in range(STEPS):
        st = st.mkfile(f"/f{i}", str(i)).with_custom_name(f"step {i}")
    return st


def main(root: str) -> None:
    st = graph()
    with kiln.Engine(root) as engine:
        cold = engine.solve(st, progress="quiet")
        assert cold.executed == STEPS, cold
    times = []
    for _ in range(RUNS):
        with kiln.Engine(root) as engine:
            t = time.perf_counter()
            warm = engine.solve(st, progress="quiet")
            times.append((time.perf_counter() - t) * 1000)
            assert warm.executed == 0, warm
    print(f"python {statistics.median(times):.1f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
