//! What splitting commands costs the RESP listener: its hand-written framing against
//! `redis-protocol`'s `decode_range`, which it replaced, on what a client pipelining 16
//! `CL.THROTTLE`s sends in one write.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use redis_protocol::resp2::decode::decode_range;
use redis_protocol::resp2::types::RangeFrame;
use tollgate_data::resp::frame::next_command;

const DEPTH: usize = 16;

fn pipeline() -> Vec<u8> {
    let mut buf = Vec::new();
    for i in 0..DEPTH {
        let key = format!("bench:{:012}", i * 7919);
        let args = ["CL.THROTTLE", key.as_str(), "1000000000", "1000000000", "1"];
        buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            buf.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
    }
    buf
}

fn framing(c: &mut Criterion) {
    let buf = pipeline();
    let mut group = c.benchmark_group("resp_framing_16_cl_throttle");
    group.throughput(Throughput::Elements(DEPTH as u64));
    group.bench_function("tollgate next_command", |b| {
        b.iter(|| {
            let mut at = 0;
            let mut args = 0;
            while let Ok(Some((command, used))) = next_command(black_box(&buf[at..])) {
                args += command.args.len();
                at += used;
            }
            assert_eq!(args, DEPTH * 5);
        });
    });
    group.bench_function("redis-protocol decode_range", |b| {
        b.iter(|| {
            let mut at = 0;
            let mut args = 0;
            while let Ok(Some((frame, used))) = decode_range(black_box(&buf[at..])) {
                if let RangeFrame::Array(items) = frame {
                    args += items.len();
                }
                at += used;
            }
            assert_eq!(args, DEPTH * 5);
        });
    });
    group.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
