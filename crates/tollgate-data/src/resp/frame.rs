//! RESP framing: commands in (arrays of bulk strings, as every client sends them, or an
//! inline line typed into a terminal), replies out, RESP2 or RESP3.
//!
//! Commands are decoded by `redis-protocol` (`decode_range`: ranges into the read buffer,
//! no copy of the arguments). Replies are written straight into the connection's output
//! buffer: the crate's encoder takes an owned frame tree per reply (an allocation per
//! array), and the few shapes answered here (integers, arrays of them, simple strings,
//! errors, maps) are a line each.

use std::ops::Range;

use bytes::BytesMut;
use redis_protocol::resp2::decode::decode_range;
use redis_protocol::resp2::types::RangeFrame;

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
pub fn next_command(buf: &[u8]) -> Result<Option<(Command, usize)>, FrameError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first != b'*' {
        return inline_command(buf);
    }
    let decoded = decode_range(buf).map_err(|e| FrameError::Protocol(e.to_string()))?;
    let Some((frame, used)) = decoded else {
        return if buf.len() > MAX_COMMAND_BYTES {
            Err(FrameError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let mut command = Command::default();
    let RangeFrame::Array(items) = frame else {
        return Err(FrameError::Protocol(
            "expected an array of bulk strings".into(),
        ));
    };
    for item in items {
        match item {
            RangeFrame::BulkString((start, end)) => {
                if command.args.len() == MAX_ARGS || end - start > MAX_ARG_BYTES {
                    command.oversized = true;
                } else {
                    command.args.push(start..end);
                }
            }
            _ => {
                return Err(FrameError::Protocol(
                    "expected an array of bulk strings".into(),
                ));
            }
        }
    }
    Ok(Some((command, used)))
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
