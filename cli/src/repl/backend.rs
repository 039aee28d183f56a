//! Where the REPL's statements run: the embedded engine, or a Flight SQL server
//! (`--connect`). Both give a schema and a stream of batches.

use std::sync::Arc;

use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use meshql_engine::MeshSession;
use tonic::transport::Channel;

pub(super) type Batches = BoxStream<'static, Result<RecordBatch, String>>;

pub(crate) enum Backend {
    /// One session for the whole shell: settings made with SET persist.
    Embedded(Box<MeshSession>),
    Remote(Box<FlightSqlServiceClient<Channel>>),
}

impl Backend {
    /// Connect to `url` (`grpc://` or `grpc+tls://`), signing in when `user` is given.
    pub(crate) async fn connect(
        url: &str,
        user: Option<(&str, &str)>,
        ca_pem: Option<Vec<u8>>,
    ) -> Result<Self, String> {
        let endpoint = url
            .replace("grpc+tls://", "https://")
            .replace("grpc://", "http://");
        if endpoint.starts_with("https://") {
            meshql_server::install_crypto_provider();
        }
        let mut channel = Channel::from_shared(endpoint.clone())
            .map_err(|e| format!("invalid address {url}: {e}"))?;
        if endpoint.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
            if let Some(pem) = ca_pem {
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            channel = channel.tls_config(tls).map_err(|e| format!("TLS: {e}"))?;
        }
        let channel = channel.connect().await.map_err(|e| {
            format!("cannot connect to {url}: {e}. Is `meshql serve` running there?")
        })?;
        let mut client = FlightSqlServiceClient::new(channel);
        if let Some((name, password)) = user {
            client
                .handshake(name, password)
                .await
                .map_err(flight_message)?;
        }
        Ok(Backend::Remote(Box::new(client)))
    }

    /// Plan and start `sql`.
    pub(crate) async fn run(&mut self, sql: &str) -> Result<(SchemaRef, Batches), String> {
        match self {
            Backend::Embedded(session) => {
                let planned = session.plan(sql).await.map_err(|e| e.to_string())?;
                let stream = planned.execute().await.map_err(|e| e.to_string())?;
                let schema = stream.schema();
                let batches = stream
                    .map_err(|e| meshql_engine::Error::from(e).to_string())
                    .boxed();
                Ok((schema, batches))
            }
            Backend::Remote(client) => {
                let info = client
                    .execute(sql.to_string(), None)
                    .await
                    .map_err(flight_message)?;
                let schema = Arc::new(
                    info.clone()
                        .try_decode_schema()
                        .map_err(|e| e.to_string())?,
                );
                let mut streams = Vec::new();
                for endpoint in info.endpoint {
                    let ticket = endpoint.ticket.ok_or("the server sent no ticket")?;
                    streams.push(client.do_get(ticket).await.map_err(flight_message)?);
                }
                let batches = futures::stream::iter(streams)
                    .flatten()
                    .map_err(flight_message)
                    .boxed();
                Ok((schema, batches))
            }
        }
    }

    /// All rows of `sql`, for the REPL's own lookups (completion, `\d`).
    pub(crate) async fn rows(&mut self, sql: &str) -> Result<Vec<RecordBatch>, String> {
        let (_, batches) = self.run(sql).await?;
        batches.try_collect().await
    }
}

/// The server's message, not the transport's wrapping of it.
fn flight_message(e: FlightError) -> String {
    match e {
        FlightError::Tonic(status) => status.message().to_string(),
        other => other.to_string(),
    }
}
