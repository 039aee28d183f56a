//! The HTTP/2 layer under Flight: third_party/h2 writes many DATA frames per write
//! call. Stock h2 writes each 16 KiB frame on its own (hyperium/h2#902): a 1 GB result
//! took 62K writev calls, and the client read it in as many small pieces.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// 256 DATA frames at the default max frame size of 16 KiB.
const PAYLOAD: usize = 4 << 20;

#[tokio::test]
async fn a_large_response_body_goes_out_in_few_writes() {
    let (client_io, server_io) = tokio::io::duplex(2 * PAYLOAD);
    let writes = Arc::new(AtomicUsize::new(0));
    let server_io = CountWrites {
        inner: server_io,
        writes: Arc::clone(&writes),
    };

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
        body.send_data(Bytes::from(vec![7u8; PAYLOAD]), true)
            .expect("queue the body");
        // Drive the connection until the client goes away.
        while conn.accept().await.is_some() {}
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
    let mut received = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("a DATA frame");
        received += chunk.len();
        body.flow_control()
            .release_capacity(chunk.len())
            .expect("release capacity");
    }
    assert_eq!(received, PAYLOAD);
    drop(client);
    let _ = driver.await;
    server.await.expect("server task");

    // Stock h2 needs at least one write per frame (two here: the duplex stream is not
    // vectored, so the frame head and its payload go separately): 256 or more.
    let writes = writes.load(Ordering::Relaxed);
    assert!(
        writes < 64,
        "{writes} writes for 256 DATA frames: is third_party/h2 patched in (Cargo.toml [patch.crates-io])?"
    );
}

/// Counts the server's write calls that moved bytes.
struct CountWrites {
    inner: DuplexStream,
    writes: Arc<AtomicUsize>,
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
        if let Poll::Ready(Ok(n)) = written
            && n > 0
        {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
