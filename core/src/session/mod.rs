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
pub mod tunnel_io;

/// Bytes buffered in each direction of a session tunnel (the HTTP/2 connection carried by a
/// `Control.Session` stream), and the most one tunnel message carries: large enough that a
/// file transfer is not cut into many small messages.
pub const TUNNEL_BUFFER: usize = 1 << 20;

/// HTTP/2 flow-control window of each stream, on every connection of the API (the control
/// socket and the session tunnel inside it): h2's 64 KiB default makes a file transfer wait for
/// a window update every few messages.
pub const STREAM_WINDOW: u32 = 8 << 20;
/// HTTP/2 flow-control window of each connection (see [`STREAM_WINDOW`]).
pub const CONNECTION_WINDOW: u32 = 16 << 20;
/// The largest HTTP/2 frame each end of the API accepts (what it advertises): h2's 16 KiB
/// default cuts every 512 KiB DiffCopy packet into 32 DATA frames on each of the two
/// connections it crosses; a 1 MiB frame carries a packet, or a tunnel message, whole.
pub const MAX_FRAME: u32 = 1 << 20;
