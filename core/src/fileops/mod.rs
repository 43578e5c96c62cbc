//! File operations (mkdir, mkfile, copy, rm, symlink) applied to a mounted filesystem view, and path pattern matching.
