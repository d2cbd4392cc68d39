//! Messages between members and their binary encoding.
//!
//! A frame on a link is `u32` big-endian length, then one byte of protocol version
//! ([`PROTOCOL_VERSION`]), then the message in postcard (serde, varint integers). postcard
//! was chosen over bincode for its stable, documented wire format (1.0 spec) and because
//! decoding untrusted bytes returns errors rather than allocating from attacker-given
//! lengths beyond the input; the frame length is capped at [`MAX_FRAME`] before decoding.

use serde::{Deserialize, Serialize};

use crate::storage::BlobStage;
use crate::types::{CdrId, Change, Hlc, MemberId, Row, Table, VersionVector};

/// Protocol version carried in every frame.
pub const PROTOCOL_VERSION: u8 = 2;

/// Largest frame accepted (bytes, excluding the 4-byte length).
pub const MAX_FRAME: usize = 8 << 20;

/// A message on a member-to-member link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// First message on a link, each way: who I am and what I durably hold.
    Hello {
        /// Sender.
        member: MemberId,
        /// Sender's durable version vector.
        applied: VersionVector,
        /// Sender's clock: every change it originates later has a greater HLC.
        clock: Hlc,
        /// Sender's configured region (data sovereignty: which domains' data it may
        /// hold). Authenticated only as far as the member is: its certificate.
        region: Option<String>,
    },
    /// Log entries, in sequence order per origin.
    Changes(Vec<Change>),
    /// What the sender now durably holds (also sent periodically as keepalive).
    Ack {
        /// Sender's durable version vector.
        applied: VersionVector,
        /// Sender's clock (see `Hello::clock`).
        clock: Hlc,
        /// Sender's region (see `Hello::region`; repeated so a lost `Hello` costs nothing).
        region: Option<String>,
    },
    /// Part of a snapshot (bootstrap of a member whose needs precede our log). The
    /// receiver applies rows and CDRs as parts arrive (both idempotent) and takes the
    /// version vector only once it holds all `parts` parts of the same snapshot.
    Snapshot {
        /// Identifies the snapshot: a fresh reading of the sender's clock. (Two snapshots
        /// with the same version vector can differ: rows taken from other snapshots do not
        /// move it.)
        id: Hlc,
        /// The version vector the snapshot is consistent with.
        applied: VersionVector,
        /// The sender's tombstone-collection horizon (informational: tombstones at or
        /// below it were collected, so their absence from the snapshot is expected).
        collected: Hlc,
        /// Per origin, up to which change the receiver holds placeholders once it takes
        /// this snapshot (data sovereignty: the sender's own placeholders, and the origins
        /// of data it left out because the receiver's region may not hold it).
        withheld: VersionVector,
        /// Index of this part, from 0.
        part: u32,
        /// Number of parts.
        parts: u32,
        /// State items.
        items: Vec<SnapshotItem>,
    },
}

/// One item of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotItem {
    /// A row or tombstone.
    Row {
        /// Table.
        table: Table,
        /// Key.
        key: String,
        /// Row with its version.
        row: Row,
    },
    /// A CDR.
    Cdr {
        /// Identity.
        id: CdrId,
        /// When it was written.
        hlc: Hlc,
        /// Encoded record.
        record: Vec<u8>,
    },
    /// A blob half received from `origin`.
    Stage {
        /// Origin of the blob.
        origin: MemberId,
        /// Its staging state.
        stage: BlobStage,
    },
}

/// A peer sent something we cannot accept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The bytes are not a message (syntax).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A frame longer than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// A protocol version we do not speak.
    #[error("unsupported protocol version {0}")]
    Version(u8),
    /// A well-formed message that breaks the protocol (semantics), e.g. a `Hello` naming
    /// another member than the authenticated one.
    #[error("peer misbehaved: {0}")]
    Misbehaved(String),
}

impl Message {
    /// Encodes the frame body (version byte + message), without the length prefix.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let out = vec![PROTOCOL_VERSION];
        // postcard only fails on writer errors; `Vec` never fails, and all our types
        // serialize (no maps with non-string keys issue in postcard).
        match postcard::to_extend(self, out) {
            Ok(v) => v,
            Err(_) => unreachable!("postcard into Vec cannot fail"),
        }
    }

    /// Decodes a frame body.
    ///
    /// # Errors
    /// [`ProtocolError::TooLarge`], [`ProtocolError::Version`] or
    /// [`ProtocolError::Malformed`].
    pub fn decode(body: &[u8]) -> Result<Message, ProtocolError> {
        if body.len() > MAX_FRAME {
            return Err(ProtocolError::TooLarge(body.len()));
        }
        let (&v, rest) = body
            .split_first()
            .ok_or_else(|| ProtocolError::Malformed("empty frame".into()))?;
        if v != PROTOCOL_VERSION {
            return Err(ProtocolError::Version(v));
        }
        let (msg, tail) = postcard::take_from_bytes::<Message>(rest)
            .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        if !tail.is_empty() {
            return Err(ProtocolError::Malformed(format!(
                "{} trailing bytes",
                tail.len()
            )));
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Op, Seq, Version};

    fn sample() -> Vec<Message> {
        let mut vv = VersionVector::default();
        vv.set(MemberId(1), Seq(42));
        vv.set(MemberId(7), Seq(1 << 40));
        let hlc = Hlc {
            wall: 1_764_000_000_000,
            logical: 3,
        };
        vec![
            Message::Hello {
                member: MemberId(3),
                applied: vv.clone(),
                clock: hlc,
                region: Some("eu-west".into()),
            },
            Message::Changes(vec![
                Change {
                    origin: MemberId(1),
                    seq: Seq(43),
                    hlc,
                    op: Op::Put {
                        table: Table::Subscribers,
                        key: "example.com/alice".into(),
                        value: vec![1, 2, 3],
                    },
                },
                Change {
                    origin: MemberId(1),
                    seq: Seq(44),
                    hlc,
                    op: Op::BlobChunk {
                        table: Table::Greetings,
                        key: "g".into(),
                        index: 0,
                        count: 2,
                        bytes: vec![0xff; 100],
                    },
                },
                Change {
                    origin: MemberId(1),
                    seq: Seq(45),
                    hlc,
                    op: Op::Placeholder {
                        domain: "eu.example".into(),
                    },
                },
            ]),
            Message::Ack {
                applied: vv.clone(),
                clock: hlc,
                region: None,
            },
            Message::Snapshot {
                id: hlc,
                applied: vv.clone(),
                collected: hlc,
                withheld: vv,
                part: 0,
                parts: 1,
                items: vec![SnapshotItem::Row {
                    table: Table::Domains,
                    key: "example.com".into(),
                    row: Row {
                        seq: Seq(3),
                        version: Version {
                            hlc,
                            origin: MemberId(2),
                        },
                        value: None,
                    },
                }],
            },
        ]
    }

    #[test]
    fn encode_decode_round_trip() {
        for m in sample() {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn ack_encoding_is_stable() {
        // Version 2, variant 2 (Ack), map of 1 entry {1: 5}, hlc {wall 2, logical 0},
        // region None.
        let mut vv = VersionVector::default();
        vv.set(MemberId(1), Seq(5));
        let m = Message::Ack {
            applied: vv,
            clock: Hlc {
                wall: 2,
                logical: 0,
            },
            region: None,
        };
        assert_eq!(m.encode(), [2, 2, 1, 1, 5, 2, 0, 0]);
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        for m in sample() {
            let bytes = m.encode();
            for n in 0..bytes.len() {
                assert!(Message::decode(&bytes[..n]).is_err(), "prefix {n} of {m:?}");
            }
            for i in 0..bytes.len() {
                let mut b = bytes.clone();
                b[i] ^= 0xa5;
                let _ = Message::decode(&b);
            }
        }
        assert!(matches!(
            Message::decode(&[9, 0]),
            Err(ProtocolError::Version(9))
        ));
        let mut trailing = sample()[2].encode();
        trailing.push(0);
        assert!(matches!(
            Message::decode(&trailing),
            Err(ProtocolError::Malformed(_))
        ));
    }
}
