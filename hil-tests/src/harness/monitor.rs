//! A monitoring link to a gateway (what `switchboard status` opens): asks for its counters.
//! Speaks the link protocol by hand (a 4-byte big-endian length, then postcard), so a test
//! sees exactly what a gateway says.

use std::net::SocketAddr;
use std::time::Duration;

use protocol::link::{
    GatewayStats, GatewayToWorker, Query, Reply, WorkerToGateway, LINK_VERSION, MAX_LINK_FRAME,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the whole exchange may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The counters of the gateway whose worker link listens on `addr`.
pub async fn gateway_stats(addr: SocketAddr, secret: &str) -> Result<GatewayStats, String> {
    tokio::time::timeout(TIMEOUT, ask(addr, secret))
        .await
        .map_err(|_| format!("gateway {addr} did not answer within {TIMEOUT:?}"))?
}

async fn ask(addr: SocketAddr, secret: &str) -> Result<GatewayStats, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let hello = WorkerToGateway::Monitor {
        version: LINK_VERSION,
        secret: secret.to_owned(),
    };
    send(&mut stream, &hello).await?;
    match recv(&mut stream).await? {
        GatewayToWorker::Welcome { .. } => {}
        other => return Err(format!("expected Welcome, got {other:?}")),
    }
    let query = WorkerToGateway::Query {
        id: 1,
        query: Query::Stats,
    };
    send(&mut stream, &query).await?;
    loop {
        match recv(&mut stream).await? {
            GatewayToWorker::Reply {
                reply: Reply::Stats(stats),
                ..
            } => return Ok(stats),
            GatewayToWorker::Routes { .. } => continue,
            other => return Err(format!("expected the stats, got {other:?}")),
        }
    }
}

async fn send(stream: &mut TcpStream, msg: &WorkerToGateway) -> Result<(), String> {
    let bytes = postcard::to_allocvec(msg).map_err(|e| e.to_string())?;
    let len = u32::try_from(bytes.len()).map_err(|e| e.to_string())?;
    stream
        .write_all(&len.to_be_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.write_all(&bytes).await.map_err(|e| e.to_string())
}

async fn recv(stream: &mut TcpStream) -> Result<GatewayToWorker, String> {
    let len = stream.read_u32().await.map_err(|e| e.to_string())? as usize;
    if len > MAX_LINK_FRAME {
        return Err(format!("a {len}-byte link message is over MAX_LINK_FRAME"));
    }
    let mut bytes = vec![0; len];
    stream
        .read_exact(&mut bytes)
        .await
        .map_err(|e| e.to_string())?;
    postcard::from_bytes(&bytes).map_err(|e| e.to_string())
}
