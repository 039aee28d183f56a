//! Flight SQL sources (`kind: flight_sql`): another meshql node serving its own domain,
//! or any Flight SQL server. Subplans over its tables are sent as one SQL statement
//! and the results streamed back.
//!
//! The remote node enforces its own policies for whoever signs in: the source's
//! configured credentials (a token or a user and password), or, with a
//! `delegation_secret`, the end user the gateway vouches for.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Statistics, TableReference};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{PhysicalExpr, SendableRecordBatchStream};
use datafusion::sql::unparser::dialect::Dialect;
use datafusion_federation::sql::SQLExecutor;
use futures::{Stream, StreamExt, TryStreamExt};
use meshql_engine::Identity;
use meshql_engine::config::decode;
use meshql_engine::config::decode::number_or_string;
use meshql_engine::federation::stats::remote_statistics;
use meshql_engine::federation::{MetadataCache, RemoteSource, RemoteTable, SqlDialect, conform};
use meshql_engine::governance::token::{self, DELEGATION_HEADER, DELEGATION_TTL, Purpose};
use meshql_engine::{Connector, ConnectorError, PortLocation, Source, SourceContext};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use tonic::transport::{Channel, Endpoint};

/// Longest a plan waits for a remote table's row count.
const ROW_COUNT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub(crate) struct FlightSqlConnector;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum DialectName {
    /// DataFusion-based servers (meshql, ROAPI, ...).
    Datafusion,
    /// Servers that speak PostgreSQL's SQL.
    Postgres,
}

/// `kind: flight_sql`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlightSourceConfig {
    /// `grpc://host:port` or `grpc+tls://host:port`.
    endpoint: String,
    /// A bearer token sent as is.
    token: Option<String>,
    /// Or sign in with a user and password (Basic handshake).
    user: Option<String>,
    password: Option<String>,
    /// PEM file of the CA that signed the server's certificate (grpc+tls), relative to the mesh file.
    tls_ca: Option<String>,
    #[serde(default = "default_dialect")]
    dialect: DialectName,
    #[serde(
        default = "crate::remote_defaults::connect_timeout",
        deserialize_with = "number_or_string"
    )]
    connect_timeout_s: u64,
    /// Longest wait for the statement to be planned, or for its next batch.
    #[serde(
        default = "crate::remote_defaults::query_timeout",
        deserialize_with = "number_or_string"
    )]
    query_timeout_s: u64,
    /// Pass the end user on: statements carry their name signed with this secret, and
    /// a node that trusts this gateway (the same secret on its user) runs them as that
    /// user. Without it the node sees this source's own user.
    delegation_secret: Option<String>,
    /// How long table schemas are kept before they are asked for again.
    #[serde(
        default = "crate::remote_defaults::metadata_ttl",
        deserialize_with = "number_or_string"
    )]
    metadata_ttl_s: u64,
}

fn default_dialect() -> DialectName {
    DialectName::Datafusion
}

/// `table:` of a port: the table's name on the remote server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlightPortConfig {
    table: String,
}

enum Credentials {
    None,
    Token(String),
    Basic { user: String, password: String },
}

impl Connector for FlightSqlConnector {
    fn kinds(&self) -> &'static [&'static str] {
        &["flight_sql"]
    }

    fn open_source(
        &self,
        _kind: &str,
        options: &Mapping,
        ctx: &SourceContext<'_>,
    ) -> Result<Arc<dyn Source>, ConnectorError> {
        let config: FlightSourceConfig = decode(Value::Mapping(options.clone()))?;
        let credentials = match (config.token, config.user, config.password) {
            (Some(_), Some(_), _) => {
                return Err(
                    ConnectorError::new("give either `token` or `user`, not both").at("user"),
                );
            }
            (Some(token), None, None) => Credentials::Token(token),
            (None, Some(user), password) => Credentials::Basic {
                user,
                password: password.unwrap_or_default(),
            },
            (_, None, Some(_)) => {
                return Err(ConnectorError::new("`password` needs a `user`").at("password"));
            }
            (None, None, None) => Credentials::None,
        };
        let url = config
            .endpoint
            .replace("grpc+tls://", "https://")
            .replace("grpc://", "http://");
        let tls = url.starts_with("https://");
        if !tls && !url.starts_with("http://") {
            return Err(ConnectorError::new(format!(
                "endpoint `{}` must start with grpc:// or grpc+tls://",
                config.endpoint
            ))
            .at("endpoint"));
        }
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| ConnectorError::new(format!("invalid endpoint: {e}")).at("endpoint"))?
            .connect_timeout(Duration::from_secs(config.connect_timeout_s.max(1)))
            .tcp_nodelay(true);
        if tls {
            let mut tls_config = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
            if let Some(ca) = &config.tls_ca {
                let path = ctx.base_dir.join(ca);
                let pem = std::fs::read(&path).map_err(|e| {
                    ConnectorError::new(format!("cannot read {}: {e}", path.display())).at("tls_ca")
                })?;
                tls_config =
                    tls_config.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(tls_config)
                .map_err(|e| ConnectorError::new(format!("TLS: {e}")).at("endpoint"))?;
        }
        if config
            .delegation_secret
            .as_deref()
            .is_some_and(str::is_empty)
        {
            return Err(ConnectorError::new("`delegation_secret` is empty").at("delegation_secret"));
        }
        if config.delegation_secret.is_some() && matches!(credentials, Credentials::None) {
            return Err(ConnectorError::new(
                "`delegation_secret` needs the gateway's own credentials (`user` and `password`, or `token`): the node trusts a signed-in gateway, not the signature alone",
            )
            .at("delegation_secret"));
        }
        let inner = Arc::new(FlightInner {
            name: ctx.name.to_string(),
            delegation_secret: config.delegation_secret.map(String::into_bytes),
            metadata: MetadataCache::new(Duration::from_secs(config.metadata_ttl_s)),
            address: config.endpoint.clone(),
            // No I/O here: the channel connects on first use and reconnects after failures.
            channel: endpoint.connect_lazy(),
            credentials,
            dialect: match config.dialect {
                DialectName::Datafusion => SqlDialect::DataFusion,
                DialectName::Postgres => SqlDialect::Postgres,
            },
            connect_timeout: Duration::from_secs(config.connect_timeout_s.max(1)),
            query_timeout: Duration::from_secs(config.query_timeout_s.max(1)),
            token: tokio::sync::Mutex::new(None),
        });
        Ok(Arc::new(FlightSource { inner }))
    }
}

struct FlightInner {
    name: String,
    address: String,
    channel: Channel,
    credentials: Credentials,
    dialect: SqlDialect,
    connect_timeout: Duration,
    query_timeout: Duration,
    /// The bearer token from the last sign-in (Basic credentials only).
    token: tokio::sync::Mutex<Option<String>>,
    delegation_secret: Option<Vec<u8>>,
    metadata: MetadataCache,
}

impl std::fmt::Debug for FlightInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightInner")
            .field("name", &self.name)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl FlightInner {
    fn describe(&self) -> String {
        format!("source `{}` (Flight SQL at {})", self.name, self.address)
    }

    fn error(&self, what: impl std::fmt::Display) -> DataFusionError {
        DataFusionError::External(format!("{}: {what}", self.describe()).into())
    }

    /// A client with credentials attached, signing in if needed.
    async fn client(&self, fresh: bool) -> Result<FlightSqlServiceClient<Channel>, String> {
        let mut client = FlightSqlServiceClient::new(self.channel.clone());
        match &self.credentials {
            Credentials::None => {}
            Credentials::Token(token) => client.set_token(token.clone()),
            Credentials::Basic { user, password } => {
                let mut cached = self.token.lock().await;
                if fresh {
                    *cached = None;
                }
                match cached.as_ref() {
                    Some(token) => client.set_token(token.clone()),
                    None => {
                        let signed_in = tokio::time::timeout(
                            self.connect_timeout,
                            client.handshake(user, password),
                        )
                        .await
                        .map_err(|_| {
                            format!(
                                "no answer within {}s (connect_timeout_s)",
                                self.connect_timeout.as_secs()
                            )
                        })?;
                        signed_in.map_err(|e| {
                            format!("sign-in as `{user}` failed: {}", flight_message(&e))
                        })?;
                        *cached = client.token().cloned();
                    }
                }
            }
        }
        Ok(client)
    }

    /// Plan `sql` remotely: the FlightInfo, with one retry after an expired token.
    async fn flight_info(
        &self,
        sql: &str,
        on_behalf_of: Option<&str>,
    ) -> DFResult<(FlightSqlServiceClient<Channel>, arrow_flight::FlightInfo)> {
        let mut fresh = false;
        loop {
            let mut client = self.client(fresh).await.map_err(|e| self.error(e))?;
            if let (Some(secret), Some(user)) = (&self.delegation_secret, on_behalf_of) {
                let expiry = token::now_secs() + DELEGATION_TTL.as_secs();
                let signed = token::sign(secret, Purpose::Delegation, user, expiry);
                client.set_header(DELEGATION_HEADER, signed);
            }
            let result =
                tokio::time::timeout(self.query_timeout, client.execute(sql.to_string(), None))
                    .await
                    .map_err(|_| {
                        self.error(format!(
                            "no answer within {}s (query_timeout_s)",
                            self.query_timeout.as_secs()
                        ))
                    })?;
            match result {
                Ok(info) => return Ok((client, info)),
                Err(FlightError::Tonic(status))
                    if status.code() == tonic::Code::Unauthenticated
                        && !fresh
                        && matches!(self.credentials, Credentials::Basic { .. }) =>
                {
                    fresh = true;
                }
                Err(e) => return Err(self.error(flight_message(&e))),
            }
        }
    }

    async fn query(
        self: Arc<Self>,
        sql: String,
        expected: SchemaRef,
        on_behalf_of: Option<String>,
    ) -> DFResult<impl Stream<Item = DFResult<RecordBatch>> + Send> {
        tracing::debug!(source = %self.name, sql = %sql, user = ?on_behalf_of, "remote statement");
        let (mut client, info) = self.flight_info(&sql, on_behalf_of.as_deref()).await?;
        let mut streams = Vec::new();
        for endpoint in info.endpoint {
            let ticket = endpoint
                .ticket
                .ok_or_else(|| self.error("the server sent an endpoint without a ticket"))?;
            let stream = tokio::time::timeout(self.query_timeout, client.do_get(ticket))
                .await
                .map_err(|_| self.error("no answer to DoGet in time (query_timeout_s)"))?
                .map_err(|e| self.error(flight_message(&e)))?;
            streams.push(stream);
        }
        let inner = Arc::clone(&self);
        let timeout = self.query_timeout;
        let batches = futures::stream::iter(streams).flatten();
        let batches = Box::pin(batches);
        Ok(futures::stream::unfold(
            Some((batches, inner)),
            move |state| {
                let expected = Arc::clone(&expected);
                async move {
                    let (mut batches, inner) = state?;
                    match tokio::time::timeout(timeout, batches.next()).await {
                        Ok(None) => None,
                        Ok(Some(Ok(batch))) => match conform(&batch, &expected) {
                            Ok(batch) => Some((Ok(batch), Some((batches, inner)))),
                            Err(e) => Some((Err(inner.error(e)), None)),
                        },
                        Ok(Some(Err(e))) => Some((Err(inner.error(flight_message(&e))), None)),
                        Err(_) => Some((
                            Err(inner.error(format!(
                                "no rows within {}s (query_timeout_s)",
                                timeout.as_secs()
                            ))),
                            None,
                        )),
                    }
                }
            },
        ))
    }

    /// The table's schema as the source's own user sees it.
    async fn schema_of(&self, table: &str) -> DFResult<SchemaRef> {
        let fetch = async {
            let sql = format!("SELECT * FROM {table} LIMIT 0");
            let (_, info) = self
                .flight_info(&sql, None)
                .await
                .map_err(|e| e.to_string())?;
            let announced = info.try_decode_schema().map_err(|e| {
                self.error(format!("cannot read the schema: {e}"))
                    .to_string()
            })?;
            if !announced.fields().is_empty() {
                return Ok(Arc::new(announced));
            }
            // Some servers (ROAPI) announce no schema and send none for an empty
            // result: read it from one row.
            self.streamed_schema(&format!("SELECT * FROM {table} LIMIT 1"))
                .await
                .map_err(|e| e.to_string())
        };
        self.metadata
            .schema(&TableReference::from(table), fetch)
            .await
            .map_err(|e| DataFusionError::External(e.into()))
    }
}

impl FlightInner {
    /// The table's rows by `SELECT count(*)` with the source's own credentials, kept
    /// like its schema. Planning waits for it, so a server that cannot answer within
    /// [`ROW_COUNT_TIMEOUT`] leaves the count unknown until the cache expires.
    async fn row_count(self: &Arc<Self>, table: &TableReference) -> Option<u64> {
        let fetch = async {
            let sql = format!("SELECT count(*) FROM {}", table.to_quoted_string());
            let expected = Arc::new(Schema::new(vec![Field::new(
                "count",
                DataType::Int64,
                true,
            )]));
            let count = async {
                let mut batches = Box::pin(Arc::clone(self).query(sql, expected, None).await?);
                let batch = batches.try_next().await?;
                Ok::<_, DataFusionError>(batch.and_then(|b| {
                    let counts = b.column(0).as_primitive_opt::<Int64Type>()?;
                    (!counts.is_empty() && counts.is_valid(0)).then(|| counts.value(0))
                }))
            };
            match tokio::time::timeout(ROW_COUNT_TIMEOUT, count).await {
                Ok(Ok(Some(rows))) => u64::try_from(rows).ok(),
                Ok(Ok(None)) => None,
                Ok(Err(e)) => {
                    tracing::debug!(source = %self.name, %table, error = %e, "no row count");
                    None
                }
                Err(_) => {
                    tracing::debug!(source = %self.name, %table, "no row count in time");
                    None
                }
            }
        };
        self.metadata.rows(table, fetch).await
    }

    async fn streamed_schema(&self, sql: &str) -> DFResult<SchemaRef> {
        let (mut client, info) = self.flight_info(sql, None).await?;
        let ticket = info
            .endpoint
            .into_iter()
            .find_map(|e| e.ticket)
            .ok_or_else(|| self.error("the server sent no schema and no ticket"))?;
        let read = async {
            let mut stream = client
                .do_get(ticket)
                .await
                .map_err(|e| self.error(flight_message(&e)))?;
            if let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| self.error(flight_message(&e)))?;
                return Ok(batch.schema());
            }
            stream
                .schema()
                .filter(|s| !s.fields().is_empty())
                .cloned()
                .ok_or_else(|| {
                    self.error("the server announces no schema and the table is empty, so its columns cannot be known")
                })
        };
        tokio::time::timeout(self.query_timeout, read)
            .await
            .map_err(|_| self.error("no schema in time (query_timeout_s)"))?
    }
}

/// The server's message, not the transport's wrapping of it.
fn flight_message(e: &FlightError) -> String {
    match e {
        FlightError::Tonic(status) if status.code() == tonic::Code::Unavailable => {
            format!("unavailable: {}", status.message())
        }
        FlightError::Tonic(status) => status.message().to_string(),
        other => other.to_string(),
    }
}

#[derive(Debug)]
struct FlightExecutor {
    inner: Arc<FlightInner>,
    /// The end user statements are signed for (with a `delegation_secret`).
    on_behalf_of: Option<String>,
}

#[async_trait]
impl SQLExecutor for FlightExecutor {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn compute_context(&self) -> Option<String> {
        Some(format!("flight_sql://{}", self.inner.address))
    }

    fn dialect(&self) -> Arc<dyn Dialect> {
        self.inner.dialect.unparser_dialect()
    }

    fn execute(
        &self,
        query: &str,
        schema: SchemaRef,
        _filters: &[Arc<dyn PhysicalExpr>],
    ) -> DFResult<SendableRecordBatchStream> {
        let inner = Arc::clone(&self.inner);
        let stream = futures::stream::once(inner.query(
            query.to_string(),
            Arc::clone(&schema),
            self.on_behalf_of.clone(),
        ))
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    /// From the remote tables' row counts, so joins with the rest of the mesh put the
    /// smaller side on the build side.
    async fn statistics(&self, plan: &LogicalPlan) -> DFResult<Statistics> {
        Ok(remote_statistics(
            plan,
            |table| async move { self.inner.row_count(&table).await },
        )
        .await)
    }

    async fn table_names(&self) -> DFResult<Vec<String>> {
        Err(DataFusionError::NotImplemented(
            "listing the tables of a Flight SQL source".to_string(),
        ))
    }

    async fn get_table_schema(&self, table_name: &str) -> DFResult<SchemaRef> {
        self.inner.schema_of(table_name).await
    }
}

#[derive(Debug)]
struct FlightRemote(Arc<FlightInner>);

impl RemoteSource for FlightRemote {
    fn name(&self) -> &str {
        &self.0.name
    }

    fn context(&self) -> String {
        format!("flight_sql://{}", self.0.address)
    }

    fn dialect(&self) -> SqlDialect {
        self.0.dialect
    }

    /// Statements for a signed-in user carry their name when the source delegates.
    /// Derived ports (run with their owner group's rights, `group:NAME`) and the
    /// platform's own checks use the source's credentials.
    fn executor(&self, session: &dyn Session) -> DFResult<Arc<dyn SQLExecutor>> {
        let on_behalf_of = self
            .0
            .delegation_secret
            .as_ref()
            .and(session.config().get_extension::<Identity>())
            .map(|identity| identity.user.clone())
            .filter(|user| !user.contains(':'));
        Ok(Arc::new(FlightExecutor {
            inner: Arc::clone(&self.0),
            on_behalf_of,
        }))
    }
}

#[derive(Debug)]
struct FlightSource {
    inner: Arc<FlightInner>,
}

#[async_trait]
impl Source for FlightSource {
    fn refresh(&self) {
        self.inner.metadata.invalidate();
    }

    fn location(&self) -> String {
        self.inner.address.clone()
    }

    fn describe_port(&self, options: &Mapping) -> Result<PortLocation, ConnectorError> {
        let port: FlightPortConfig = decode(Value::Mapping(options.clone()))?;
        Ok(PortLocation {
            format: "flight_sql".to_string(),
            location: format!("{}/{}", self.inner.address, port.table),
        })
    }

    async fn open_port(
        &self,
        options: &Mapping,
        _state: &SessionState,
    ) -> Result<Arc<dyn TableProvider>, ConnectorError> {
        let port: FlightPortConfig = decode(Value::Mapping(options.clone()))?;
        let remote_name = TableReference::from(port.table.as_str());
        let schema = self.inner.schema_of(&port.table).await.map_err(|e| {
            ConnectorError::new(format!("cannot read table `{}`: {e}", port.table))
                .at("table")
                .with_help("check that the node is up, the credentials, and that the table exists and is granted to this source's user")
        })?;
        let remote = Arc::new(FlightRemote(Arc::clone(&self.inner)));
        let executor = Arc::new(FlightExecutor {
            inner: Arc::clone(&self.inner),
            on_behalf_of: None,
        });
        Ok(Arc::new(RemoteTable::new(
            remote,
            executor,
            remote_name,
            schema,
        )))
    }
}
