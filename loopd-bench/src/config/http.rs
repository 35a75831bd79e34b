//! `--protocol http`: what each request is, and which answers are right.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::http::{request_head, valid_header, Method};

/// The requests of an HTTP run and the statuses it expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// `--http-method`: POST by default (a body of `-s` bytes), or GET.
    pub method: Method,
    /// `--http-path`: `/echo` by default, whose answer is the body sent, checked byte for
    /// byte; on other paths, status and framing are checked.
    pub path: String,
    /// `--http-header`: extra request headers, `Name: value`.
    pub headers: Vec<String>,
    /// `--expect-status`: the statuses that are not errors; empty means any 2xx.
    pub expect_status: Vec<u16>,
}

impl Default for HttpSettings {
    fn default() -> HttpSettings {
        HttpSettings {
            method: Method::Post,
            path: "/echo".into(),
            headers: Vec::new(),
            expect_status: Vec::new(),
        }
    }
}

/// The HTTP settings as a JSON report records them: what each request was, and which
/// statuses counted as answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedHttp {
    /// `GET` or `POST`.
    pub method: String,
    /// The request path, query included.
    pub path: String,
    /// Extra request headers, `Name: value`.
    pub headers: Vec<String>,
    /// The statuses that are not errors; empty means any 2xx.
    pub expect_status: Vec<u16>,
}

impl From<&HttpSettings> for RecordedHttp {
    fn from(h: &HttpSettings) -> RecordedHttp {
        RecordedHttp {
            method: h.method.name().into(),
            path: h.path.clone(),
            headers: h.headers.clone(),
            expect_status: h.expect_status.clone(),
        }
    }
}

/// Why HTTP settings cannot make a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// A path that does not start with `/`, or holds spaces or control characters.
    Path(String),
    /// A header that is not `Name: value` (or one the run sets itself).
    Header(String),
    /// A status outside 100..=599.
    Status(u16),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Path(p) => write!(
                f,
                "--http-path {p:?}: a path starts with / and has no spaces or control characters"
            ),
            HttpError::Header(h) => write!(
                f,
                "--http-header {h:?}: give Name: value (Host, Content-Length and Transfer-Encoding \
                 are the run's own)"
            ),
            HttpError::Status(s) => write!(f, "--expect-status {s}: a status is 100 to 599"),
        }
    }
}

impl HttpSettings {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), HttpError> {
        if !self.path.starts_with('/') || self.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(HttpError::Path(self.path.clone()));
        }
        if let Some(h) = self.headers.iter().find(|h| !valid_header(h)) {
            return Err(HttpError::Header(h.clone()));
        }
        if let Some(&s) = self
            .expect_status
            .iter()
            .find(|s| !(100..=599).contains(*s))
        {
            return Err(HttpError::Status(s));
        }
        Ok(())
    }

    /// Body bytes per request: `size` for POST, none for GET.
    pub fn body(&self, size: usize) -> usize {
        match self.method {
            Method::Post => size,
            Method::Get => 0,
        }
    }

    /// The head of every request to `target` with a body of `size` bytes.
    pub fn request_head(&self, target: SocketAddr, size: usize) -> Vec<u8> {
        let host = target.to_string();
        request_head(
            self.method,
            &self.path,
            &host,
            &self.headers,
            self.body(size),
        )
    }

    /// Whether the answers are the bodies sent: `POST /echo` (without `?msg=`).
    pub fn verifies_echo(&self) -> bool {
        self.method == Method::Post && self.path == "/echo"
    }

    /// Whether `status` is an answer the run expects.
    pub fn expects(&self, status: u16) -> bool {
        if self.expect_status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.expect_status.contains(&status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults verify echoes and expect 2xx; bad settings are refused with their flag.
    #[test]
    fn settings() {
        let mut h = HttpSettings::default();
        assert!(h.verifies_echo() && h.expects(204) && !h.expects(404));
        assert_eq!(h.validate(), Ok(()));
        h.expect_status = vec![404];
        assert!(h.expects(404) && !h.expects(200));
        h.path = "echo".into();
        assert!(h.validate().is_err());
        h.path = "/a b".into();
        assert!(h.validate().is_err());
        h.path = "/".into();
        h.headers = vec!["Host: x".into()];
        assert!(h
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--http-header"));
        h.headers.clear();
        h.expect_status = vec![99];
        assert!(h.validate().is_err());
        h.expect_status.clear();
        h.method = Method::Get;
        assert_eq!(h.body(64), 0);
        assert!(!h.verifies_echo());
        let head = h.request_head("127.0.0.1:80".parse().unwrap(), 64);
        assert_eq!(head, b"GET / HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n");
    }
}
