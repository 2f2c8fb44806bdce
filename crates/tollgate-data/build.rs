//! Compiles the vendored Envoy RLS protos (`proto/`) into the file descriptor set that gRPC
//! server reflection serves. Message types come from `envoy-types`; only descriptors are
//! built here, with the `protoc` that `protoc-bin-vendored` ships (no system install).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let proto = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("rls_descriptor.bin");
    let protoc = protoc_bin_vendored::protoc_bin_path()
        .expect("protoc-bin-vendored has a protoc for this platform");
    let include = protoc_bin_vendored::include_path()
        .expect("protoc-bin-vendored ships the well-known types");
    let status = Command::new(protoc)
        .arg(format!("--proto_path={}", proto.display()))
        .arg(format!("--proto_path={}", include.display()))
        .arg("--include_imports")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .arg("envoy/service/ratelimit/v3/rls.proto")
        .status()
        .expect("protoc runs");
    assert!(
        status.success(),
        "protoc failed on proto/envoy/service/ratelimit/v3/rls.proto"
    );
    println!("cargo:rerun-if-changed={}", proto.display());
}
