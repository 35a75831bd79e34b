//! The per-second series: what moved in each second of a run, for the progress line, the
//! timeline in the report and the picture.

use serde::{Deserialize, Serialize};

/// One second of the measurement (or of the lead-in before it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the measurement started, at the end of this interval.
    pub t: f64,
    /// Messages completed in the interval.
    pub messages: u64,
    /// Bytes written in the interval.
    pub bytes_sent: u64,
    /// Bytes read in the interval.
    pub bytes_received: u64,
    /// Errors counted in the interval.
    pub errors: u64,
    /// Connections established at the end of the interval.
    pub open: u64,
}

impl Second {
    /// Adds `o`'s counts to this one's (the later `t` wins): workers into a run, runs into
    /// a merge.
    pub fn add(&mut self, o: &Second) {
        self.t = self.t.max(o.t);
        self.messages += o.messages;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.errors += o.errors;
        self.open += o.open;
    }

    /// The counts between running totals `earlier` and `self`, as the interval ending at
    /// `t` (the open-connection count is a level, not a total, and is kept).
    pub fn since(&self, earlier: &Second, t: f64) -> Second {
        Second {
            t,
            messages: self.messages - earlier.messages,
            bytes_sent: self.bytes_sent - earlier.bytes_sent,
            bytes_received: self.bytes_received - earlier.bytes_received,
            errors: self.errors - earlier.errors,
            open: self.open,
        }
    }
}
