//! Layer blobs: writing a tar stream as a compressed layer in one streaming pass (tar bytes →
//! diffID hash → compressor → blob digest → store) and reading layers back decompressed, by
//! media type, with the blob digest verified.

use crate::content::store::{BlobWriter, ContentStore};
use crate::digest::{Digest, Hashing};
use crate::error::{Error, ErrorKind, IoContext, Result};
use std::io::{self, BufReader, Read, Write};

/// OCI layer media types.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip layer media type.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer media type.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker schema 2 uncompressed layer media type.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker schema 2 gzip layer media type.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker-style zstd layer media type (as BuildKit writes it).
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";

/// How a layer blob is compressed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Compression {
    /// Plain tar.
    Uncompressed,
    /// gzip with a level 0-9.
    Gzip {
        /// Compression level (0-9).
        level: u32,
    },
    /// zstd with a level 1-22 (negative levels are the fast modes).
    Zstd {
        /// Compression level.
        level: i32,
    },
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip { level: 6 }
    }
}

/// A layer blob in a content store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerBlob {
    /// Digest of the (compressed) blob.
    pub digest: Digest,
    /// Digest of the uncompressed tar (the image config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
    /// The layer media type.
    pub media_type: String,
}

/// The layer media type for `compression`, OCI or Docker flavoured.
pub fn media_type_for(compression: &Compression, oci: bool) -> &'static str {
    match (compression, oci) {
        (Compression::Uncompressed, true) => OCI_LAYER,
        (Compression::Gzip { .. }, true) => OCI_LAYER_GZIP,
        (Compression::Zstd { .. }, true) => OCI_LAYER_ZSTD,
        (Compression::Uncompressed, false) => DOCKER_LAYER,
        (Compression::Gzip { .. }, false) => DOCKER_LAYER_GZIP,
        (Compression::Zstd { .. }, false) => DOCKER_LAYER_ZSTD,
    }
}

/// Input is judged in blocks of this many bytes (a fixed size, so the blob depends on the tar
/// bytes only, never on how they were written).
const GZIP_BLOCK: usize = 64 * 1024;
/// A block whose byte entropy is at least this many bits per byte is stored, not deflated:
/// random or already compressed data, which deflate cannot shrink (it would end up in a stored
/// block anyway, after searching every position for matches).
const STORED_ENTROPY: f64 = 7.99;

/// gzip (one member, RFC 1952) whose deflate stream stores incompressible blocks directly and
/// deflates the others at the chosen level: the output is as small as plain deflate's (random
/// data is stored by deflate too) but made at memory speed where deflate has nothing to find.
/// After stored blocks the compressor restarts with an empty window: its back references then
/// only reach bytes it emitted itself, which the decoder holds at the same distances.
struct AdaptiveGzip<W: Write> {
    inner: W,
    level: u32,
    deflate: flate2::Compress,
    /// The compressor has taken input since its last restart (a sync flush is due before a
    /// stored block).
    deflating: bool,
    /// Stored blocks were written since the compressor's last restart.
    restart: bool,
    crc: flate2::Crc,
    pending: Vec<u8>,
    out: Vec<u8>,
}

impl<W: Write> AdaptiveGzip<W> {
    fn new(mut inner: W, level: u32) -> io::Result<Self> {
        // The header flate2's GzEncoder writes: no name, no mtime, XFL by level, OS unknown.
        let xfl = if level >= 9 {
            2
        } else if level <= 1 {
            4
        } else {
            0
        };
        inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
        Ok(AdaptiveGzip {
            inner,
            level,
            deflate: flate2::Compress::new(flate2::Compression::new(level), false),
            deflating: false,
            restart: false,
            crc: flate2::Crc::new(),
            pending: Vec::with_capacity(GZIP_BLOCK),
            out: Vec::with_capacity(GZIP_BLOCK + 1024),
        })
    }

    /// Runs the compressor over `input` with `flush`, writing everything it produces.
    fn run(&mut self, input: &[u8], flush: flate2::FlushCompress) -> io::Result<()> {
        let mut used = 0;
        loop {
            self.out.clear();
            let before = self.deflate.total_in();
            let status = self
                .deflate
                .compress_vec(&input[used..], &mut self.out, flush)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            used += (self.deflate.total_in() - before) as usize;
            self.inner.write_all(&self.out)?;
            let room_left = self.out.len() < self.out.capacity();
            match (status, flush) {
                (flate2::Status::StreamEnd, _) => return Ok(()),
                (_, flate2::FlushCompress::Finish) => {}
                _ if used == input.len() && room_left => return Ok(()),
                _ => {}
            }
        }
    }

    fn block(&mut self, data: &[u8]) -> io::Result<()> {
        self.crc.update(data);
        if self.level == 0 || !incompressible(data) {
            if self.restart {
                self.deflate.reset();
                self.restart = false;
            }
            self.deflating = true;
            return self.run(data, flate2::FlushCompress::None);
        }
        if self.deflating {
            // Byte-aligns the stream after everything deflated so far.
            self.run(&[], flate2::FlushCompress::Sync)?;
            self.deflating = false;
        }
        for chunk in data.chunks(u16::MAX as usize) {
            let len = chunk.len() as u16;
            // BFINAL=0, BTYPE=00 (stored), then LEN and its complement, little endian.
            let header = [0u8, len as u8, (len >> 8) as u8, !len as u8, (!len >> 8) as u8];
            self.inner.write_all(&header)?;
            self.inner.write_all(chunk)?;
        }
        self.restart = true;
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() {
            self.block(&rest)?;
        }
        if self.restart {
            self.deflate.reset();
        }
        // The final block (empty when the stream ended with stored blocks).
        self.run(&[], flate2::FlushCompress::Finish)?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.inner.write_all(&trailer)?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for AdaptiveGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.pending.is_empty() && rest.len() >= GZIP_BLOCK {
                let (block, tail) = rest.split_at(GZIP_BLOCK);
                self.block(block)?;
                rest = tail;
                continue;
            }
            let take = (GZIP_BLOCK - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == GZIP_BLOCK {
                let block = std::mem::take(&mut self.pending);
                self.block(&block)?;
                self.pending = block;
                self.pending.clear();
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// True when deflate cannot shrink `data`: its byte entropy is that of noise, and it repeats no
/// 4-byte sequence among those sampled — by content (wherever the sequence's hash has six high
/// zero bits, so both copies of a repeated stretch are sampled at the same places) and every
/// 61 bytes (short periods with few distinct sequences). Noise gives about two thousand
/// distinct samples per block.
fn incompressible(data: &[u8]) -> bool {
    if data.len() < 4096 {
        return false;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let n = data.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    if entropy < STORED_ENTROPY {
        return false;
    }
    let word = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    let by_content = |w: u32| w.wrapping_mul(0x9E37_79B1) >> 26 == 0;
    let last = data.len() - 4;
    let mut samples: Vec<u32> = Vec::with_capacity(data.len() / 61 + data.len() / 48);
    // Each position once: a stride position the content test also picks is left to that test.
    samples.extend((0..=last).step_by(61).map(word).filter(|&w| !by_content(w)));
    // The word at each position in turn, rolled a byte at a time (little endian).
    let mut w = word(0);
    for &next in &data[4..] {
        if by_content(w) {
            samples.push(w);
        }
        w = (w >> 8) | (u32::from(next) << 24);
    }
    if by_content(w) {
        samples.push(w);
    }
    samples.sort_unstable();
    samples.windows(2).filter(|p| p[0] == p[1]).count() <= 3
}

/// The compressor in front of the blob writer.
enum Encoder {
    Plain(BlobWriter),
    Gzip(AdaptiveGzip<BlobWriter>),
    Zstd(zstd::stream::write::Encoder<'static, BlobWriter>),
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
        }
    }
}

impl Encoder {
    fn finish(self) -> io::Result<BlobWriter> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(w) => w.finish(),
            Encoder::Zstd(w) => w.finish(),
        }
    }
}

/// Writes a layer: `produce` writes the uncompressed tar; it is hashed (diffID), compressed,
/// hashed again (blob digest) and stored, all in one pass without an uncompressed copy.
pub fn write_layer(
    store: &ContentStore,
    compression: &Compression,
    oci_media_types: bool,
    produce: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<LayerBlob> {
    let blob = store.writer()?;
    let ingest = store.dir().join("ingest");
    let encoder = match compression {
        Compression::Uncompressed => Encoder::Plain(blob),
        Compression::Gzip { level } => {
            if *level > 9 {
                return Err(Error::option("compression-level", level.to_string(), "gzip accepts levels 0 to 9"));
            }
            Encoder::Gzip(AdaptiveGzip::new(blob, *level).with_path("starting gzip compression of layer in", &ingest)?)
        }
        Compression::Zstd { level } => {
            let range = zstd::compression_level_range();
            if !range.contains(level) {
                return Err(Error::option(
                    "compression-level",
                    level.to_string(),
                    format!("zstd accepts levels {} to {}", range.start(), range.end()),
                ));
            }
            Encoder::Zstd(
                zstd::stream::write::Encoder::new(blob, *level)
                    .with_path("starting zstd compression of layer in", &ingest)?,
            )
        }
    };
    let mut tar = Hashing::new(encoder);
    produce(&mut tar)?;
    let (encoder, diff_id, _) = tar.finish();
    let blob = encoder.finish().with_path("finishing layer compression in", &ingest)?;
    let (digest, size) = blob.commit(None)?;
    let media_type = media_type_for(compression, oci_media_types).to_owned();
    tracing::debug!(%digest, %diff_id, size, %media_type, "wrote layer");
    Ok(LayerBlob { digest, diff_id, size, media_type })
}

/// What a layer media type says about compression; `None` for media types that are not layers.
fn compression_of(media_type: &str) -> Option<Compression> {
    // Non-distributable ("foreign") layers are ordinary tars for reading purposes.
    let mt = media_type
        .replace("application/vnd.oci.image.layer.nondistributable.", "application/vnd.oci.image.layer.")
        .replace("application/vnd.docker.image.rootfs.foreign.", "application/vnd.docker.image.rootfs.");
    match mt.as_str() {
        OCI_LAYER | DOCKER_LAYER => Some(Compression::Uncompressed),
        OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => Some(Compression::Gzip { level: 6 }),
        OCI_LAYER_ZSTD | DOCKER_LAYER_ZSTD => Some(Compression::Zstd { level: 3 }),
        _ => None,
    }
}

/// Opens layer `digest` and returns its uncompressed tar stream. The blob digest is verified
/// when the stream ends: read it to the end (a mismatch surfaces as an `InvalidData` error on
/// the final read, and the corrupt blob is deleted). When the decompressed tar ends, the rest of
/// the blob is read too so that the check always runs.
pub fn layer_reader(store: &ContentStore, digest: &Digest, media_type: &str) -> Result<Box<dyn Read + Send>> {
    let compression = compression_of(media_type).ok_or_else(|| {
        Error::new(
            ErrorKind::Unsupported,
            format!(
                "layer {digest} has media type {media_type:?}, which is not a layer kiln can read; accepted: \
                 {OCI_LAYER}, {OCI_LAYER_GZIP}, {OCI_LAYER_ZSTD}, {DOCKER_LAYER}, {DOCKER_LAYER_GZIP}, \
                 {DOCKER_LAYER_ZSTD} (and their non-distributable variants)"
            ),
        )
    })?;
    let raw = BufReader::with_capacity(256 * 1024, store.open_reader(digest)?);
    Ok(match compression {
        Compression::Uncompressed => Box::new(raw),
        Compression::Gzip { .. } => Box::new(Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(raw)))),
        Compression::Zstd { .. } => Box::new(Decoder::Zstd(
            zstd::stream::read::Decoder::with_buffer(raw)
                .with_path("starting zstd decompression of layer", store.blob_path(digest))?,
        )),
    })
}

/// Like [`layer_reader`], and the uncompressed stream is also checked against `layer.diff_id`
/// when it ends (a mismatch surfaces as an `InvalidData` error on the final read): a layer whose
/// diffID annotation lies is refused, never applied or exported under that diffID. Read it to
/// the end.
pub fn layer_reader_verified(store: &ContentStore, layer: &LayerBlob) -> Result<Box<dyn Read + Send>> {
    let inner = layer_reader(store, &layer.digest, &layer.media_type)?;
    Ok(Box::new(DiffIdReader {
        inner,
        hasher: Some(<sha2::Sha256 as sha2::Digest>::new()),
        expected: layer.diff_id.clone(),
        blob: layer.digest.clone(),
        failed: None,
    }))
}

/// Checks that layer `layer` (present in `store`) decompresses to its diffID: one streaming
/// pass, nothing kept. A `Content` error names both digests.
pub fn verify_diff_id(store: &ContentStore, layer: &LayerBlob) -> Result<()> {
    let mut r = layer_reader_verified(store, layer)?;
    io::copy(&mut r, &mut io::sink()).map_err(|e| {
        crate::content::store::read_error(e, "verifying the diffID of layer", &store.blob_path(&layer.digest))
    })?;
    Ok(())
}

/// Rewrites layer `layer` (in `store`) so that no entry is newer than `epoch` (seconds since the
/// Unix epoch): header mtimes (and GNU atime/ctime, PAX `mtime`/`atime`/`ctime` records) after
/// it become `epoch`, everything else is copied byte for byte (BuildKit v0.13's
/// `rewrite-timestamp`). A layer with nothing to clamp is returned unchanged, so base layers
/// keep their blobs. The rewrite is written with `compression` and verified against the source
/// layer's diffID as it is read.
pub fn clamp_layer_times(
    store: &ContentStore,
    layer: &LayerBlob,
    epoch: i64,
    compression: &Compression,
    oci_media_types: bool,
) -> Result<LayerBlob> {
    let epoch = u64::try_from(epoch).map_err(|_| {
        Error::option("source-date-epoch", epoch.to_string(), "a time at or after 1970-01-01 (seconds >= 0)")
    })?;
    let what = format!("clamping the times of layer {}", layer.digest);
    let path = store.blob_path(&layer.digest);
    let tar_err = |e: io::Error| crate::content::store::read_error(e, &what, &path);
    let mut newer = false;
    {
        let mut archive = tar::Archive::new(layer_reader_verified(store, layer)?);
        for entry in archive.entries().map_err(tar_err)?.raw(true) {
            let mut entry = entry.map_err(tar_err)?;
            newer |= clamp_header(&mut entry.header().clone(), epoch);
            if is_pax(entry.header()) {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).map_err(tar_err)?;
                newer |= clamp_pax(&data, epoch).is_some();
            }
            if newer {
                break;
            }
        }
    }
    if !newer {
        tracing::debug!(layer = %layer.digest, epoch, "no entry newer than SOURCE_DATE_EPOCH; layer kept");
        return Ok(layer.clone());
    }
    let clamped = write_layer(store, compression, oci_media_types, |w| {
        let mut archive = tar::Archive::new(layer_reader_verified(store, layer)?);
        let mut out = tar::Builder::new(w);
        for entry in archive.entries().map_err(tar_err)?.raw(true) {
            let mut entry = entry.map_err(tar_err)?;
            let mut h = entry.header().clone();
            clamp_header(&mut h, epoch);
            if is_pax(&h) {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).map_err(tar_err)?;
                let data = clamp_pax(&data, epoch).unwrap_or(data);
                h.set_size(data.len() as u64);
                h.set_cksum();
                out.append(&h, data.as_slice()).map_err(tar_err)?;
            } else {
                h.set_cksum();
                out.append(&h, &mut entry).map_err(tar_err)?;
            }
        }
        out.finish().map_err(tar_err)?;
        // Read what follows the end-of-archive blocks, so that the diffID check runs.
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(tar_err)?;
        Ok(())
    })?;
    tracing::debug!(from = %layer.digest, to = %clamped.digest, epoch, "layer times clamped to SOURCE_DATE_EPOCH");
    Ok(clamped)
}

fn is_pax(h: &tar::Header) -> bool {
    matches!(h.entry_type(), tar::EntryType::XHeader | tar::EntryType::XGlobalHeader)
}

/// Clamps a header's times to `epoch`; true when one was newer.
fn clamp_header(h: &mut tar::Header, epoch: u64) -> bool {
    let mut changed = false;
    if h.mtime().is_ok_and(|t| t > epoch) {
        h.set_mtime(epoch);
        changed = true;
    }
    if let Some(gnu) = h.as_gnu_mut() {
        if gnu.atime().is_ok_and(|t| t > epoch) {
            gnu.set_atime(epoch);
            changed = true;
        }
        if gnu.ctime().is_ok_and(|t| t > epoch) {
            gnu.set_ctime(epoch);
            changed = true;
        }
    }
    changed
}

/// PAX records (`LEN key=value\n`) with `mtime`/`atime`/`ctime` after `epoch` set to it;
/// `None` when nothing changes (or the data is not well-formed PAX, which is then left alone).
fn clamp_pax(data: &[u8], epoch: u64) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    let mut changed = false;
    while !rest.is_empty() {
        let sp = rest.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return None;
        }
        let (whole, after) = rest.split_at(len);
        let record = &whole[sp + 1..len - 1];
        rest = after;
        let eq = record.iter().position(|b| *b == b'=')?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        let newer = matches!(key, b"mtime" | b"atime" | b"ctime")
            && std::str::from_utf8(value).ok().and_then(|v| v.parse::<f64>().ok()).is_some_and(|t| t > epoch as f64);
        if !newer {
            out.extend_from_slice(whole);
            continue;
        }
        changed = true;
        let body = format!("{}={epoch}\n", String::from_utf8_lossy(key));
        // The length prefix counts itself: find the width that fits.
        let mut n = body.len() + 1;
        while n.to_string().len() + 1 + body.len() != n {
            n = n.to_string().len() + 1 + body.len();
        }
        out.extend_from_slice(format!("{n} {body}").as_bytes());
    }
    changed.then_some(out)
}

/// Uncompressed layer stream that checks the diffID at the end.
struct DiffIdReader {
    inner: Box<dyn Read + Send>,
    /// `None` once the end was reached and checked.
    hasher: Option<sha2::Sha256>,
    expected: Digest,
    blob: Digest,
    failed: Option<String>,
}

impl Read for DiffIdReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest as _;
        if let Some(msg) = &self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg.clone()));
        }
        let n = self.inner.read(buf)?;
        let Some(hasher) = self.hasher.as_mut() else { return Ok(n) };
        if n > 0 || buf.is_empty() {
            hasher.update(&buf[..n]);
            return Ok(n);
        }
        let hasher = self.hasher.take().unwrap_or_default();
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != self.expected.as_str() {
            let msg = format!(
                "layer {} decompresses to {actual}, not to its declared diffID {}: refusing the layer",
                self.blob, self.expected
            );
            tracing::warn!(blob = %self.blob, declared = %self.expected, %actual, "layer diffID mismatch");
            self.failed = Some(msg.clone());
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        }
        Ok(0)
    }
}

type RawBlob = BufReader<Box<dyn Read + Send>>;

/// Decompressor that drains the compressed blob at the end, so its digest check runs.
enum Decoder {
    /// Boxed: zlib-rs keeps its inflate state inline (kilobytes).
    Gzip(Box<flate2::bufread::MultiGzDecoder<RawBlob>>),
    Zstd(zstd::stream::read::Decoder<'static, RawBlob>),
}

impl Decoder {
    fn raw(&mut self) -> &mut RawBlob {
        match self {
            Decoder::Gzip(d) => d.get_mut(),
            Decoder::Zstd(d) => d.get_mut(),
        }
    }
}

impl Read for Decoder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let res = match self {
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        };
        match res {
            Ok(n) if n > 0 || buf.is_empty() => Ok(n),
            Ok(n) => {
                io::copy(self.raw(), &mut io::sink())?;
                Ok(n)
            }
            // A decoding error usually means a corrupt blob: prefer the digest error (which also
            // deletes the blob) when the rest of the blob shows it.
            Err(e) => match io::copy(self.raw(), &mut io::sink()) {
                Err(verify) if verify.kind() == io::ErrorKind::InvalidData => Err(verify),
                _ => Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random bytes (xorshift), incompressible.
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn text(n: usize) -> Vec<u8> {
        (0..).flat_map(|i: u32| format!("line {i} of some text\n").into_bytes()).take(n).collect()
    }

    fn adaptive(data: &[u8], level: u32, chunk: usize) -> Vec<u8> {
        let mut g = AdaptiveGzip::new(Vec::new(), level).unwrap();
        for c in data.chunks(chunk.max(1)) {
            g.write_all(c).unwrap();
        }
        g.finish().unwrap()
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn adaptive_gzip_stores_noise_deflates_text_and_round_trips() {
        // Mixtures across block boundaries: noise, text, noise, a short tail; empty input.
        let mut mixed = noise(200_000, 7);
        mixed.extend(text(150_000));
        mixed.extend(noise(70_001, 9));
        mixed.extend(text(333));
        for data in [Vec::new(), text(10), noise(3000, 1), text(300_000), noise(300_000, 3), mixed.clone()] {
            for level in [0, 1, 6, 9] {
                let gz = adaptive(&data, level, 65_536);
                assert_eq!(gunzip(&gz), data, "level {level}, {} bytes", data.len());
                // The blob depends on the bytes only, never on how they were written.
                for chunk in [1_000, 4_097, 100_000] {
                    assert_eq!(adaptive(&data, level, chunk), gz, "chunking {chunk}");
                }
            }
        }
        // Noise is stored (a few bytes of framing per 64 KiB), text still deflates.
        let n = noise(1_000_000, 5);
        let gz = adaptive(&n, 6, 8192);
        assert!(gz.len() < n.len() + 200, "{} for {}", gz.len(), n.len());
        // Written as our own stored blocks (65,535 bytes, not final), not by the compressor.
        assert_eq!(&gz[10..15], &[0, 0xff, 0xff, 0, 0]);
        let t = text(1_000_000);
        let gz = adaptive(&t, 6, 8192);
        assert!(gz.len() < t.len() / 4, "{} for {}", gz.len(), t.len());
        // Mixed data compresses as well as plain deflate within 1%.
        let plain = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            e.write_all(&mixed).unwrap();
            e.finish().unwrap()
        };
        let ours = adaptive(&mixed, 6, 8192);
        assert!(ours.len() as f64 <= plain.len() as f64 * 1.01, "{} vs {}", ours.len(), plain.len());
    }

    #[test]
    fn entropy_test_separates_noise_from_text() {
        assert!(incompressible(&noise(GZIP_BLOCK, 3)));
        assert!(!incompressible(&text(GZIP_BLOCK)));
        // High byte entropy, yet deflate shrinks them: a short period, a repeated stretch of noise.
        let ramp: Vec<u8> = (0..GZIP_BLOCK).map(|i| i as u8).collect();
        assert!(!incompressible(&ramp));
        let mut twice = noise(20_000, 4);
        twice.extend(noise(5_000, 8));
        twice.extend(noise(20_000, 4));
        twice.extend(noise(20_536, 9));
        assert!(!incompressible(&twice));
        assert!(!incompressible(&noise(1000, 3)), "short blocks are always deflated");
    }

    #[test]
    fn adaptive_gzip_is_read_by_system_gzip() {
        let mut data = text(100_000);
        data.extend(noise(150_000, 11));
        data.extend(text(100_000));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.gz");
        std::fs::write(&f, adaptive(&data, 6, 10_000)).unwrap();
        let out = std::process::Command::new("gzip").arg("-dc").arg(&f).output().expect("gzip is installed");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.stdout, data);
    }

    fn roundtrip(c: Compression) {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let payload: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let blob = write_layer(&s, &c, true, |w| {
            w.write_all(&payload).unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(blob.diff_id, Digest::of(&payload));
        assert_eq!(blob.digest, Digest::of(&s.read(&blob.digest).unwrap()));
        assert_eq!(blob.size, s.size(&blob.digest).unwrap());
        let mut out = Vec::new();
        layer_reader(&s, &blob.digest, &blob.media_type).unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, payload);
    }

    #[test]
    fn roundtrip_all_compressions() {
        roundtrip(Compression::Uncompressed);
        roundtrip(Compression::default());
        roundtrip(Compression::Zstd { level: 3 });
    }

    #[test]
    fn media_types() {
        assert_eq!(media_type_for(&Compression::default(), true), OCI_LAYER_GZIP);
        assert_eq!(media_type_for(&Compression::Zstd { level: 1 }, false), DOCKER_LAYER_ZSTD);
        assert_eq!(
            compression_of("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip").unwrap(),
            Compression::Gzip { level: 6 }
        );
        assert!(compression_of("application/json").is_none());
    }

    #[test]
    fn pax_times_are_clamped_with_correct_record_lengths() {
        let pax = b"30 mtime=1800000000.123456789\n20 path=some/file.x\n";
        let out = clamp_pax(pax, 1_700_000_000).unwrap();
        assert_eq!(out, b"20 mtime=1700000000\n20 path=some/file.x\n");
        assert_eq!(clamp_pax(&out, 1_700_000_000), None, "nothing newer: unchanged");
        assert_eq!(clamp_pax(b"99 mtime=1\n", 0), None, "malformed PAX is left alone");
    }

    #[test]
    fn clamping_rewrites_only_newer_entries() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let tar_with = |mtimes: &[u64]| {
            let mut b = tar::Builder::new(Vec::new());
            for (i, t) in mtimes.iter().enumerate() {
                let mut h = tar::Header::new_gnu();
                h.set_size(1);
                h.set_mode(0o644);
                h.set_mtime(*t);
                h.set_cksum();
                b.append_data(&mut h, format!("f{i}"), &b"x"[..]).unwrap();
            }
            b.into_inner().unwrap()
        };
        let write = |bytes: Vec<u8>| {
            write_layer(&s, &Compression::default(), true, |w| w.write_all(&bytes).with_path("test", "x")).unwrap()
        };
        let old = write(tar_with(&[5, 10]));
        assert_eq!(clamp_layer_times(&s, &old, 10, &Compression::default(), true).unwrap(), old);
        let new = write(tar_with(&[5, 20]));
        let clamped = clamp_layer_times(&s, &new, 10, &Compression::default(), true).unwrap();
        assert_ne!(clamped.digest, new.digest);
        let mut a = tar::Archive::new(layer_reader_verified(&s, &clamped).unwrap());
        let times: Vec<u64> = a.entries().unwrap().map(|e| e.unwrap().header().mtime().unwrap()).collect();
        assert_eq!(times, vec![5, 10]);
    }

    #[test]
    fn bad_level_and_unknown_media_type() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let err = write_layer(&s, &Compression::Gzip { level: 11 }, true, |_| Ok(())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Option);
        let d = s.write_bytes(b"x").unwrap();
        assert_eq!(layer_reader(&s, &d, "text/plain").err().unwrap().kind(), ErrorKind::Unsupported);
    }

    #[test]
    fn corrupt_gzip_layer_is_detected_when_tar_stops_early() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let blob = write_layer(&s, &Compression::default(), true, |w| {
            w.write_all(b"data").unwrap();
            Ok(())
        })
        .unwrap();
        // Append trailing garbage: the gzip stream still decodes, only the digest check can tell.
        let path = s.blob_path(&blob.digest);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0u8; 16]);
        std::fs::write(&path, bytes).unwrap();
        let mut out = Vec::new();
        let err = layer_reader(&s, &blob.digest, &blob.media_type).unwrap().read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(!s.has(&blob.digest));
    }
}
