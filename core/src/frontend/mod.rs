//! Frontends: turn a build description (today a Dockerfile) into LLB. Each frontend parses its
//! input into a typed model first; the conversion to a [`crate::graph::State`] graph is built on
//! top of that model.

pub mod dockerfile;
