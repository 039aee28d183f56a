//! The Flight SQL service: arrow-flight's `FlightSqlService` over a [`MeshEngine`].
//! Every RPC authenticates first; statements live in stateless tickets and handles
//! (see `statement.rs`); metadata comes from the engine's catalogs (`catalog.rs`).

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    CancelFlightInfoResult, CancelStatus, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use futures::{Stream, TryStreamExt};
use meshql_engine::MeshEngine;
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{Authenticator, Identity};
use super::catalog;
use super::frames::{Frame, FrameStream};
use super::sql_info::sql_info;
use super::statement::{self, Handle, client_schema, parameter_schema};

type DoGetStream =
    Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send + 'static>>;

pub struct MeshFlightSqlService {
    engine: Arc<MeshEngine>,
    auth: Arc<Authenticator>,
    sql_info: SqlInfoData,
    xdbc: XdbcTypeInfoData,
}

impl MeshFlightSqlService {
    pub fn new(engine: Arc<MeshEngine>, auth: Arc<Authenticator>) -> Self {
        MeshFlightSqlService {
            engine,
            auth,
            sql_info: sql_info(),
            xdbc: catalog::xdbc_type_info(),
        }
    }

    fn identity<T>(&self, request: &Request<T>) -> Result<Identity, Status> {
        self.auth
            .authenticate(request.metadata(), request.remote_addr().map(|a| a.ip()))
    }

    /// A FlightInfo whose one endpoint (empty location = this server) carries `ticket`.
    fn flight_info(
        schema: &Schema,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        Ok(FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("cannot encode the result schema: {e}")))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
            .with_descriptor(descriptor)
            .with_total_records(-1)
            .with_total_bytes(-1))
    }

    /// Metadata commands: authenticate, then a FlightInfo whose ticket is the command.
    fn command_info(
        &self,
        command: &impl ProstMessageExt,
        schema: &Schema,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.identity(&request)?;
        let info = Self::flight_info(
            schema,
            command.as_any().encode_to_vec(),
            request.into_inner(),
        )?;
        Ok(Response::new(info))
    }

    async fn statement_info(
        &self,
        identity: &Identity,
        handle: &Handle,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let planned = statement::plan(&self.engine, identity, handle).await?;
        let schema = client_schema(planned.df().schema().as_arrow());
        Ok(Response::new(Self::flight_info(
            &schema, ticket, descriptor,
        )?))
    }

    async fn run(&self, identity: &Identity, handle: &Handle) -> Result<FrameStream, Status> {
        let planned = statement::plan(&self.engine, identity, handle).await?;
        statement::execute(planned, identity, &handle.sql).await
    }

    /// DoGet as `router.rs` serves it: statement results as [`Frame`]s that keep their
    /// Arrow buffers until tonic writes them; everything else as arrow-flight builds it.
    pub async fn do_get_frames(&self, request: Request<Ticket>) -> Result<FrameStream, Status> {
        // A ticket that is not a statement (or not a ticket) gets arrow-flight's answer.
        if let Ok(any) = Any::decode(&*request.get_ref().ticket) {
            let handle = if let Ok(Some(t)) = any.unpack::<TicketStatementQuery>() {
                Some(t.statement_handle)
            } else if let Ok(Some(c)) = any.unpack::<CommandPreparedStatementQuery>() {
                Some(c.prepared_statement_handle)
            } else {
                None
            };
            if let Some(handle) = handle {
                let identity = self.identity(&request)?;
                return self.run(&identity, &Handle::decode(&handle)?).await;
            }
        }
        let stream = FlightService::do_get(self, request)
            .await
            .map_err(super::status::undecodable_request)?
            .into_inner();
        Ok(Box::pin(stream.map_ok(Frame::Message)))
    }

    /// The trait's DoGet (`FlightServiceServer` without `router.rs`): the same frames,
    /// each body concatenated.
    async fn run_flight_data(
        &self,
        identity: &Identity,
        handle: &Handle,
    ) -> Result<Response<DoGetStream>, Status> {
        let frames = self.run(identity, handle).await?;
        Ok(Response::new(Box::pin(
            frames.map_ok(Frame::into_flight_data),
        )))
    }
}

/// One metadata batch as a Flight stream.
fn batch_stream(
    batch: Result<RecordBatch, arrow_flight::error::FlightError>,
) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(|e| Status::internal(format!("cannot build metadata: {e}")))?;
    let schema = batch.schema();
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async { Ok(batch) }))
        .map_err(Status::from);
    Ok(Response::new(Box::pin(stream)))
}

/// A listing of names, recorded in the audit log before it is sent.
async fn audited(
    session: &meshql_engine::MeshSession,
    what: &str,
    batch: Result<RecordBatch, arrow_flight::error::FlightError>,
) -> Result<Response<DoGetStream>, Status> {
    let rows = batch.as_ref().map_or(0, |b| b.num_rows() as u64);
    session
        .audit_listing(what, rows)
        .await
        .map_err(super::status::status)?;
    batch_stream(batch)
}

fn read_only() -> Status {
    Status::invalid_argument(
        "meshql is read-only: output ports are changed by their owning domains, not through queries",
    )
}

#[tonic::async_trait]
impl FlightSqlService for MeshFlightSqlService {
    type FlightService = MeshFlightSqlService;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let peer = request.remote_addr().map(|a| a.ip());
        let (identity, token) = self.auth.sign_in(request.metadata(), peer)?;
        tracing::info!(user = %identity.user, "signed in");
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into_bytes().into(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        let header = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Status::internal("cannot encode the token"))?;
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    // Statements.

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let identity = self.identity(&request)?;
        let handle = Handle::new(&query.query);
        let ticket = TicketStatementQuery {
            statement_handle: handle.encode().into(),
        }
        .as_any()
        .encode_to_vec();
        self.statement_info(&identity, &handle, ticket, request.into_inner())
            .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let identity = self.identity(&request)?;
        let handle = Handle::decode(&ticket.statement_handle)?;
        self.run_flight_data(&identity, &handle).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let identity = self.identity(&request)?;
        let handle = Handle::new(&query.query);
        let planned = statement::plan(&self.engine, &identity, &handle).await?;
        let df = planned.df();
        let options = IpcWriteOptions::default();
        let encode = |schema: &Schema| -> Result<Vec<u8>, Status> {
            let message: IpcMessage = SchemaAsIpc::new(schema, &options)
                .try_into()
                .map_err(|e| Status::internal(format!("cannot encode schema: {e}")))?;
            Ok(message.0.to_vec())
        };
        let dataset = client_schema(df.schema().as_arrow());
        let result = ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.encode().into(),
            dataset_schema: encode(&dataset)?.into(),
            parameter_schema: encode(&parameter_schema(df)?)?.into(),
        };
        // The schema names what the statement reads, whether or not it ever runs.
        planned
            .audit_without_running("prepared: planned and its schema sent, not run")
            .await
            .map_err(super::status::status)?;
        Ok(result)
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        // Handles are stateless: nothing to free.
        self.identity(&request)?;
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.identity(&request)?;
        let handle = Handle::decode(&query.prepared_statement_handle)?;
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
                request
                    .into_inner()
                    .map_err(arrow_flight::error::FlightError::from),
            )
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("cannot read the parameters: {e}")))?;
        let handle = match batches.iter().find(|b| b.num_rows() > 0) {
            Some(batch) => handle.with_params(batch)?,
            None => handle,
        };
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.encode().into()),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let identity = self.identity(&request)?;
        let handle = Handle::decode(&cmd.prepared_statement_handle)?;
        let ticket = cmd.as_any().encode_to_vec();
        self.statement_info(&identity, &handle, ticket, request.into_inner())
            .await
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let identity = self.identity(&request)?;
        let handle = Handle::decode(&cmd.prepared_statement_handle)?;
        self.run_flight_data(&identity, &handle).await
    }

    async fn do_put_statement_update(
        &self,
        _cmd: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.identity(&request)?;
        Err(read_only())
    }

    async fn do_put_prepared_statement_update(
        &self,
        _cmd: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.identity(&request)?;
        Err(read_only())
    }

    // Metadata: a FlightInfo whose ticket is the command itself, then DoGet builds it.

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.command_info(&query, &schema, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = self.engine.session(&self.identity(&request)?);
        let what = format!("(GetCatalogs {query:?})");
        audited(&session, &what, catalog::catalogs(&session, query)).await
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.command_info(&query, &schema, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = self.engine.session(&self.identity(&request)?);
        let what = format!("(GetDbSchemas {query:?})");
        audited(&session, &what, catalog::schemas(&session, query)).await
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.command_info(&query, &schema, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = self.engine.session(&self.identity(&request)?);
        let what = format!("(GetTables {query:?})");
        let tables = catalog::tables(&self.engine, &session, query).await;
        audited(&session, &what, tables).await
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.command_info(&query, &schema, request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.identity(&request)?;
        let mut builder = query.into_builder();
        for table_type in catalog::TABLE_TYPES {
            builder.append(table_type);
        }
        batch_stream(builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        self.command_info(&query, &schema, request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.identity(&request)?;
        batch_stream(query.into_builder(&self.sql_info).build())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(&self.xdbc).schema();
        self.command_info(&query, &schema, request)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.identity(&request)?;
        batch_stream(query.into_builder(&self.xdbc).build())
    }

    // Keys: output ports declare none, so every key command answers an empty result with
    // the spec's schema (JDBC's getPrimaryKeys and friends call these).

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(&query, &catalog::primary_keys_schema(), request)
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.identity(&request)?;
        batch_stream(Ok(RecordBatch::new_empty(Arc::new(
            catalog::primary_keys_schema(),
        ))))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(&query, &catalog::foreign_keys_schema(), request)
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.identity(&request)?;
        batch_stream(Ok(RecordBatch::new_empty(Arc::new(
            catalog::foreign_keys_schema(),
        ))))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(&query, &catalog::foreign_keys_schema(), request)
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.identity(&request)?;
        batch_stream(Ok(RecordBatch::new_empty(Arc::new(
            catalog::foreign_keys_schema(),
        ))))
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(&query, &catalog::foreign_keys_schema(), request)
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.identity(&request)?;
        batch_stream(Ok(RecordBatch::new_empty(Arc::new(
            catalog::foreign_keys_schema(),
        ))))
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<DoGetStream>, Status> {
        self.identity(&request)?;
        Err(Status::invalid_argument(format!(
            "unknown ticket type {}",
            message.type_url
        )))
    }

    /// CancelFlightInfo: no query runs until DoGet (and a DoGet is cancelled by dropping
    /// its stream), so there is nothing to stop; answer CANCELLED so clients move on.
    async fn do_action_fallback(
        &self,
        request: Request<arrow_flight::Action>,
    ) -> Result<
        Response<<Self as arrow_flight::flight_service_server::FlightService>::DoActionStream>,
        Status,
    > {
        self.identity(&request)?;
        let action = request.into_inner();
        if action.r#type == "CancelFlightInfo" {
            let result = CancelFlightInfoResult::new(CancelStatus::Cancelled);
            let body = arrow_flight::Result::new(result.encode_to_vec());
            return Ok(Response::new(Box::pin(futures::stream::iter([Ok(body)]))));
        }
        Err(Status::invalid_argument(format!(
            "unknown action `{}`",
            action.r#type
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
