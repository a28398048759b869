//! Generated protobuf and gRPC code. Protobuf types stop at the `rpc` and `client` layers.

pub mod raft {
    tonic::include_proto!("dispatcher.raft.v1");
}

/// Every message and service of our protos, encoded, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptors");

pub mod api {
    tonic::include_proto!("dispatcher.v1");
}

/// etcd's KV.Put, for `dispatcher bench` only.
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}

impl From<&api::ResourceAmounts> for crate::domain::Resources {
    fn from(amounts: &api::ResourceAmounts) -> Self {
        crate::domain::Resources {
            cpu_millis: amounts.cpu_millis,
            memory_bytes: amounts.memory_bytes,
            named: amounts
                .named
                .iter()
                .map(|(name, count)| (name.clone(), *count))
                .collect(),
        }
    }
}

impl From<&crate::domain::Resources> for api::ResourceAmounts {
    fn from(resources: &crate::domain::Resources) -> Self {
        api::ResourceAmounts {
            cpu_millis: resources.cpu_millis,
            memory_bytes: resources.memory_bytes,
            named: resources
                .named
                .iter()
                .map(|(name, count)| (name.clone(), *count))
                .collect(),
        }
    }
}
