//! Records as the host holds them, and what a step makes of them.

/// A record: what a topic stores and what a guest receives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Position in its input partition (for `weir test`, the line number).
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
