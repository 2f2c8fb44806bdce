//! RESP framing: commands in (arrays of bulk strings, as every client sends them, or an
//! inline line typed into a terminal), replies out, RESP2 or RESP3.
//!
//! Commands are split by hand, by Redis's own rules for a request (`processMultibulkBuffer`
//! in its `networking.c`: an empty or negative array is no command; its error wording).
//! `redis-protocol`'s `decode_range` did this before: it decodes any RESP value into a
//! tree with a vector per array, so a command cost an allocation and a walk of a general
//! parser, 18 % of the server's CPU pipelined 16 deep (`perf`, `scripts/bench-resp`) where
//! this needs a few comparisons per argument; the crate stays the reference model of the
//! property test below. Replies are written straight into the connection's output
//! buffer: the crate's encoder takes an owned frame tree per reply (an allocation per
//! array), and the few shapes answered here (integers, arrays of them, simple strings,
//! errors, maps) are a line each.

use std::ops::Range;

use bytes::BytesMut;

/// Most arguments one command may have.
pub const MAX_ARGS: usize = 64;
/// Longest argument accepted (a key, a descriptor value).
pub const MAX_ARG_BYTES: usize = 4096;
/// Most bytes one command may take on the wire; past it the connection is closed, as
/// Redis does past its query-buffer limit.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// Why the bytes read cannot be a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not RESP.
    #[error("Protocol error: {0}")]
    Protocol(String),
    /// Larger than [`MAX_COMMAND_BYTES`].
    #[error("Protocol error: a command of more than {MAX_COMMAND_BYTES} bytes")]
    TooLarge,
}

/// One command: its arguments as ranges into the buffer it was read from (the name first).
#[derive(Debug, Default)]
pub struct Command {
    /// Argument ranges.
    pub args: smallvec::SmallVec<[Range<usize>; 8]>,
    /// Whether some argument was over [`MAX_ARG_BYTES`] or past [`MAX_ARGS`] (answered with
    /// an error; the command is still consumed whole).
    pub oversized: bool,
}

/// The next command in `buf`, and how many bytes it took; `None` when it is not all there.
/// An empty command (`*0`, `*-1`) has no arguments.
pub fn next_command(buf: &[u8]) -> Result<Option<(Command, usize)>, FrameError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first != b'*' {
        return inline_command(buf);
    }
    let incomplete = || {
        if buf.len() > MAX_COMMAND_BYTES {
            Err(FrameError::TooLarge)
        } else {
            Ok(None)
        }
    };
    let Some((count, mut at)) = line(buf, 1)? else {
        return incomplete();
    };
    let count = string2ll(count).ok_or_else(|| protocol("invalid multibulk length"))?;
    let mut command = Command::default();
    if count <= 0 {
        return Ok(Some((command, at)));
    }
    for _ in 0..count {
        match buf.get(at) {
            None => return incomplete(),
            Some(b'$') => {}
            Some(&other) => {
                return Err(protocol(&format!(
                    "expected '$', got '{}'",
                    char::from(other).escape_default()
                )));
            }
        }
        let Some((len, start)) = line(buf, at + 1)? else {
            return incomplete();
        };
        let len = string2ll(len)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| protocol("invalid bulk length"))?;
        if len > MAX_COMMAND_BYTES {
            return Err(FrameError::TooLarge);
        }
        let end = start + len;
        match buf.get(end..end + 2) {
            None => return incomplete(),
            Some(b"\r\n") => {}
            Some(_) => return Err(protocol("expected CRLF after a bulk string")),
        }
        if command.args.len() == MAX_ARGS || len > MAX_ARG_BYTES {
            command.oversized = true;
        } else {
            command.args.push(start..end);
        }
        at = end + 2;
        if at > MAX_COMMAND_BYTES {
            return Err(FrameError::TooLarge);
        }
    }
    Ok(Some((command, at)))
}

fn protocol(message: &str) -> FrameError {
    FrameError::Protocol(message.to_owned())
}

/// The line starting at `from` (after its type byte), without its CRLF, and where the
/// next line starts; `None` when the line is not all there.
fn line(buf: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, FrameError> {
    let rest = buf.get(from..).unwrap_or_default();
    // Lengths are short: a plain scan beats setting up a vectorised search.
    let Some(cr) = rest.iter().position(|&b| b == b'\r') else {
        return Ok(None);
    };
    match rest.get(cr + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(protocol("expected '\\n' after '\\r'")),
    }
    Ok(Some((&rest[..cr], from + cr + 2)))
}

/// `digits` as Redis reads a length (its `string2ll`): an optional minus, digits, no
/// leading zero, within i64.
fn string2ll(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, digits),
    };
    match digits {
        [] => return None,
        [b'0'] => return (!negative).then_some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    // Accumulated negatively so that i64::MIN fits.
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if negative { Some(n) } else { n.checked_neg() }
}

/// A command typed on a terminal (`PING`), arguments split on spaces.
fn inline_command(buf: &[u8]) -> Result<Option<(Command, usize)>, FrameError> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_COMMAND_BYTES {
            Err(FrameError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let line = &buf[..end];
    let line_end = if line.last() == Some(&b'\r') {
        end - 1
    } else {
        end
    };
    let mut command = Command::default();
    let mut start = None;
    // A space past the end closes the last argument.
    let bytes = buf[..line_end].iter().chain(std::iter::once(&b' '));
    for (i, &b) in bytes.enumerate() {
        let space = b == b' ' || b == b'\t';
        match (space, start) {
            (true, Some(s)) => {
                if command.args.len() == MAX_ARGS || i - s > MAX_ARG_BYTES {
                    command.oversized = true;
                } else {
                    command.args.push(s..i);
                }
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    Ok(Some((command, end + 1)))
}

/// Writes replies in the protocol version the connection chose with `HELLO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    /// RESP2, every connection's start.
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

/// A reply writer over the connection's output buffer.
pub struct Out<'a> {
    /// Where replies go.
    pub buf: &'a mut BytesMut,
    /// The protocol version.
    pub version: Version,
}

impl Out<'_> {
    /// `+text`.
    pub fn simple(&mut self, text: &str) {
        self.line(b'+', text.as_bytes());
    }

    /// `-text` (text starts with its code: `ERR …`, `NOAUTH …`).
    pub fn error(&mut self, text: &str) {
        // An error line cannot hold a line break.
        let text: String = text
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        self.line(b'-', text.as_bytes());
    }

    /// `:n`.
    pub fn integer(&mut self, n: i64) {
        let mut digits = itoa::Buffer::new();
        self.line(b':', digits.format(n).as_bytes());
    }

    /// `$len` and the bytes.
    pub fn bulk(&mut self, bytes: &[u8]) {
        let mut digits = itoa::Buffer::new();
        self.line(b'$', digits.format(bytes.len()).as_bytes());
        self.buf.extend_from_slice(bytes);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// A null: `$-1` in RESP2, `_` in RESP3.
    pub fn null(&mut self) {
        match self.version {
            Version::Resp2 => self.buf.extend_from_slice(b"$-1\r\n"),
            Version::Resp3 => self.buf.extend_from_slice(b"_\r\n"),
        }
    }

    /// `*n`: the header of an array of `n` replies that follow.
    pub fn array(&mut self, n: usize) {
        let mut digits = itoa::Buffer::new();
        self.line(b'*', digits.format(n).as_bytes());
    }

    /// The header of a map of `n` pairs: `%n` in RESP3, an array of `2n` in RESP2.
    pub fn map(&mut self, n: usize) {
        let mut digits = itoa::Buffer::new();
        match self.version {
            Version::Resp2 => self.line(b'*', digits.format(2 * n).as_bytes()),
            Version::Resp3 => self.line(b'%', digits.format(n).as_bytes()),
        }
    }

    /// An array of integers.
    pub fn integers(&mut self, values: &[i64]) {
        self.array(values.len());
        for &v in values {
            self.integer(v);
        }
    }

    fn line(&mut self, kind: u8, body: &[u8]) {
        self.buf.reserve(body.len() + 3);
        self.buf.extend_from_slice(&[kind]);
        self.buf.extend_from_slice(body);
        self.buf.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args<'a>(buf: &'a [u8], c: &Command) -> Vec<&'a [u8]> {
        c.args.iter().map(|r| &buf[r.clone()]).collect()
    }

    #[test]
    fn arrays_of_bulk_strings_are_commands_and_partial_ones_wait() {
        let buf = b"*2\r\n$4\r\nPING\r\n$2\r\nhi\r\n*1\r\n$4\r\nPI";
        let (c, used) = next_command(buf).unwrap().unwrap();
        assert_eq!(args(buf, &c), [&b"PING"[..], b"hi"]);
        assert_eq!(used, 22);
        assert!(next_command(&buf[used..]).unwrap().is_none());
    }

    #[test]
    fn inline_commands_split_on_spaces() {
        let buf = b"CL.THROTTLE  user 15 30 60\r\n";
        let (c, used) = next_command(buf).unwrap().unwrap();
        assert_eq!(
            args(buf, &c),
            [&b"CL.THROTTLE"[..], b"user", b"15", b"30", b"60"]
        );
        assert_eq!(used, buf.len());
    }

    #[test]
    fn oversized_arguments_are_flagged_and_consumed() {
        let long = "x".repeat(MAX_ARG_BYTES + 1);
        let buf = format!("*2\r\n$4\r\nPING\r\n${}\r\n{long}\r\n", long.len());
        let (c, used) = next_command(buf.as_bytes()).unwrap().unwrap();
        assert!(c.oversized);
        assert_eq!(used, buf.len());
    }

    #[test]
    fn a_command_that_never_ends_is_refused() {
        let buf = format!(
            "*1\r\n${}\r\n{}",
            MAX_COMMAND_BYTES * 2,
            "x".repeat(MAX_COMMAND_BYTES + 1)
        );
        assert_eq!(
            next_command(buf.as_bytes()).unwrap_err(),
            FrameError::TooLarge
        );
        assert!(matches!(
            next_command(b"*1\r\n:1\r\n"),
            Err(FrameError::Protocol(_))
        ));
    }

    #[test]
    fn framing_follows_redis_rules() {
        // No command, consumed: Redis ignores an empty or negative array.
        for empty in [&b"*0\r\n"[..], b"*-1\r\n"] {
            let (c, used) = next_command(empty).unwrap().unwrap();
            assert!(c.args.is_empty());
            assert_eq!(used, empty.len());
        }
        let error = |buf: &[u8]| next_command(buf).unwrap_err().to_string();
        assert_eq!(error(b"*x\r\n"), "Protocol error: invalid multibulk length");
        assert_eq!(
            error(b"*01\r\n"),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            error(b"*1\r\n:1\r\n"),
            "Protocol error: expected '$', got ':'"
        );
        assert_eq!(
            error(b"*1\r\n$-1\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            error(b"*1\r\n$+4\r\nPING\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            error(b"*1\r\n$4\r\nPINGxx"),
            "Protocol error: expected CRLF after a bulk string"
        );
        // Not all there yet, at every cut.
        let whole = b"*2\r\n$4\r\nPING\r\n$2\r\nhi\r\n";
        for cut in 0..whole.len() {
            assert!(next_command(&whole[..cut]).unwrap().is_none(), "cut {cut}");
        }
        // A declared length past the limit is refused before its bytes arrive.
        assert_eq!(
            next_command(format!("*1\r\n${}\r\n", MAX_COMMAND_BYTES + 1).as_bytes()).unwrap_err(),
            FrameError::TooLarge
        );
        assert_eq!(string2ll(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(string2ll(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(string2ll(b"9223372036854775808"), None);
        assert_eq!(string2ll(b"-0"), None);
    }

    mod model {
        use super::*;
        use proptest::prelude::*;
        use redis_protocol::resp2::decode::decode_range;
        use redis_protocol::resp2::types::RangeFrame;

        /// A command as the reference reads it: its arguments, and the bytes it took.
        type Read = (Vec<Range<usize>>, usize);

        /// What `redis-protocol` makes of `buf`: the arguments and the bytes used of an
        /// array of bulk strings, `Ok(None)` when incomplete, `Err` for anything else.
        fn reference(buf: &[u8]) -> Result<Option<Read>, ()> {
            match decode_range(buf) {
                Ok(Some((RangeFrame::Array(items), used))) => items
                    .into_iter()
                    .map(|item| match item {
                        RangeFrame::BulkString((start, end)) => Ok(start..end),
                        _ => Err(()),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(|args| Some((args, used))),
                Ok(None) => Ok(None),
                _ => Err(()),
            }
        }

        fn encode(commands: &[Vec<Vec<u8>>]) -> Vec<u8> {
            let mut buf = Vec::new();
            for args in commands {
                buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
                for arg in args {
                    buf.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                    buf.extend_from_slice(arg);
                    buf.extend_from_slice(b"\r\n");
                }
            }
            buf
        }

        fn commands() -> impl Strategy<Value = Vec<Vec<Vec<u8>>>> {
            // Arguments of any bytes, CR and LF included, from empty to a few hundred.
            let arg = prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..8),
                proptest::collection::vec(any::<u8>(), 0..300),
            ];
            proptest::collection::vec(proptest::collection::vec(arg, 1..12), 1..6)
        }

        proptest! {
            /// Pipelined commands, cut anywhere: each whole command comes back as the
            /// crate reads it, in order; the cut one waits for the rest.
            #[test]
            fn commands_split_as_the_crate_reads_them(
                commands in commands(),
                cut in any::<prop::sample::Index>(),
            ) {
                let buf = encode(&commands);
                let buf = &buf[..cut.index(buf.len() + 1)];
                let mut at = 0;
                let mut seen = 0;
                loop {
                    let ours = next_command(&buf[at..]).unwrap();
                    let theirs = reference(&buf[at..]).unwrap();
                    match (ours, theirs) {
                        (None, None) => break,
                        (Some((command, used)), Some((args, their_used))) => {
                            prop_assert!(!command.oversized);
                            prop_assert_eq!(command.args.to_vec(), args);
                            prop_assert_eq!(used, their_used);
                            let read: Vec<&[u8]> =
                                command.args.iter().map(|r| &buf[at..][r.clone()]).collect();
                            let sent: Vec<&[u8]> =
                                commands[seen].iter().map(Vec::as_slice).collect();
                            prop_assert_eq!(read, sent);
                            at += used;
                            seen += 1;
                        }
                        (ours, theirs) => {
                            prop_assert!(false, "ours {ours:?}, the crate's {theirs:?}");
                        }
                    }
                }
            }

            /// Any bytes after a `*`: no panic, nothing read past the buffer, and
            /// whenever both read a command they read the same one.
            #[test]
            fn damaged_commands_are_refused_or_read_as_the_crate_reads_them(
                commands in commands(),
                at in any::<prop::sample::Index>(),
                byte in any::<u8>(),
            ) {
                let mut buf = encode(&commands);
                let i = at.index(buf.len());
                buf[i] = byte;
                if let Ok(Some((command, used))) = next_command(&buf) {
                    prop_assert!(used <= buf.len());
                    prop_assert!(command.args.iter().all(|r| r.end <= used));
                    if let Ok(Some((args, their_used))) = reference(&buf)
                        && !command.args.is_empty()
                    {
                        prop_assert_eq!(command.args.to_vec(), args);
                        prop_assert_eq!(used, their_used);
                    }
                }
            }
        }
    }

    #[test]
    fn replies_are_written_in_the_connections_version() {
        let mut buf = BytesMut::new();
        let mut out = Out {
            buf: &mut buf,
            version: Version::Resp2,
        };
        out.integers(&[0, 16, 15, -1, 2]);
        out.map(1);
        out.null();
        out.error("ERR bad\r\nthing");
        assert_eq!(
            &buf[..],
            b"*5\r\n:0\r\n:16\r\n:15\r\n:-1\r\n:2\r\n*2\r\n$-1\r\n-ERR bad  thing\r\n"
        );
        let mut buf = BytesMut::new();
        let mut out = Out {
            buf: &mut buf,
            version: Version::Resp3,
        };
        out.map(2);
        out.null();
        assert_eq!(&buf[..], b"%2\r\n_\r\n");
    }
}
