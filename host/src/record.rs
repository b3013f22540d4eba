//! Records as the host holds them, and what a step makes of them.

/// A record: what a topic stores and what a guest receives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Position in its input partition, 0-based (for `weir test`, among the
    /// input file's records).
    pub offset: i64,
    /// Event time, in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key; `None` for unkeyed.
    pub key: Option<Vec<u8>>,
    /// The value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers, in order; names may repeat.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A record a step emitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// The named output; `None` is the step's default output.
    pub to: Option<String>,
    /// The record. Its offset is the offset of the input that produced it.
    pub record: Record,
}

/// Why an input record went to the dead-letter output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The guest returned an error for it.
    Rejected(String),
    /// The guest trapped (panic, exception, deadline, memory limit) on it
    /// alone. The host's reason, then, after [`GUEST_OUTPUT`] when the guest
    /// wrote any, the last lines it wrote to stderr.
    Trapped(String),
}

/// Separates a trap's reason (the host's) from what the guest wrote to
/// stderr in a [`Failure::Trapped`] message, so that the two travel as one
/// string through the task and land in two headers of the dead letter.
pub const GUEST_OUTPUT: char = '\u{1e}';

impl Failure {
    /// `rejected` or `trapped`, as the `weir.error.kind` header says.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Rejected(_) => "rejected",
            Failure::Trapped(_) => "trapped",
        }
    }

    /// The reason, as the `weir.error` header says.
    pub fn message(&self) -> &str {
        match self {
            Failure::Rejected(m) => m,
            Failure::Trapped(m) => m.split_once(GUEST_OUTPUT).map_or(m, |(r, _)| r),
        }
    }

    /// What the guest wrote to stderr before it trapped, as the
    /// `weir.error.stderr` header says; `None` when it wrote nothing.
    pub fn guest_output(&self) -> Option<&str> {
        match self {
            Failure::Rejected(_) => None,
            Failure::Trapped(m) => m.split_once(GUEST_OUTPUT).map(|(_, o)| o),
        }
    }
}

/// An input record that a step could not process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The input record, unchanged.
    pub record: Record,
    /// Why.
    pub failure: Failure,
}

impl DeadLetter {
    /// The record as written to a dead-letter topic: the input with the
    /// headers `weir.error` (the host's reason) and `weir.error.kind` added,
    /// and `weir.error.stderr` (what the guest wrote to stderr) after a trap
    /// when the guest wrote anything.
    pub fn to_record(&self) -> Record {
        let mut r = self.record.clone();
        r.headers.push((
            "weir.error".into(),
            self.failure.message().as_bytes().to_vec(),
        ));
        r.headers.push((
            "weir.error.kind".into(),
            self.failure.kind().as_bytes().to_vec(),
        ));
        if let Some(said) = self.failure.guest_output() {
            r.headers
                .push(("weir.error.stderr".into(), said.as_bytes().to_vec()));
        }
        r
    }
}

/// What one input record led to, in input order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An output.
    Output(Output),
    /// The record went to the dead-letter output.
    Dead(DeadLetter),
}

/// A record in the packed layout of `wit/functions.wit` (as the embedded
/// log stores it and as guests receive it), with its fields read in place:
/// records flow from a backend through the steps to a commit as these
/// bytes, without being decoded into owned fields and encoded again.
#[derive(Clone, PartialEq, Eq)]
pub struct Packed {
    bytes: Vec<u8>,
    /// Where the key's and value's bytes are (`None`: no key, a tombstone).
    key: Option<(u32, u32)>,
    value: Option<(u32, u32)>,
    /// Where the header count starts.
    headers_at: u32,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_record().fmt(f)
    }
}

fn field(bytes: &[u8], at: usize, what: &str) -> Result<(Option<(u32, u32)>, usize), Malformed> {
    let len = bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| Malformed(format!("record {what} length needs 4 bytes at offset {at}")))?;
    if len == crate::codec::NONE {
        return Ok((None, at + 4));
    }
    let start = at + 4;
    let end = start
        .checked_add(len as usize)
        .filter(|e| *e <= bytes.len())
        .ok_or_else(|| {
            Malformed(format!(
                "record {what} needs {len} bytes at offset {start} of {}",
                bytes.len()
            ))
        })?;
    Ok((Some((start as u32, len)), end))
}

use crate::codec::Malformed;

impl Packed {
    /// Reads a packed record (checking its layout; nothing is copied).
    pub fn parse(bytes: Vec<u8>) -> Result<Packed, Malformed> {
        if bytes.len() < 16 {
            return Err(Malformed(format!(
                "a record needs at least 16 bytes, this one has {}",
                bytes.len()
            )));
        }
        let (key, at) = field(&bytes, 16, "key")?;
        let (value, at) = field(&bytes, at, "value")?;
        let headers_at = at;
        // Check the headers once, so that reading them later cannot fail.
        let mut r = crate::codec::Reader::new(&bytes[at..]);
        let n = r.u32("header count")?;
        for _ in 0..n {
            r.string("header name")?;
            r.bytes("header value")?;
        }
        if !r.at_end() {
            return Err(Malformed("bytes follow the record's headers".into()));
        }
        Ok(Packed {
            bytes,
            key,
            value,
            headers_at: headers_at as u32,
        })
    }

    /// A packed record from its fields.
    pub fn new<'a>(
        offset: i64,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Packed {
        let mut bytes =
            Vec::with_capacity(40 + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len));
        bytes.extend_from_slice(&offset.to_le_bytes());
        bytes.extend_from_slice(&timestamp.to_le_bytes());
        let put = |b: Option<&[u8]>, bytes: &mut Vec<u8>| {
            let at = bytes.len() + 4;
            crate::codec::put_opt(bytes, b);
            b.map(|b| (at as u32, b.len() as u32))
        };
        let key = put(key, &mut bytes);
        let value = put(value, &mut bytes);
        let headers_at = bytes.len();
        bytes.extend_from_slice(&0u32.to_le_bytes());
        let mut n = 0u32;
        for (name, v) in headers {
            crate::codec::put_bytes(&mut bytes, name.as_bytes());
            crate::codec::put_bytes(&mut bytes, v);
            n += 1;
        }
        bytes[headers_at..headers_at + 4].copy_from_slice(&n.to_le_bytes());
        Packed {
            bytes,
            key,
            value,
            headers_at: headers_at as u32,
        }
    }

    /// Packs a record.
    pub fn from_record(r: &Record) -> Packed {
        Packed::new(
            r.offset,
            r.timestamp,
            r.key.as_deref(),
            r.value.as_deref(),
            r.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        )
    }

    /// Packs an output a guest returned (one copy out of its result list),
    /// with `offset` as its offset.
    pub fn from_output(o: &crate::codec::OutputRef<'_>, offset: i64) -> Packed {
        Packed::new(offset, o.timestamp, o.key, o.value, o.headers())
    }

    fn slice(&self, f: Option<(u32, u32)>) -> Option<&[u8]> {
        f.map(|(s, l)| &self.bytes[s as usize..(s + l) as usize])
    }

    /// Its offset (the input's, for an output).
    pub fn offset(&self) -> i64 {
        i64::from_le_bytes(self.bytes[0..8].try_into().unwrap_or([0; 8]))
    }

    /// Its event time.
    pub fn timestamp(&self) -> i64 {
        i64::from_le_bytes(self.bytes[8..16].try_into().unwrap_or([0; 8]))
    }

    /// Its key.
    pub fn key(&self) -> Option<&[u8]> {
        self.slice(self.key)
    }

    /// Its value (`None`: a tombstone).
    pub fn value(&self) -> Option<&[u8]> {
        self.slice(self.value)
    }

    /// Its headers, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let mut r = crate::codec::Reader::new(&self.bytes[self.headers_at as usize..]);
        let n = r.u32("header count").unwrap_or(0);
        (0..n).filter_map(move |_| {
            let name = r.string("header name").ok()?;
            let value = r.bytes("header value").ok()?;
            Some((name, value))
        })
    }

    /// Sets its offset.
    pub fn set_offset(&mut self, offset: i64) {
        self.bytes[0..8].copy_from_slice(&offset.to_le_bytes());
    }

    /// Its bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Its bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The record with owned fields.
    pub fn to_record(&self) -> Record {
        Record {
            offset: self.offset(),
            timestamp: self.timestamp(),
            key: self.key().map(<[u8]>::to_vec),
            value: self.value().map(<[u8]>::to_vec),
            headers: self
                .headers()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
        }
    }
}

impl From<&Record> for Packed {
    fn from(r: &Record) -> Self {
        Packed::from_record(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trap_keeps_the_reason_and_the_guest_output_in_separate_headers() {
        let d = DeadLetter {
            record: Record::default(),
            failure: Failure::Trapped(format!("deadline exceeded{GUEST_OUTPUT}panicked at x")),
        };
        assert_eq!(
            d.to_record().headers,
            [
                ("weir.error".to_string(), b"deadline exceeded".to_vec()),
                ("weir.error.kind".to_string(), b"trapped".to_vec()),
                ("weir.error.stderr".to_string(), b"panicked at x".to_vec()),
            ]
        );
        let plain = Failure::Trapped("deadline exceeded".into());
        assert_eq!(
            (plain.message(), plain.guest_output()),
            ("deadline exceeded", None)
        );
    }
}
