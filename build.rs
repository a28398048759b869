//! Compiles the protobuf definitions with the vendored protoc, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let descriptors = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("descriptors.bin");
    tonic_prost_build::configure()
        .codec_path("crate::rpc::codec::StrictCodec")
        // For server reflection (`grpcurl list`).
        .file_descriptor_set_path(descriptors)
        .compile_with_config(
            config,
            &["proto/raft.proto", "proto/dispatcher.proto"],
            &["proto"],
        )?;
    // etcd's Put, for the bench's side-by-side figure: a client only, with tonic's own codec
    // (etcd's replies carry fields this subset leaves out).
    let mut etcd = prost_build::Config::new();
    etcd.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(false)
        .compile_with_config(etcd, &["proto/etcd/kv.proto"], &["proto/etcd"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
