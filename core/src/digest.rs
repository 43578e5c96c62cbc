//! `Digest`: `sha256:<hex>` content addresses — parsing, formatting, verification and a
//! streaming hasher usable as an `io::Write` sink or a pass-through reader/writer.

use crate::error::{Error, ErrorKind, Result};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};

/// A content digest, always `sha256:` followed by 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(data))))
    }

    /// Parses `sha256:<64 hex>`; anything else is an error naming the input.
    pub fn parse(s: &str) -> Result<Digest> {
        let hex_part = s.strip_prefix("sha256:").ok_or_else(|| {
            Error::new(ErrorKind::Content, format!("invalid digest {s:?}: expected sha256:<64 hex characters>"))
        })?;
        if hex_part.len() != 64 || !hex_part.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(Error::new(
                ErrorKind::Content,
                format!("invalid digest {s:?}: expected sha256:<64 lowercase hex characters>"),
            ));
        }
        Ok(Digest(s.to_owned()))
    }

    /// The hex part (no algorithm prefix).
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The full `sha256:<hex>` string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks that `data` hashes to this digest.
    pub fn verify(&self, data: &[u8]) -> Result<()> {
        let actual = Digest::of(data);
        if &actual != self {
            return Err(Error::new(
                ErrorKind::Content,
                format!("digest mismatch: expected {self}, content has {actual}"),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;
    fn try_from(s: String) -> Result<Digest> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl std::str::FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest> {
        Digest::parse(s)
    }
}

/// A streaming sha256 hasher that counts bytes; wraps an inner writer or reader, or is a sink.
#[derive(Debug)]
pub struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    len: u64,
}

impl<T> Hashing<T> {
    /// Wraps `inner`; every byte written to / read through it is hashed.
    pub fn new(inner: T) -> Self {
        Hashing { inner, hasher: Sha256::new(), len: 0 }
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when no byte was seen.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Returns the inner value, the digest and the byte count.
    pub fn finish(self) -> (T, Digest, u64) {
        let d = Digest(format!("sha256:{}", hex::encode(self.hasher.finalize())));
        (self.inner, d, self.len)
    }

    /// Access to the inner value.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty() {
        assert_eq!(Digest::of(b"").as_str(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn parse_rejects_bad() {
        assert!(Digest::parse("md5:abc").is_err());
        assert!(Digest::parse("sha256:XYZ").is_err());
        let d = Digest::of(b"x");
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
    }

    #[test]
    fn hashing_writer_matches() {
        let mut h = Hashing::new(std::io::sink());
        h.write_all(b"hello").unwrap();
        let (_, d, n) = h.finish();
        assert_eq!(d, Digest::of(b"hello"));
        assert_eq!(n, 5);
    }
}
