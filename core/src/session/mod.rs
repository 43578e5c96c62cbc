//! The protocols a BuildKit session's client serves and the daemon calls (issue 11): today the
//! file transfer of `moby.filesync.v1` — fsutil's DiffCopy packet protocol in both directions
//! ([`fsutil`]), raw byte streams for tar exports ([`tar_stream`]) — written against a message
//! stream ([`conn`]) so they run over any transport: a tonic call in either direction, or an
//! in-memory pipe. Wiring them into `kiln serve`'s session tunnel is `server`'s job.

pub mod conn;
pub mod fsutil;
pub mod packet_call;
pub mod proto;
pub mod tar_stream;
