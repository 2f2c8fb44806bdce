//! Compiles `proto/` with the `protoc` that `protoc-bin-vendored` ships (no system
//! install): Rust code for Tollgate's and Kuadrant's services, whose Envoy and well-known
//! messages come from `envoy-types`, and one descriptor set of every service the gRPC
//! listener serves (Envoy's RLS included) for server reflection.

use std::path::PathBuf;

const OWN: &[&str] = &[
    "tollgate/v1/holds.proto",
    "tollgate/v1/checks.proto",
    "kuadrant/service/ratelimit/v1/ratelimit.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(&protoc);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Well-known types are envoy-types' own (its generated google.protobuf), not prost-types.
        .compile_well_known_types(true)
        .extern_path(".envoy", "::envoy_types::pb::envoy")
        .extern_path(".google.protobuf", "::envoy_types::pb::google::protobuf")
        .extern_path(".xds", "::envoy_types::pb::xds")
        .extern_path(".udpa", "::envoy_types::pb::udpa")
        .extern_path(".validate", "::envoy_types::pb::validate")
        .compile_with_config(
            config,
            OWN,
            &[
                proto.to_str().ok_or("proto/ is not UTF-8")?,
                include
                    .to_str()
                    .ok_or("protoc's include path is not UTF-8")?,
            ],
        )?;
    // Reflection describes every service of the listener, with their imports.
    let status = std::process::Command::new(&protoc)
        .arg(format!("--proto_path={}", proto.display()))
        .arg(format!("--proto_path={}", include.display()))
        .arg("--include_imports")
        .arg(format!(
            "--descriptor_set_out={}",
            out.join("descriptors.bin").display()
        ))
        .arg("envoy/service/ratelimit/v3/rls.proto")
        .args(OWN)
        .status()?;
    if !status.success() {
        return Err(format!("protoc failed on {} ({status})", proto.display()).into());
    }
    println!("cargo:rerun-if-changed={}", proto.display());
    Ok(())
}
