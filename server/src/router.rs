//! The Flight service as tonic serves it: arrow-flight's generated server for every
//! method but DoGet, which goes through [`FrameCodec`] so result buffers are copied
//! once on their way to the socket (see `frames.rs`).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow_flight::Ticket;
use arrow_flight::flight_service_server::FlightServiceServer;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};

use super::MAX_MESSAGE;
use super::frames::{Frame, FrameCodec, FrameStream};
use super::service::MeshFlightSqlService;
use super::status::undecodable_request;

const DO_GET: &str = "/arrow.flight.protocol.FlightService/DoGet";

#[derive(Clone)]
pub struct FlightRouter {
    service: Arc<MeshFlightSqlService>,
    generated: FlightServiceServer<MeshFlightSqlService>,
}

impl FlightRouter {
    pub fn new(service: MeshFlightSqlService) -> Self {
        let service = Arc::new(service);
        let generated = FlightServiceServer::from_arc(Arc::clone(&service))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        FlightRouter { service, generated }
    }
}

impl NamedService for FlightRouter {
    const NAME: &'static str = <FlightServiceServer<MeshFlightSqlService> as NamedService>::NAME;
}

impl<B> Service<http::Request<B>> for FlightRouter
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != DO_GET {
            let answer = self.generated.call(req);
            return Box::pin(async move {
                let mut response = answer.await?;
                // An error before any message is a trailers-only response: its status
                // is in the headers.
                if let Some(status) = Status::from_header_map(response.headers()) {
                    let fixed = undecodable_request(status.clone());
                    if fixed.code() != status.code() {
                        let _ = fixed.add_header(response.headers_mut());
                    }
                }
                Ok(response)
            });
        }
        let method = DoGet(Arc::clone(&self.service));
        Box::pin(async move {
            // As the generated server sets it up, with the codec swapped.
            let mut grpc = Grpc::new(FrameCodec)
                .apply_max_message_size_config(Some(MAX_MESSAGE), Some(MAX_MESSAGE));
            Ok(grpc.server_streaming(method, req).await)
        })
    }
}

struct DoGet(Arc<MeshFlightSqlService>);

impl ServerStreamingService<Ticket> for DoGet {
    type Response = Frame;
    type ResponseStream = FrameStream;
    type Future = BoxFuture<Response<FrameStream>, Status>;

    fn call(&mut self, request: Request<Ticket>) -> Self::Future {
        let service = Arc::clone(&self.0);
        Box::pin(async move { service.do_get_frames(request).await.map(Response::new) })
    }
}
