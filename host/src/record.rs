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
    /// The guest trapped (panic, exception, deadline, memory limit) on it alone.
    Trapped(String),
}

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
            Failure::Rejected(m) | Failure::Trapped(m) => m,
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
    /// headers `weir.error` (the reason) and `weir.error.kind` added.
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
