//! Bencode, the encoding of rtpengine's *ng* control protocol (and of
//! BitTorrent's metainfo, where it was defined: BEP 3).
//!
//! [`Value`] is a zero-copy view: byte strings and dictionary keys borrow
//! the input. [`Value::parse`] never panics and bounds nesting at
//! [`MAX_DEPTH`] so hostile input cannot exhaust the stack;
//! [`Value::emit`] writes the canonical encoding of what it holds.
//!
//! Dictionaries keep their keys in input order: ng peers (Kamailio's
//! `rtpengine` module among them) do not sort their keys, so a strict
//! canonical-order check would refuse real traffic.
//!
//! ```
//! use wire::bencode::Value;
//!
//! let v = Value::parse(b"d7:command4:pinge")?;
//! assert_eq!(v.get(b"command").and_then(Value::as_str), Some("ping"));
//! let mut out = Vec::new();
//! v.emit(&mut out);
//! assert_eq!(out, b"d7:command4:pinge");
//! # Ok::<(), wire::bencode::Error>(())
//! ```

/// Deepest nesting of lists and dictionaries [`Value::parse`] accepts.
pub const MAX_DEPTH: usize = 32;

/// Why a byte string is not bencode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input ended inside a value.
    #[error("bencode: input ends inside a value")]
    UnexpectedEnd,
    /// A byte that cannot start or continue a value at this offset.
    #[error("bencode: unexpected byte at offset {at}")]
    UnexpectedByte {
        /// Byte offset into the input.
        at: usize,
    },
    /// An integer is empty, has leading zeros, is `-0` or does not fit `i64`.
    #[error("bencode: invalid integer at offset {at}")]
    InvalidInteger {
        /// Byte offset of the `i`.
        at: usize,
    },
    /// A string length is malformed or runs past the end of the input.
    #[error("bencode: invalid string length at offset {at}")]
    InvalidLength {
        /// Byte offset of the length.
        at: usize,
    },
    /// Lists and dictionaries nest deeper than [`MAX_DEPTH`].
    #[error("bencode: nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    /// A dictionary key is not a byte string.
    #[error("bencode: dictionary key at offset {at} is not a string")]
    KeyNotString {
        /// Byte offset of the key.
        at: usize,
    },
    /// Bytes follow the first complete value.
    #[error("bencode: {len} trailing bytes after the value")]
    TrailingData {
        /// Number of bytes left over.
        len: usize,
    },
}

/// A bencoded value borrowing its byte strings from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    /// `i<n>e`.
    Int(i64),
    /// `<len>:<bytes>`.
    Bytes(&'a [u8]),
    /// `l<values>e`.
    List(Vec<Value<'a>>),
    /// `d<key value pairs>e`, in input order.
    Dict(Vec<(&'a [u8], Value<'a>)>),
}

impl<'a> Value<'a> {
    /// Parses exactly one value spanning all of `input`.
    ///
    /// # Errors
    ///
    /// [`Error`] says what is wrong and where; trailing bytes are
    /// [`Error::TrailingData`].
    pub fn parse(input: &'a [u8]) -> Result<Self, Error> {
        let (value, used) = Self::parse_prefix(input)?;
        match input.len() - used {
            0 => Ok(value),
            len => Err(Error::TrailingData { len }),
        }
    }

    /// Parses one value from the start of `input`, returning it and the
    /// number of bytes it used.
    ///
    /// # Errors
    ///
    /// As [`Value::parse`], except that trailing bytes are allowed.
    pub fn parse_prefix(input: &'a [u8]) -> Result<(Self, usize), Error> {
        let mut parser = Parser { input, pos: 0 };
        let value = parser.value(0)?;
        Ok((value, parser.pos))
    }

    /// A string value from a `&str`.
    pub fn str(s: &'a str) -> Self {
        Value::Bytes(s.as_bytes())
    }

    /// Appends the encoding of this value to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(n) => {
                out.push(b'i');
                out.extend_from_slice(n.to_string().as_bytes());
                out.push(b'e');
            }
            Value::Bytes(b) => emit_bytes(b, out),
            Value::List(items) => {
                out.push(b'l');
                for item in items {
                    item.emit(out);
                }
                out.push(b'e');
            }
            Value::Dict(entries) => {
                out.push(b'd');
                for (key, value) in entries {
                    emit_bytes(key, out);
                    value.emit(out);
                }
                out.push(b'e');
            }
        }
    }

    /// The value of the first entry named `key`, if this is a dictionary.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        match self {
            Value::Dict(entries) => entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The bytes of a string value.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// A string value that is valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// An integer value.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The items of a list value.
    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }
}

fn emit_bytes(b: &[u8], out: &mut Vec<u8>) {
    //= https://www.bittorrent.org/beps/bep_0003.html#bencoding
    //# Strings are length-prefixed base ten followed by a colon and the string.
    //# For example 4:spam corresponds to 'spam'.
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Result<u8, Error> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or(Error::UnexpectedEnd)
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, Error> {
        match self.peek()? {
            b'i' => self.int().map(Value::Int),
            b'0'..=b'9' => self.bytes().map(Value::Bytes),
            b'l' => {
                let depth = nest(depth)?;
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                let depth = nest(depth)?;
                self.pos += 1;
                let mut entries = Vec::new();
                loop {
                    match self.peek()? {
                        b'e' => break,
                        b'0'..=b'9' => {}
                        _ => return Err(Error::KeyNotString { at: self.pos }),
                    }
                    let key = self.bytes()?;
                    let value = self.value(depth)?;
                    entries.push((key, value));
                }
                self.pos += 1;
                Ok(Value::Dict(entries))
            }
            _ => Err(Error::UnexpectedByte { at: self.pos }),
        }
    }

    //= https://www.bittorrent.org/beps/bep_0003.html#bencoding
    //# Integers are represented by an 'i' followed by the number in base 10
    //# followed by an 'e'. For example i3e corresponds to 3 and i-3e
    //# corresponds to -3. Integers have no size limitation. i-0e is invalid.
    //# All encodings with a leading zero, such as i03e, are invalid, other
    //# than i0e, which of course corresponds to 0.
    fn int(&mut self) -> Result<i64, Error> {
        let at = self.pos;
        let rest = self.input.get(at + 1..).ok_or(Error::UnexpectedEnd)?;
        let end = rest
            .iter()
            .position(|&b| b == b'e')
            .ok_or(Error::UnexpectedEnd)?;
        let digits = &rest[..end];
        let invalid = Error::InvalidInteger { at };
        let magnitude = digits.strip_prefix(b"-").unwrap_or(digits);
        let well_formed = !magnitude.is_empty()
            && magnitude.iter().all(u8::is_ascii_digit)
            && !(magnitude.len() > 1 && magnitude[0] == b'0')
            && digits != b"-0";
        if !well_formed {
            return Err(invalid);
        }
        // ASCII digits and an optional '-' checked above, so this is UTF-8.
        let n = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or(invalid)?;
        self.pos = at + 1 + end + 1;
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let at = self.pos;
        let rest = &self.input[at..];
        let colon = rest
            .iter()
            .position(|&b| b == b':')
            .ok_or(Error::UnexpectedEnd)?;
        let digits = &rest[..colon];
        let invalid = Error::InvalidLength { at };
        if digits.is_empty()
            || !digits.iter().all(u8::is_ascii_digit)
            || (digits.len() > 1 && digits[0] == b'0')
            || digits.len() > 19
        {
            return Err(invalid);
        }
        let len: usize = digits
            .iter()
            .try_fold(0usize, |n, &d| {
                n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
            })
            .ok_or(invalid)?;
        let start = at + colon + 1;
        let end = start.checked_add(len).ok_or(invalid)?;
        let s = self.input.get(start..end).ok_or(invalid)?;
        self.pos = end;
        Ok(s)
    }
}

fn nest(depth: usize) -> Result<usize, Error> {
    if depth >= MAX_DEPTH {
        Err(Error::TooDeep)
    } else {
        Ok(depth + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bep3_examples() {
        // The examples of BEP 3, verbatim.
        assert_eq!(Value::parse(b"4:spam"), Ok(Value::Bytes(b"spam")));
        assert_eq!(Value::parse(b"0:"), Ok(Value::Bytes(b"")));
        assert_eq!(Value::parse(b"i3e"), Ok(Value::Int(3)));
        assert_eq!(Value::parse(b"i-3e"), Ok(Value::Int(-3)));
        assert_eq!(Value::parse(b"i0e"), Ok(Value::Int(0)));
        assert_eq!(
            Value::parse(b"l4:spam4:eggse"),
            Ok(Value::List(vec![
                Value::Bytes(b"spam"),
                Value::Bytes(b"eggs")
            ]))
        );
        assert_eq!(
            Value::parse(b"d3:cow3:moo4:spam4:eggse"),
            Ok(Value::Dict(vec![
                (&b"cow"[..], Value::Bytes(b"moo")),
                (&b"spam"[..], Value::Bytes(b"eggs")),
            ]))
        );
        assert_eq!(
            Value::parse(b"d4:spaml1:a1:bee"),
            Ok(Value::Dict(vec![(
                &b"spam"[..],
                Value::List(vec![Value::Bytes(b"a"), Value::Bytes(b"b")])
            )]))
        );
    }

    #[test]
    fn invalid_integers_and_lengths() {
        assert_eq!(Value::parse(b"i-0e"), Err(Error::InvalidInteger { at: 0 }));
        assert_eq!(Value::parse(b"i03e"), Err(Error::InvalidInteger { at: 0 }));
        assert_eq!(Value::parse(b"ie"), Err(Error::InvalidInteger { at: 0 }));
        assert_eq!(
            Value::parse(b"i99999999999999999999e"),
            Err(Error::InvalidInteger { at: 0 })
        );
        assert_eq!(Value::parse(b"i12"), Err(Error::UnexpectedEnd));
        assert_eq!(Value::parse(b"5:abc"), Err(Error::InvalidLength { at: 0 }));
        assert_eq!(
            Value::parse(b"05:abcde"),
            Err(Error::InvalidLength { at: 0 })
        );
        assert_eq!(
            Value::parse(b"99999999999999999999:x"),
            Err(Error::InvalidLength { at: 0 })
        );
        assert_eq!(Value::parse(b"x"), Err(Error::UnexpectedByte { at: 0 }));
        assert_eq!(
            Value::parse(b"di1ei2ee"),
            Err(Error::KeyNotString { at: 1 })
        );
        assert_eq!(Value::parse(b"i1ei2e"), Err(Error::TrailingData { len: 3 }));
        assert_eq!(Value::parse(b""), Err(Error::UnexpectedEnd));
        assert_eq!(Value::parse(b"l"), Err(Error::UnexpectedEnd));
    }

    #[test]
    fn depth_is_bounded() {
        let ok = [vec![b'l'; MAX_DEPTH], vec![b'e'; MAX_DEPTH]].concat();
        assert!(Value::parse(&ok).is_ok());
        let deep = [vec![b'l'; 100_000], vec![b'e'; 100_000]].concat();
        assert_eq!(Value::parse(&deep), Err(Error::TooDeep));
    }

    #[test]
    fn ng_request_from_kamailio() {
        // The shape Kamailio's rtpengine module sends: cookie, space, dict.
        let msg = b"d3:sdp5:v=0\r\n7:call-id8:abc@host8:from-tag3:ft17:command5:offer5:flagsl13:trust-addresse7:replacel6:origin18:session-connectionee";
        let v = Value::parse(msg).unwrap();
        assert_eq!(v.get(b"command").and_then(Value::as_str), Some("offer"));
        assert_eq!(v.get(b"call-id").and_then(Value::as_str), Some("abc@host"));
        let flags = v.get(b"flags").and_then(Value::as_list).unwrap();
        assert_eq!(flags[0].as_str(), Some("trust-address"));
        let mut out = Vec::new();
        v.emit(&mut out);
        assert_eq!(&out[..], &msg[..]);
    }

    fn arb_value() -> impl Strategy<Value = OwnedValue> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(OwnedValue::Int),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(OwnedValue::Bytes),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(OwnedValue::List),
                proptest::collection::vec(
                    (proptest::collection::vec(any::<u8>(), 0..10), inner),
                    0..8
                )
                .prop_map(OwnedValue::Dict),
            ]
        })
    }

    /// An owned mirror of [`Value`] for generating test cases.
    #[derive(Debug, Clone)]
    enum OwnedValue {
        Int(i64),
        Bytes(Vec<u8>),
        List(Vec<OwnedValue>),
        Dict(Vec<(Vec<u8>, OwnedValue)>),
    }

    impl OwnedValue {
        fn view(&self) -> Value<'_> {
            match self {
                OwnedValue::Int(n) => Value::Int(*n),
                OwnedValue::Bytes(b) => Value::Bytes(b),
                OwnedValue::List(l) => Value::List(l.iter().map(OwnedValue::view).collect()),
                OwnedValue::Dict(d) => {
                    Value::Dict(d.iter().map(|(k, v)| (&k[..], v.view())).collect())
                }
            }
        }
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(v in arb_value()) {
            let view = v.view();
            let mut out = Vec::new();
            view.emit(&mut out);
            let back = Value::parse(&out).unwrap();
            prop_assert_eq!(&back, &view);
            let mut again = Vec::new();
            back.emit(&mut again);
            prop_assert_eq!(again, out);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(v) = Value::parse(&bytes) {
                let mut out = Vec::new();
                v.emit(&mut out);
                // Everything we accept re-encodes to the same bytes.
                prop_assert_eq!(out, bytes);
            }
        }

        #[test]
        fn never_panics_on_near_bencode(
            parts in proptest::collection::vec(
                prop_oneof![Just(&b"d"[..]), Just(&b"l"[..]), Just(&b"e"[..]), Just(&b"i-1e"[..]),
                    Just(&b"3:abc"[..]), Just(&b"9:"[..]), Just(&b"i0"[..]), Just(&b"0:"[..])],
                0..40)
        ) {
            let bytes: Vec<u8> = parts.concat();
            if let Ok(v) = Value::parse(&bytes) {
                let mut out = Vec::new();
                v.emit(&mut out);
                prop_assert_eq!(out, bytes);
            }
        }
    }
}
