#!/usr/bin/env python3
"""Writes a gRPC-framed envoy.service.ratelimit.v3.RateLimitRequest for h2load.

Usage: rls_body.py OUT DOMAIN KEY=VALUE [KEY=VALUE ...]   (one descriptor per argument;
join several entries of one descriptor with commas). Hand-encoded protobuf: the message
has three fields, so no protobuf library is needed.
"""
import sys


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def main() -> None:
    out, domain, descriptors = sys.argv[1], sys.argv[2], sys.argv[3:]
    message = field(1, domain.encode())
    for descriptor in descriptors:
        entries = b""
        for pair in descriptor.split(","):
            key, value = pair.split("=", 1)
            entries += field(1, field(1, key.encode()) + field(2, value.encode()))
        message += field(2, entries)
    message += varint(3 << 3 | 0) + varint(1)  # hits_addend = 1
    with open(out, "wb") as f:
        f.write(b"\x00" + len(message).to_bytes(4, "big") + message)


if __name__ == "__main__":
    main()
