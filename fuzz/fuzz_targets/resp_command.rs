//! The RESP listener's command framing on any bytes: it never panics, every command it
//! reads takes at least one byte and no more than it was given, its arguments lie within
//! those bytes, and a command reads the same from its own bytes alone, while any shorter
//! prefix of them is only "not all there yet".
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_data::resp::frame::{MAX_COMMAND_BYTES, next_command};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((command, used))) = next_command(rest) {
        assert!(used > 0, "a command of no bytes would be read forever");
        assert!(used <= rest.len());
        assert!(command.args.iter().all(|r| r.start <= r.end && r.end <= used));
        let (alone, alone_used) = next_command(&rest[..used])
            .expect("a command's own bytes")
            .expect("a whole command");
        assert_eq!(alone_used, used);
        assert_eq!(alone.args, command.args);
        assert_eq!(alone.oversized, command.oversized);
        for cut in [used / 2, used - 1] {
            if cut <= MAX_COMMAND_BYTES {
                assert!(matches!(next_command(&rest[..cut]), Ok(None)), "cut at {cut} of {used}");
            }
        }
        rest = &rest[used..];
    }
});
