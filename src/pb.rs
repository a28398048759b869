//! Generated protobuf and gRPC code. Protobuf types stop at the `rpc` and `client` layers.

pub mod raft {
    tonic::include_proto!("dispatcher.raft.v1");
}

pub mod api {
    tonic::include_proto!("dispatcher.v1");
}
