//! Workers: an executor (runc via an OCI runtime bundle) plus a snapshotter plus labels.
