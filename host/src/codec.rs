//! The packed batch encoding of `wit/functions.wit`, host side: records are
//! encoded into one buffer per batch; result lists are read as borrowed views
//! into the buffer the guest returned, so that a sink copies each output once.

use crate::record::Record;

/// The `opt-bytes` length that stands for none.
pub const NONE: u32 = u32::MAX;

/// A result list the guest returned that breaks the encoding.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the guest returned a malformed result list: {0}")]
pub struct Malformed(pub String);

/// Appends the packed encoding of records to a buffer.
#[derive(Default)]
pub struct BatchWriter {
    buf: Vec<u8>,
    count: u32,
}

impl BatchWriter {
    /// An empty batch.
    pub fn new() -> Self {
        BatchWriter {
            buf: vec![0; 4],
            count: 0,
        }
    }

    /// Appends one record.
    pub fn push(&mut self, r: &Record) {
        encode_record(&mut self.buf, r);
        self.count += 1;
    }

    /// Appends a record already in the packed layout.
    pub fn push_encoded(&mut self, encoded: &[u8]) {
        self.buf.extend_from_slice(encoded);
        self.count += 1;
    }

    /// The number of records so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished batch.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[..4].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

/// The packed encoding of a batch of these records.
pub fn encode_batch<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<u8> {
    let mut w = BatchWriter::new();
    for r in records {
        w.push(r);
    }
    w.finish()
}

/// A batch of records already in the packed layout (one copy each).
pub fn pack_batch<'a>(records: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut w = BatchWriter::new();
    for r in records {
        w.push_encoded(r);
    }
    w.finish()
}

/// Appends one record in the packed layout.
pub fn encode_record(buf: &mut Vec<u8>, r: &Record) {
    buf.extend_from_slice(&r.offset.to_le_bytes());
    buf.extend_from_slice(&r.timestamp.to_le_bytes());
    put_opt(buf, r.key.as_deref());
    put_opt(buf, r.value.as_deref());
    buf.extend_from_slice(&(r.headers.len() as u32).to_le_bytes());
    for (name, value) in &r.headers {
        put_bytes(buf, name.as_bytes());
        put_bytes(buf, value);
    }
}

/// Appends a `bytes`.
pub fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
    buf.extend_from_slice(b);
}

/// Appends an `opt-bytes`.
pub fn put_opt(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => put_bytes(buf, b),
        None => buf.extend_from_slice(&NONE.to_le_bytes()),
    }
}

/// Reads the packed encoding.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Whether every byte was read.
    pub fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Malformed> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.buf.len() => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => Err(Malformed(format!(
                "{what} needs {n} bytes at offset {} of {}",
                self.pos,
                self.buf.len()
            ))),
        }
    }

    /// A `u8`.
    pub fn u8(&mut self, what: &str) -> Result<u8, Malformed> {
        Ok(self.take(1, what)?[0])
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self, what: &str) -> Result<u32, Malformed> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A little-endian `s64`.
    pub fn i64(&mut self, what: &str) -> Result<i64, Malformed> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }

    /// A `bytes`.
    pub fn bytes(&mut self, what: &str) -> Result<&'a [u8], Malformed> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }

    /// An `opt-bytes`.
    pub fn opt_bytes(&mut self, what: &str) -> Result<Option<&'a [u8]>, Malformed> {
        match self.u32(what)? {
            NONE => Ok(None),
            n => self.take(n as usize, what).map(Some),
        }
    }

    /// A `string`.
    pub fn string(&mut self, what: &str) -> Result<&'a str, Malformed> {
        let b = self.bytes(what)?;
        std::str::from_utf8(b).map_err(|e| Malformed(format!("{what} is not UTF-8: {e}")))
    }

    /// A record in the packed layout.
    pub fn record(&mut self) -> Result<Record, Malformed> {
        let offset = self.i64("record offset")?;
        let timestamp = self.i64("record timestamp")?;
        let key = self.opt_bytes("record key")?.map(<[u8]>::to_vec);
        let value = self.opt_bytes("record value")?.map(<[u8]>::to_vec);
        let n = self.u32("header count")?;
        let mut headers = Vec::with_capacity(n.min(64) as usize);
        for _ in 0..n {
            let name = self.string("header name")?.to_string();
            let value = self.bytes("header value")?.to_vec();
            headers.push((name, value));
        }
        Ok(Record {
            offset,
            timestamp,
            key,
            value,
            headers,
        })
    }
}

/// An output entry (tag 0), borrowed from the result list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputRef<'a> {
    /// The named output, or the default.
    pub to: Option<&'a str>,
    /// Event time.
    pub timestamp: i64,
    /// The key.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: Option<&'a [u8]>,
    headers_count: u32,
    headers_raw: &'a [u8],
}

impl<'a> OutputRef<'a> {
    /// The headers, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let mut r = Reader::new(self.headers_raw);
        // Validated when the entry was read.
        (0..self.headers_count).filter_map(move |_| {
            let name = r.string("header name").ok()?;
            let value = r.bytes("header value").ok()?;
            Some((name, value))
        })
    }

    /// The output as an owned record, with `offset` as its offset.
    pub fn to_owned(&self, offset: i64) -> (Option<String>, Record) {
        (
            self.to.map(str::to_string),
            Record {
                offset,
                timestamp: self.timestamp,
                key: self.key.map(<[u8]>::to_vec),
                value: self.value.map(<[u8]>::to_vec),
                headers: self
                    .headers()
                    .map(|(n, v)| (n.to_string(), v.to_vec()))
                    .collect(),
            },
        )
    }
}

/// One entry of a result list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    /// Tag 0.
    Output(OutputRef<'a>),
    /// Tag 1.
    Rejected(&'a str),
    /// Tag 2.
    Accumulator(&'a [u8]),
    /// Tag 3.
    Value(Option<&'a [u8]>),
}

/// Reads a result list, checking that every index is below `inputs` and that
/// indexes never decrease.
pub fn read_results<'a>(
    buf: &'a [u8],
    inputs: usize,
    mut each: impl FnMut(u32, Entry<'a>),
) -> Result<(), Malformed> {
    let mut r = Reader::new(buf);
    let count = r.u32("entry count")?;
    let mut last = 0u32;
    for i in 0..count {
        let tag = r.u8("entry tag")?;
        let index = r.u32("entry index")?;
        if index as usize >= inputs {
            return Err(Malformed(format!(
                "entry {i} belongs to input {index}, but the batch had {inputs}"
            )));
        }
        if index < last {
            return Err(Malformed(format!(
                "entry {i} belongs to input {index}, after an entry of input {last}"
            )));
        }
        last = index;
        let entry = match tag {
            0 => {
                let to = match r.opt_bytes("output name")? {
                    None => None,
                    Some(b) => Some(std::str::from_utf8(b).map_err(|e| {
                        Malformed(format!("output name of entry {i} is not UTF-8: {e}"))
                    })?),
                };
                let timestamp = r.i64("output timestamp")?;
                let key = r.opt_bytes("output key")?;
                let value = r.opt_bytes("output value")?;
                let headers_count = r.u32("output header count")?;
                let start = r.pos;
                for _ in 0..headers_count {
                    r.string("output header name")?;
                    r.bytes("output header value")?;
                }
                Entry::Output(OutputRef {
                    to,
                    timestamp,
                    key,
                    value,
                    headers_count,
                    headers_raw: &buf[start..r.pos],
                })
            }
            1 => Entry::Rejected(r.string("rejection message")?),
            2 => Entry::Accumulator(r.bytes("accumulator")?),
            3 => Entry::Value(r.opt_bytes("value")?),
            t => return Err(Malformed(format!("entry {i} has the unknown tag {t}"))),
        };
        each(index, entry);
    }
    if !r.at_end() {
        return Err(Malformed(format!(
            "{} bytes follow the last entry",
            buf.len() - r.pos
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips() {
        let r = Record {
            offset: 7,
            timestamp: -3,
            key: None,
            value: Some(b"v".to_vec()),
            headers: vec![("h".into(), b"x".to_vec()), ("h".into(), vec![])],
        };
        let batch = encode_batch([&r]);
        let mut reader = Reader::new(&batch);
        assert_eq!(reader.u32("count"), Ok(1));
        assert_eq!(reader.record(), Ok(r));
        assert!(reader.at_end());
    }

    #[test]
    fn results_out_of_order_are_malformed() {
        let mut buf = 2u32.to_le_bytes().to_vec();
        for index in [1u32, 0] {
            buf.push(1);
            buf.extend_from_slice(&index.to_le_bytes());
            put_bytes(&mut buf, b"no");
        }
        let err = read_results(&buf, 2, |_, _| {}).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the guest returned a malformed result list: entry 1 belongs to input 0, after an entry of input 1"
        );
    }

    #[test]
    fn truncated_results_are_malformed() {
        let mut buf = 1u32.to_le_bytes().to_vec();
        buf.push(0);
        let err = read_results(&buf, 1, |_, _| {}).unwrap_err();
        assert_eq!(
            err.0,
            "entry index needs 4 bytes at offset 5 of 5".to_string()
        );
    }
}
