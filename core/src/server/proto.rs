//! BuildKit's API types, generated once in [`crate::api`] (below the engine, so the client uses
//! them too); re-exported here under the name the server's modules use.

pub use crate::api::*;
