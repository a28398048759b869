//! Garbage and oversized protobuf at every gRPC method, the Raft service included, sent by a
//! caller that is no member: every replica stays up, nothing changes, and the caller gets a
//! clear code.

mod common;

use common::*;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Endpoint;
use tonic::{Code, Status};

/// Sends and receives raw bytes, so the test can put anything on the wire.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use bytes::BufMut;
        buf.put_slice(&item);
        Ok(())
    }
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        use bytes::Buf;
        let mut out = vec![0; buf.remaining()];
        buf.copy_to_slice(&mut out);
        Ok(Some(out))
    }
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

const UNARY: &[&str] = &[
    "/dispatcher.v1.Dispatcher/Submit",
    "/dispatcher.v1.Dispatcher/GetJob",
    "/dispatcher.v1.Dispatcher/ListJobs",
    "/dispatcher.v1.Dispatcher/CancelJob",
    "/dispatcher.v1.Dispatcher/RegisterTaskManager",
    "/dispatcher.v1.Dispatcher/ListTaskManagers",
    "/dispatcher.v1.Dispatcher/DrainTaskManager",
    "/dispatcher.v1.TaskManagers/Heartbeat",
    "/dispatcher.v1.TaskManagers/ReportShard",
    "/dispatcher.v1.Cluster/Status",
    "/dispatcher.v1.Cluster/AddMember",
    "/dispatcher.v1.Cluster/RemoveMember",
    "/dispatcher.v1.Cluster/TransferLeader",
    "/dispatcher.v1.Cluster/Ping",
    "/dispatcher.v1.Cluster/Snapshot",
    "/dispatcher.raft.v1.RaftService/AppendEntries",
    "/dispatcher.raft.v1.RaftService/Vote",
    "/dispatcher.raft.v1.RaftService/PreVote",
    "/dispatcher.raft.v1.RaftService/TransferLeader",
];

async fn call(addr: &str, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Status::unknown(e.to_string()))?
        .timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(body), path, RawCodec)
        .await
        .map(|r| r.into_inner())
}

async fn snapshot_stream(addr: &str, chunks: Vec<Vec<u8>>) -> Result<Vec<u8>, Status> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Status::unknown(e.to_string()))?
        .connect()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path =
        http::uri::PathAndQuery::from_static("/dispatcher.raft.v1.RaftService/InstallSnapshot");
    grpc.client_streaming(
        tonic::Request::new(futures::stream::iter(chunks)),
        path,
        RawCodec,
    )
    .await
    .map(|r| r.into_inner())
}

/// A valid protobuf message whose field 1 (bytes) holds `inner`.
fn bytes_field(inner: &[u8]) -> Vec<u8> {
    let mut out = vec![0x0a];
    let mut len = inner.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(inner);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_at_every_method_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let cluster = start_cluster(3, test_config()).await?;
    let client = cluster.client()?;
    register_taskmanagers(&client, 1, 2).await?;
    let job = client.submit(submit_request("before", 1, "")).await?;
    wait_placed(&client, &job.job_id).await?;
    let ids = cluster.ids();
    let before = cluster.wait_converged(&ids, DEADLINE).await?.1;
    let garbage = vec![0xff; 64];

    for id in &ids {
        let addr = cluster.addr(*id)?;
        for path in UNARY {
            let err = call(&addr, path, garbage.clone())
                .await
                .expect_err("garbage accepted");
            assert_eq!(err.code(), Code::InvalidArgument, "{path} on {id}: {err:?}");
            assert!(
                err.message().contains("malformed"),
                "{path}: {}",
                err.message()
            );
            if path.starts_with("/dispatcher.v1.") {
                let huge = bytes_field(&vec![b'x'; 5 * 1024 * 1024]);
                let err = call(&addr, path, huge)
                    .await
                    .expect_err("oversized accepted");
                assert!(
                    matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
                    "{path} oversized: {err:?}"
                );
            } else {
                // Well-formed protobuf around bytes that are no Raft message.
                let err = call(&addr, path, bytes_field(&garbage))
                    .await
                    .expect_err("accepted");
                assert_eq!(err.code(), Code::InvalidArgument, "{path}: {err:?}");
                assert!(
                    err.message().contains("undecodable"),
                    "{path}: {}",
                    err.message()
                );
            }
        }
        for chunks in [vec![garbage.clone()], vec![], vec![bytes_field(&garbage)]] {
            let err = snapshot_stream(&addr, chunks)
                .await
                .expect_err("snapshot accepted");
            assert_eq!(
                err.code(),
                Code::InvalidArgument,
                "InstallSnapshot: {err:?}"
            );
        }
    }

    log_phase("an oversized Raft message (over the 256 MiB limit) is refused too");
    let addr = cluster.addr(ids[0])?;
    let huge = bytes_field(&vec![
        0u8;
        dispatcher::raft::network::RAFT_MAX_MESSAGE_BYTES
            + 1024
    ]);
    let err = call(&addr, "/dispatcher.raft.v1.RaftService/AppendEntries", huge)
        .await
        .expect_err("oversized Raft message accepted");
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "oversized AppendEntries: {err:?}"
    );

    log_phase("every replica is up and the state is unchanged");
    let after = cluster.wait_converged(&ids, DEADLINE).await?.1;
    assert_eq!(after, before);
    assert_eq!(client.list_jobs().await?.len(), 1);
    Ok(())
}
