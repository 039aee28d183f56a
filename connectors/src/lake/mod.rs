//! Lake sources: a directory on the local file system (`kind: local`) or an S3 bucket
//! (`kind: s3`, any S3-compatible server). Their ports are files in a `format`:
//! Parquet, CSV and JSON through DataFusion listing tables, Delta through deltalake.

#[cfg(feature = "delta")]
mod delta;
#[cfg(feature = "delta")]
mod delta_files;
mod files;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::execution::SessionState;
use datafusion::execution::runtime_env::RuntimeEnv;
use meshql_engine::config::decode;
use meshql_engine::{Connector, ConnectorError, PortLocation, Source, SourceContext};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use url::Url;

use files::FileFormatKind;

#[derive(Debug)]
pub struct LakeConnector;

/// `kind: local`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalSourceConfig {
    /// Directory holding the source's data; relative to the file that declares the source.
    root: String,
}

/// `kind: s3`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct S3SourceConfig {
    pub bucket: String,
    pub region: Option<String>,
    /// For S3-compatible servers (MinIO, moto, Ceph...). AWS itself needs none.
    pub endpoint: Option<String>,
    #[serde(default)]
    pub allow_http: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3SourceConfig {
    /// Never prints credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3SourceConfig")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("allow_http", &self.allow_http)
            .finish_non_exhaustive()
    }
}

/// `format`, `path` and `options` of a lake port.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LakePortConfig {
    format: LakeFormat,
    /// A file, a directory or a glob inside the source.
    path: String,
    #[serde(default)]
    options: Mapping,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum LakeFormat {
    Parquet,
    Csv,
    Json,
    Delta,
}

impl LakeFormat {
    fn name(self) -> &'static str {
        match self {
            LakeFormat::Parquet => "parquet",
            LakeFormat::Csv => "csv",
            LakeFormat::Json => "json",
            LakeFormat::Delta => "delta",
        }
    }
}

impl Connector for LakeConnector {
    fn kinds(&self) -> &'static [&'static str] {
        &["local", "s3"]
    }

    fn open_source(
        &self,
        kind: &str,
        options: &Mapping,
        ctx: &SourceContext<'_>,
    ) -> Result<Arc<dyn Source>, ConnectorError> {
        let source = match kind {
            "local" => local_source(options, ctx)?,
            "s3" => s3_source(options, ctx.runtime)?,
            other => {
                return Err(ConnectorError::new(format!(
                    "lake connector cannot open kind `{other}`"
                )));
            }
        };
        Ok(Arc::new(LakeSource {
            name: ctx.name.to_string(),
            ..source
        }))
    }
}

fn local_source(options: &Mapping, ctx: &SourceContext<'_>) -> Result<LakeSource, ConnectorError> {
    let config: LocalSourceConfig = decode(Value::Mapping(options.clone()))?;
    let root = ctx.base_dir.join(&config.root);
    let root = root.canonicalize().map_err(|e| {
        ConnectorError::new(format!("root directory {} cannot be opened: {e}", root.display()))
            .at("root")
            .with_help("create the directory or fix `root:` (relative roots start at the mesh file's directory)")
    })?;
    if !root.is_dir() {
        return Err(
            ConnectorError::new(format!("root {} is not a directory", root.display())).at("root"),
        );
    }
    let root_url = Url::from_directory_path(&root).map_err(|()| {
        ConnectorError::new(format!("root {} is not an absolute path", root.display())).at("root")
    })?;
    Ok(LakeSource {
        name: String::new(),
        root_url,
        store: Arc::new(LocalFileSystem::new()),
        s3: None,
    })
}

fn s3_source(options: &Mapping, runtime: &Arc<RuntimeEnv>) -> Result<LakeSource, ConnectorError> {
    #[cfg(feature = "s3")]
    {
        use std::time::Duration;

        use object_store::aws::AmazonS3Builder;
        use object_store::{ClientOptions, RetryConfig};

        let config: S3SourceConfig = decode(Value::Mapping(options.clone()))?;
        // Start from the environment (AWS_*), so credentials may come from there.
        // Fail fast when the endpoint is down: a mesh must load (and `check` answer) in
        // seconds, not after object_store's default three minutes of retries.
        let client = ClientOptions::new()
            .with_allow_http(config.allow_http)
            .with_connect_timeout(Duration::from_secs(5));
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(20),
            ..RetryConfig::default()
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_client_options(client)
            .with_retry(retry);
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => {
                builder = builder
                    .with_access_key_id(id)
                    .with_secret_access_key(secret);
            }
            (None, None) => {}
            _ => {
                return Err(ConnectorError::new(
                    "`access_key_id` and `secret_access_key` go together: set both or neither",
                ));
            }
        }
        if let Some(token) = &config.session_token {
            builder = builder.with_token(token);
        }
        let store = builder
            .build()
            .map_err(|e| ConnectorError::new(format!("invalid S3 configuration: {e}")))?;
        let root_url = Url::parse(&format!("s3://{}/", config.bucket))
            .map_err(|e| ConnectorError::new(format!("invalid bucket name: {e}")).at("bucket"))?;
        let store: Arc<dyn ObjectStore> = Arc::new(store);
        let store_url = datafusion::execution::object_store::ObjectStoreUrl::parse(
            root_url.as_str(),
        )
        .map_err(|e| ConnectorError::new(format!("invalid bucket name: {e}")).at("bucket"))?;
        if runtime.object_store(store_url).is_ok() {
            return Err(ConnectorError::new(format!(
                "another source already uses bucket `{}`",
                config.bucket
            ))
            .at("bucket")
            .with_help("declare one source per bucket and point several ports at it"));
        }
        runtime.register_object_store(&root_url, Arc::clone(&store));
        Ok(LakeSource {
            name: String::new(),
            root_url,
            store,
            s3: Some(config),
        })
    }
    #[cfg(not(feature = "s3"))]
    {
        let _ = (options, runtime);
        Err(ConnectorError::new(
            "this meshql was built without S3 support (cargo feature `s3`)",
        ))
    }
}

#[derive(Debug)]
pub(crate) struct LakeSource {
    name: String,
    /// `file:///abs/root/` or `s3://bucket/`; always ends with `/`.
    pub root_url: Url,
    /// The store serving `root_url`, with `/` at the root of the file system or bucket.
    pub store: Arc<dyn ObjectStore>,
    pub s3: Option<S3SourceConfig>,
}

impl LakeSource {
    /// The URL of `path` inside the source, refusing paths that escape its root.
    fn url_of(&self, path: &str) -> Result<Url, ConnectorError> {
        let escapes = path.starts_with('/') || path.split('/').any(|segment| segment == "..");
        if escapes || path.is_empty() {
            return Err(ConnectorError::new(format!(
                "path `{path}` must be relative to the source root and stay inside it"
            ))
            .at("path"));
        }
        let url = self
            .root_url
            .join(path)
            .map_err(|e| ConnectorError::new(format!("invalid path `{path}`: {e}")).at("path"))?;
        // `Url::join` resolves `%2e%2e` like `..`: check the result, not just the text.
        if !url.as_str().starts_with(self.root_url.as_str()) {
            return Err(ConnectorError::new(format!(
                "path `{path}` must be relative to the source root and stay inside it"
            ))
            .at("path"));
        }
        Ok(url)
    }

    pub(crate) fn describe(&self) -> String {
        match &self.s3 {
            Some(s3) => match &s3.endpoint {
                Some(endpoint) => format!("{} at {endpoint}", self.root_url),
                None => self.root_url.to_string(),
            },
            None => self.root_url.to_string(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

#[async_trait]
impl Source for LakeSource {
    fn location(&self) -> String {
        self.describe()
    }

    fn describe_port(&self, options: &Mapping) -> Result<PortLocation, ConnectorError> {
        let config: LakePortConfig = decode(Value::Mapping(options.clone())).map_err(|e| {
            let mut err = ConnectorError::from(e);
            if err.message.contains("missing field `format`") {
                err = err.with_help("add `format: parquet` (or csv, json, delta)");
            } else if err.message.contains("missing field `path`") {
                err = err.with_help("add `path:`, a file, directory or glob inside the source");
            }
            err
        })?;
        let url = self.url_of(&config.path)?;
        match config.format {
            LakeFormat::Delta => {
                #[cfg(feature = "delta")]
                delta::DeltaOptions::parse(&config.options)?;
            }
            other => {
                files::FileOptions::parse(file_kind(other), &config.options)?;
            }
        }
        Ok(PortLocation {
            format: config.format.name().to_string(),
            location: url.to_string(),
        })
    }

    async fn open_port(
        &self,
        options: &Mapping,
        state: &SessionState,
    ) -> Result<Arc<dyn TableProvider>, ConnectorError> {
        let config: LakePortConfig = decode(Value::Mapping(options.clone()))?;
        let url = self.url_of(&config.path)?;
        match config.format {
            LakeFormat::Delta => {
                #[cfg(feature = "delta")]
                {
                    delta::open(self, &config.path, url, &config.options, state).await
                }
                #[cfg(not(feature = "delta"))]
                {
                    let _ = (url, state);
                    Err(ConnectorError::new(
                        "this meshql was built without Delta support (cargo feature `delta`)",
                    )
                    .at("format"))
                }
            }
            other => {
                let options = files::FileOptions::parse(file_kind(other), &config.options)?;
                files::open(self, &config.path, url, options, state).await
            }
        }
    }
}

/// The URL with a trailing `/`, as directory URLs must have.
pub(crate) fn as_dir(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    url
}

fn file_kind(format: LakeFormat) -> FileFormatKind {
    match format {
        LakeFormat::Csv => FileFormatKind::Csv,
        LakeFormat::Json => FileFormatKind::Json,
        _ => FileFormatKind::Parquet,
    }
}
