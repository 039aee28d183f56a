//! The HTTP/2 layer under Flight: third_party/h2 writes many DATA frames per write
//! call. Stock h2 writes each 16 KiB frame on its own (hyperium/h2#902): a 1 GB result
//! took 62K writev calls.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// 256 DATA frames at the default max frame size of 16 KiB.
const PAYLOAD: usize = 4 << 20;

#[tokio::test]
async fn a_large_response_body_goes_out_in_few_writes() {
    // Vectored like a TCP or TLS stream (h2 chains frames of 256 bytes and more), and
    // not vectored (1024 bytes and more, each frame head then written on its own).
    for vectored in [true, false] {
        let writes = tokio::time::timeout(Duration::from_secs(60), send_body(vectored))
            .await
            .expect("the response arrives within a minute");
        // Stock h2 needs at least one write per frame: 256 or more.
        assert!(
            writes < 64,
            "{writes} writes (vectored: {vectored}) for 256 DATA frames: is third_party/h2 \
             patched in (Cargo.toml [patch.crates-io])?"
        );
    }
}

/// Serves one response of PAYLOAD bytes over an in-memory connection, checks what the
/// client receives, and returns how many writes the server made.
async fn send_body(vectored: bool) -> usize {
    let (client_io, server_io) = tokio::io::duplex(2 * PAYLOAD);
    let writes = Arc::new(AtomicUsize::new(0));
    let server_io = CountWrites {
        inner: server_io,
        writes: Arc::clone(&writes),
        vectored,
    };
    let payload: Bytes = (0..PAYLOAD).map(|i| (i % 251) as u8).collect();

    let sent = payload.clone();
    let server = tokio::spawn(async move {
        let mut conn = h2::server::handshake(server_io)
            .await
            .expect("server handshake");
        let (_request, mut respond) = conn
            .accept()
            .await
            .expect("a request")
            .expect("accept the request");
        let mut body = respond
            .send_response(http::Response::new(()), false)
            .expect("send the headers");
        body.send_data(sent, true).expect("queue the body");
        // Drive the connection until the client goes away.
        while let Some(Ok(_)) = conn.accept().await {}
    });

    // A window as large as the body, so that flow control never holds the server back.
    let (mut client, conn) = h2::client::Builder::new()
        .initial_window_size(PAYLOAD as u32)
        .initial_connection_window_size(PAYLOAD as u32)
        .handshake::<_, Bytes>(client_io)
        .await
        .expect("client handshake");
    let driver = tokio::spawn(conn);
    let request = http::Request::get("http://meshql.test/")
        .body(())
        .expect("request");
    let (response, _) = client
        .send_request(request, true)
        .expect("send the request");
    let mut body = response.await.expect("response headers").into_body();
    let mut received = Vec::with_capacity(PAYLOAD);
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("a DATA frame");
        received.extend_from_slice(&chunk);
        body.flow_control()
            .release_capacity(chunk.len())
            .expect("release capacity");
    }
    assert!(received == payload, "the body arrived changed");
    // The client connection closes once no handle to it is left.
    drop(body);
    drop(client);
    driver
        .await
        .expect("client task")
        .expect("client connection");
    server.await.expect("server task");
    writes.load(Ordering::Relaxed)
}

/// Counts the server's write calls that moved bytes.
struct CountWrites {
    inner: DuplexStream,
    writes: Arc<AtomicUsize>,
    vectored: bool,
}

impl CountWrites {
    fn count(&self, written: &Poll<std::io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = written
            && *n > 0
        {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl AsyncRead for CountWrites {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountWrites {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.count(&written);
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.count(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
