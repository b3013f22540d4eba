//! The packed batch encoding of `wit/functions.wit`, guest side: zero-copy
//! decoding of what the host sends, and encoding of what the guest returns.

use crate::{Headers, Output, Record};

/// The length that stands for "none" in an `opt-bytes`.
pub const NONE: u32 = u32::MAX;

/// Result-list tags.
pub const TAG_OUTPUT: u8 = 0;
/// A rejected input.
pub const TAG_REJECTED: u8 = 1;
/// A new accumulator.
pub const TAG_ACCUMULATOR: u8 = 2;
/// A computed value.
pub const TAG_VALUE: u8 = 3;

/// Reads the packed encoding. A malformed buffer can only come from a host
/// bug, so a failed read panics (the host turns that into a trap it reports).
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

#[allow(clippy::expect_used)]
impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    #[inline]
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    #[inline]
    fn take(&mut self, n: usize) -> &'a [u8] {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                s
            }
            None => panic!(
                "weir-guest: the host sent a malformed batch (needed {n} bytes at offset {}, length {})",
                self.pos,
                self.buf.len()
            ),
        }
    }

    /// A little-endian u32.
    #[inline]
    pub fn u32(&mut self) -> u32 {
        let b = self.take(4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// A little-endian i64.
    #[inline]
    pub fn i64(&mut self) -> i64 {
        let b = self.take(8);
        i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// A `bytes`.
    #[inline]
    pub fn bytes(&mut self) -> &'a [u8] {
        let n = self.u32() as usize;
        self.take(n)
    }

    /// An `opt-bytes`.
    #[inline]
    pub fn opt_bytes(&mut self) -> Option<&'a [u8]> {
        match self.u32() {
            NONE => None,
            n => Some(self.take(n as usize)),
        }
    }

    /// A record in the packed layout; its headers are decoded lazily.
    #[inline]
    pub fn record(&mut self) -> Record<'a> {
        let offset = self.i64();
        let timestamp = self.i64();
        let key = self.opt_bytes();
        let value = self.opt_bytes();
        let count = self.u32();
        let start = self.pos;
        for _ in 0..count {
            self.bytes();
            self.bytes();
        }
        Record {
            offset,
            timestamp,
            key,
            value,
            headers: Headers {
                count,
                raw: &self.buf[start..self.pos],
            },
        }
    }
}

/// Builds a result list.
pub struct Writer {
    buf: Vec<u8>,
    count: u32,
}

impl Writer {
    /// An empty result list with room for about `capacity` bytes.
    #[inline]
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(4));
        buf.extend_from_slice(&0u32.to_le_bytes());
        Writer { buf, count: 0 }
    }

    #[inline]
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    #[inline]
    fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    #[inline]
    fn bytes(&mut self, b: &[u8]) {
        self.u32(len32(b.len()));
        self.buf.extend_from_slice(b);
    }

    #[inline]
    fn opt_bytes(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => self.bytes(b),
            None => self.u32(NONE),
        }
    }

    #[inline]
    fn entry(&mut self, tag: u8, index: u32) {
        self.count += 1;
        self.buf.push(tag);
        self.u32(index);
    }

    /// An output (tag 0) of input `index`; its timestamp defaults to `default_ts`.
    #[inline]
    pub fn output(&mut self, index: u32, out: &Output, default_ts: i64) {
        self.entry(TAG_OUTPUT, index);
        self.opt_bytes(out.to.as_deref().map(str::as_bytes));
        self.i64(out.timestamp.unwrap_or(default_ts));
        self.opt_bytes(out.key.as_deref());
        self.opt_bytes(out.value.as_deref());
        self.u32(len32(out.headers.len()));
        for (name, value) in &out.headers {
            self.bytes(name.as_bytes());
            self.bytes(value);
        }
    }

    /// A rejection (tag 1) of input `index`.
    #[inline]
    pub fn rejected(&mut self, index: u32, message: &str) {
        self.entry(TAG_REJECTED, index);
        self.bytes(message.as_bytes());
    }

    /// An accumulator (tag 2) of group `index`.
    #[inline]
    pub fn accumulator(&mut self, index: u32, acc: &[u8]) {
        self.entry(TAG_ACCUMULATOR, index);
        self.bytes(acc);
    }

    /// A value (tag 3) of item `index`.
    #[inline]
    pub fn value(&mut self, index: u32, value: Option<&[u8]>) {
        self.entry(TAG_VALUE, index);
        self.opt_bytes(value);
    }

    /// The finished result list.
    #[inline]
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[..4].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

#[allow(clippy::panic)]
fn len32(n: usize) -> u32 {
    match u32::try_from(n) {
        Ok(n) if n != NONE => n,
        _ => panic!("weir-guest: a key, value or header of {n} bytes is larger than 4 GiB"),
    }
}
