//! The solver: vertices, cache keys, scheduling, dedup of identical work, progress events.
