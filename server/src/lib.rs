//! `meshql serve`: Arrow Flight SQL over the mesh, with sign-in, TLS and a graceful stop.

mod auth;
mod catalog;
mod frames;
mod router;
mod service;
mod sql_info;
mod statement;
mod status;
mod throttle;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meshql_engine::MeshEngine;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity as TlsIdentity, Server, ServerTlsConfig};

pub use auth::{Authenticator, Identity};
pub use frames::Frame;
pub use router::FlightRouter;
pub use service::MeshFlightSqlService;
pub use statement::{client_schema, encode};

/// Largest message a client may send (DoPut parameters): tonic's 4 MiB default is too small.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub bind: SocketAddr,
    /// PEM certificate chain and private key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Serve without sign-in on a non-loopback address.
    pub insecure_open: bool,
    /// Key that signs bearer tokens; replicas behind one address share it.
    pub token_secret: Option<String>,
    pub token_ttl: Duration,
    /// A session ends this long after its password sign-in, renewed or not.
    pub session_max: Duration,
    /// Failed password sign-ins per user a minute before its sign-ins are refused.
    pub max_failed_sign_ins: usize,
    /// How long SIGTERM waits for running statements before cutting them.
    pub drain_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to serve without sign-in on {0}: the mesh has no `access:` section. \
         Bind a loopback address (127.0.0.1), add `access.users`, or pass --insecure-open"
    )]
    OpenOnNetwork(SocketAddr),
    #[error(
        "{0}: fix the path or its permissions (`access.audit_log`); nothing is served unaudited"
    )]
    Audit(String),
    #[error(
        "stopped with {0} statement(s) still running after the drain time (--drain-timeout-s); \
         each is recorded in the audit log as cut"
    )]
    Cut(usize),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("cannot read TLS file {0}: {1}")]
    Tls(PathBuf, std::io::Error),
    #[error("server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serve until SIGTERM or Ctrl-C, then stop taking calls and let running ones finish.
/// Prints `listening on grpc://HOST:PORT` once connections are accepted.
pub async fn serve(engine: MeshEngine, options: ServeOptions) -> Result<(), ServeError> {
    if let Some(problem) = engine.governance().audit().problem() {
        return Err(ServeError::Audit(problem.to_string()));
    }
    let open = engine.access().is_none();
    if open && !options.bind.ip().is_loopback() && !options.insecure_open {
        return Err(ServeError::OpenOnNetwork(options.bind));
    }
    let auth = Arc::new(
        Authenticator::new(
            engine.access(),
            options.token_secret.as_deref(),
            options.token_ttl,
        )
        .with_session_max(options.session_max)
        .with_max_failures(options.max_failed_sign_ins)
        .with_audit(Arc::clone(engine.governance())),
    );
    let admission = Arc::clone(engine.admission());
    let service = FlightRouter::new(MeshFlightSqlService::new(Arc::new(engine), auth));

    let listener = TcpListener::bind(options.bind)
        .await
        .map_err(|e| ServeError::Bind(options.bind, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Bind(options.bind, e))?;

    let mut builder = Server::builder();
    let scheme = match &options.tls {
        Some((cert, key)) => {
            install_crypto_provider();
            let cert_pem = std::fs::read(cert).map_err(|e| ServeError::Tls(cert.clone(), e))?;
            let key_pem = std::fs::read(key).map_err(|e| ServeError::Tls(key.clone(), e))?;
            builder = builder.tls_config(
                ServerTlsConfig::new().identity(TlsIdentity::from_pem(cert_pem, key_pem)),
            )?;
            "grpc+tls"
        }
        None => "grpc",
    };
    if open {
        tracing::warn!("no `access:` section: serving without sign-in");
    }
    // Tests and scripts wait for this line.
    println!("listening on {scheme}://{addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    // Without TCP_NODELAY, a small response (FlightInfo, a one-row result) waits for
    // the client's delayed ACK on every call (figures:
    // docs/benchmarks/log.md#2026-11-21-delta-snapshots-read-as-parquet-tcp_nodelay-kept).
    // tonic only sets it on listeners it binds itself.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok::<_, std::io::Error>(conn)
    });
    let server = builder
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async {
            shutdown().await;
            let _ = stopping_tx.send(());
        });
    // Running statements get the drain time to finish after the signal; those still
    // running then are cut (their streams are dropped when the runtime shuts down, which
    // writes their audit records) and the process exits non-zero.
    let drain = options.drain_timeout;
    let drain_deadline = async {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(drain).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result?,
        () = drain_deadline => {
            admission.begin_shutdown();
            let cut = admission.running();
            tracing::warn!(cut, "statements still running after {}s: cutting them", drain.as_secs());
            if cut > 0 {
                return Err(ServeError::Cut(cut));
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// rustls needs one process-wide crypto provider; the dependency tree links two (ring
/// and aws-lc-rs, the latter through the AWS SDK), so rustls cannot pick on its own.
pub fn install_crypto_provider() {
    // An error means one is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down: finishing running queries");
}
