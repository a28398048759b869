//! Generated protobuf and gRPC code. Protobuf types stop at the `rpc` and `client` layers.

pub mod raft {
    tonic::include_proto!("dispatcher.raft.v1");
}

/// Every message and service of our protos, encoded, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptors");

pub mod api {
    tonic::include_proto!("dispatcher.v1");
}
