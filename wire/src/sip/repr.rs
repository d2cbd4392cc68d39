//! Owned message representation with `emit`.

use super::{Error, Message, Start};

/// Owned start line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLineRepr {
    /// Request-Line.
    Request {
        /// Method token.
        method: String,
        /// Request-URI as written.
        uri: String,
    },
    /// Status-Line.
    Response {
        /// Status code, 100..=699.
        status: u16,
        /// Reason phrase.
        reason: String,
    },
}

/// An owned SIP message: start line, header fields as written (name, value)
/// and body. `emit` writes them back verbatim with CRLF line ends and
/// `SIP/2.0`; it does not add or fix Content-Length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRepr {
    /// Start line.
    pub start: StartLineRepr,
    /// Header fields in order, names as written, values without surrounding
    /// white space (folds kept).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl MessageRepr {
    /// Parses `buf` and copies the result.
    ///
    /// # Errors
    /// As [`Message::parse`].
    pub fn parse(buf: &[u8]) -> Result<Self, Error> {
        Ok(Self::from_message(&Message::parse(buf)?))
    }

    /// Copies a parsed view.
    pub fn from_message(m: &Message<'_>) -> Self {
        let start = match m.start {
            Start::Request { method, uri } => StartLineRepr::Request {
                method: method.to_owned(),
                uri: uri.as_str().to_owned(),
            },
            Start::Response { code, reason } => StartLineRepr::Response {
                status: code,
                reason: reason.to_owned(),
            },
        };
        MessageRepr {
            start,
            headers: m
                .headers()
                .map(|h| (h.raw_name.to_owned(), h.value.to_owned()))
                .collect(),
            body: m.body().to_vec(),
        }
    }

    /// Appends the wire form to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        match &self.start {
            StartLineRepr::Request { method, uri } => {
                out.extend_from_slice(method.as_bytes());
                out.push(b' ');
                out.extend_from_slice(uri.as_bytes());
                out.extend_from_slice(b" SIP/2.0\r\n");
            }
            StartLineRepr::Response { status, reason } => {
                out.extend_from_slice(format!("SIP/2.0 {status:03} ").as_bytes());
                out.extend_from_slice(reason.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let wire = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nl: 2\r\n\r\nhi";
        let r = MessageRepr::parse(wire).unwrap();
        let mut out = Vec::new();
        r.emit(&mut out);
        assert_eq!(out, wire);
    }
}
