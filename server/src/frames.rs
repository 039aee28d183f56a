//! Results as Flight data without copying Arrow buffers twice.
//!
//! arrow-flight's `FlightDataEncoder` copies every batch's buffers into one contiguous
//! body (`FlightData::data_body`), and tonic's protobuf codec then copies that body
//! into the gRPC message: two passes over every byte of a result. Here a batch is
//! IPC-encoded by arrow's `StreamEncoder`, which hands out the batch's own buffers, and
//! [`FrameEncoder`] writes the `FlightData` protobuf around them straight into tonic's
//! buffer: one pass. The bytes on the wire are the same `FlightData` messages.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightData, SchemaAsIpc, Ticket};
use bytes::{BufMut, Bytes};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::writer::{IpcWriteOptions, StreamEncoder};
use datafusion::arrow::ipc::{MessageHeader, root_as_message};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// arrow-flight's default: batches are sliced so one message stays near this size
/// (gRPC clients refuse messages over 4 MiB by default).
const MAX_FLIGHT_DATA: usize = 2 * 1024 * 1024;

/// `FlightData` field numbers (arrow's Flight.proto).
const DATA_HEADER: u32 = 2;
const DATA_BODY: u32 = 1000;

/// One `FlightData` message of a DoGet response.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A message built by arrow-flight (metadata results, schemas, dictionaries).
    Message(FlightData),
    /// An IPC message whose body is still the batch's buffers, in order and padded.
    Ipc { header: Bytes, body: Vec<Buffer> },
}

impl Frame {
    fn body_len(body: &[Buffer]) -> usize {
        body.iter().map(Buffer::len).sum()
    }

    /// The length of the protobuf encoding.
    pub fn encoded_len(&self) -> usize {
        match self {
            Frame::Message(data) => data.encoded_len(),
            Frame::Ipc { header, body } => {
                bytes_field_len(DATA_HEADER, header.len())
                    + bytes_field_len(DATA_BODY, Self::body_len(body))
            }
        }
    }

    /// Writes the `FlightData` protobuf, as prost would, copying each body buffer once.
    pub fn write(&self, buf: &mut impl BufMut) -> Result<(), Status> {
        match self {
            Frame::Message(data) => data
                .encode(buf)
                .map_err(|e| Status::internal(format!("cannot encode Flight data: {e}"))),
            Frame::Ipc { header, body } => {
                // proto3 leaves empty fields out; the header never is empty.
                write_bytes_field(DATA_HEADER, header.len(), buf);
                buf.put_slice(header);
                let len = Self::body_len(body);
                if len > 0 {
                    write_bytes_field(DATA_BODY, len, buf);
                    for b in body {
                        buf.put_slice(b.as_slice());
                    }
                }
                Ok(())
            }
        }
    }

    /// As arrow-flight's type, concatenating the body (for callers outside tonic's codec).
    pub fn into_flight_data(self) -> FlightData {
        match self {
            Frame::Message(data) => data,
            Frame::Ipc { header, body } => {
                let mut data_body = Vec::with_capacity(Self::body_len(&body));
                for b in &body {
                    data_body.extend_from_slice(b.as_slice());
                }
                FlightData {
                    data_header: header,
                    data_body: data_body.into(),
                    ..Default::default()
                }
            }
        }
    }
}

fn bytes_field_len(tag: u32, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn write_bytes_field(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// A result's batches as Flight data: the schema first, then each batch, sliced so a
/// message stays near 2 MiB. Dictionary-encoded results go through arrow-flight's
/// encoder (which sends their values, as clients expect); the rest without the copy.
pub(crate) fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> FrameStream {
    let has_dictionaries = schema
        .flattened_fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Dictionary(..)));
    let encoder = (!has_dictionaries)
        .then(|| StreamEncoder::try_new(&schema))
        .transpose();
    match encoder {
        Ok(Some(encoder)) => {
            let first =
                Frame::Message(SchemaAsIpc::new(&schema, &IpcWriteOptions::default()).into());
            Box::pin(Frames {
                batches: Box::pin(batches),
                encoder,
                pending: VecDeque::from([first]),
                done: false,
            })
        }
        Ok(None) => Box::pin(
            FlightDataEncoderBuilder::new()
                .with_schema(schema)
                .build(batches)
                .map_ok(Frame::Message)
                .map_err(status),
        ),
        Err(e) => Box::pin(futures::stream::once(async move {
            Err(Status::internal(format!("cannot encode the result: {e}")))
        })),
    }
}

fn status(e: FlightError) -> Status {
    match e {
        FlightError::Tonic(status) => *status,
        other => Status::internal(other.to_string()),
    }
}

type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch, FlightError>> + Send>>;

struct Frames {
    batches: BatchStream,
    encoder: StreamEncoder,
    pending: VecDeque<Frame>,
    done: bool,
}

impl Frames {
    fn push(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        // As arrow-flight's encoder: an empty batch sends nothing.
        if batch.num_rows() == 0 {
            return Ok(());
        }
        for part in split(batch) {
            let mut messages = IpcMessages::new(self.encoder.encode(&part)?);
            while let Some((kind, header, body)) = messages.next()? {
                // The encoder opens its stream with the schema; ours went out first.
                if kind != MessageHeader::Schema {
                    self.pending.push_back(Frame::Ipc { header, body });
                }
            }
        }
        Ok(())
    }
}

impl Stream for Frames {
    type Item = Result<Frame, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(frame) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match ready!(this.batches.poll_next_unpin(cx)) {
                Some(Ok(batch)) => {
                    if let Err(e) = this.push(&batch) {
                        this.done = true;
                        return Poll::Ready(Some(Err(Status::internal(format!(
                            "cannot encode the result: {e}"
                        )))));
                    }
                }
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(status(e))));
                }
                None => this.done = true,
            }
        }
    }
}

/// Slices of `batch` of about [`MAX_FLIGHT_DATA`] each, as arrow-flight's encoder cuts
/// them, but measuring the slice (a slice's buffers are shared with the whole batch).
fn split(batch: &RecordBatch) -> Vec<RecordBatch> {
    let size: usize = batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_buffer_memory_size())
        })
        .sum();
    let parts = size.div_ceil(MAX_FLIGHT_DATA).max(1);
    if parts == 1 {
        return vec![batch.clone()];
    }
    let rows = batch.num_rows().div_ceil(parts).max(1);
    (0..batch.num_rows())
        .step_by(rows)
        .map(|offset| batch.slice(offset, rows.min(batch.num_rows() - offset)))
        .collect()
}

/// The messages of an IPC stream held as a list of buffers: each message's flatbuffer
/// header (copied, a few hundred bytes) and its body (slices of the buffers, no copy).
struct IpcMessages {
    buffers: VecDeque<Buffer>,
}

impl IpcMessages {
    fn new(buffers: Vec<Buffer>) -> Self {
        IpcMessages {
            buffers: buffers.into(),
        }
    }

    /// The next (kind, header, body), or None at the end or at the end-of-stream marker.
    fn next(&mut self) -> Result<Option<(MessageHeader, Bytes, Vec<Buffer>)>, ArrowError> {
        // A body may end in empty buffers (a last column of nulls has no values).
        while self.buffers.front().is_some_and(|b| b.is_empty()) {
            self.buffers.pop_front();
        }
        if self.buffers.is_empty() {
            return Ok(None);
        }
        let mut len = self.read_u32()?;
        if len == 0xFFFF_FFFF {
            len = self.read_u32()?;
        }
        if len == 0 {
            return Ok(None);
        }
        let header = Bytes::from(self.read(len as usize)?);
        let message = root_as_message(&header)
            .map_err(|e| ArrowError::IpcError(format!("cannot read an IPC message: {e}")))?;
        let (kind, body_len) = (message.header_type(), message.bodyLength());
        let body = self.take(usize::try_from(body_len).map_err(|_| {
            ArrowError::IpcError(format!("IPC body length {body_len} is negative"))
        })?)?;
        Ok(Some((kind, header, body)))
    }

    fn read_u32(&mut self) -> Result<u32, ArrowError> {
        let bytes = self.read(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// Copies out the next `n` bytes.
    fn read(&mut self, n: usize) -> Result<Vec<u8>, ArrowError> {
        let mut out = Vec::with_capacity(n);
        for b in self.take(n)? {
            out.extend_from_slice(b.as_slice());
        }
        Ok(out)
    }

    /// The next `n` bytes as slices of the buffers.
    fn take(&mut self, mut n: usize) -> Result<Vec<Buffer>, ArrowError> {
        let mut out = Vec::new();
        while n > 0 {
            let Some(front) = self.buffers.pop_front() else {
                return Err(ArrowError::IpcError(
                    "IPC stream ended inside a message".into(),
                ));
            };
            if front.len() <= n {
                n -= front.len();
                out.push(front);
            } else {
                out.push(front.slice_with_length(0, n));
                self.buffers.push_front(front.slice(n));
                n = 0;
            }
        }
        Ok(out)
    }
}

/// tonic's codec for DoGet: decodes the ticket with prost and encodes [`Frame`]s.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FrameCodec;

impl Codec for FrameCodec {
    type Encode = Frame;
    type Decode = Ticket;
    type Encoder = FrameEncoder;
    type Decoder = TicketDecoder;

    fn encoder(&mut self) -> FrameEncoder {
        FrameEncoder
    }

    fn decoder(&mut self) -> TicketDecoder {
        TicketDecoder
    }
}

#[derive(Debug)]
pub(crate) struct FrameEncoder;

impl Encoder for FrameEncoder {
    type Item = Frame;
    type Error = Status;

    fn encode(&mut self, frame: Frame, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // One allocation for the whole message, not one per growth step.
        dst.reserve(frame.encoded_len());
        frame.write(dst)
    }
}

#[derive(Debug)]
pub(crate) struct TicketDecoder;

impl Decoder for TicketDecoder {
    type Item = Ticket;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Ticket>, Status> {
        Ticket::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("cannot read the ticket: {e}")))
    }
}

/// A DoGet response body.
pub(crate) type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame, Status>> + Send + 'static>>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use arrow_flight::decode::FlightRecordBatchStream;
    use bytes::BytesMut;
    use datafusion::arrow::array::{
        Array, ArrayRef, DictionaryArray, Int64Array, StringArray, UInt8Array,
    };
    use datafusion::arrow::compute::concat_batches;
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    /// Frames to wire bytes and back through arrow-flight's decoder, as a client reads
    /// them: the batches, and the size of the largest message.
    async fn round_trip(schema: SchemaRef, input: Vec<RecordBatch>) -> (Vec<RecordBatch>, usize) {
        let frames: Vec<Frame> = encode(schema, futures::stream::iter(input.into_iter().map(Ok)))
            .try_collect()
            .await
            .unwrap();
        let mut largest = 0;
        let mut decoded = Vec::new();
        for frame in frames {
            let mut buf = BytesMut::new();
            frame.write(&mut buf).unwrap();
            assert_eq!(buf.len(), frame.encoded_len());
            largest = largest.max(buf.len());
            decoded.push(Ok(FlightData::decode(buf.freeze()).unwrap()));
        }
        let batches = FlightRecordBatchStream::new_from_flight_data(futures::stream::iter(decoded))
            .try_collect()
            .await
            .unwrap();
        (batches, largest)
    }

    fn batch(rows: usize) -> RecordBatch {
        let ids = Int64Array::from_iter_values(0..rows as i64);
        let names = StringArray::from_iter(
            (0..rows).map(|i| (i % 7 != 0).then(|| format!("name number {i}"))),
        );
        // Last, a column of nulls: its values buffer is empty, the end of the IPC body.
        let notes = StringArray::from(vec![None::<&str>; rows]);
        RecordBatch::try_from_iter([
            ("id", Arc::new(ids) as ArrayRef),
            ("name", Arc::new(names) as ArrayRef),
            ("note", Arc::new(notes) as ArrayRef),
        ])
        .unwrap()
    }

    #[tokio::test]
    async fn batches_arrive_as_sent_sliced_and_split() {
        // A slice off the start of a batch (offsets and validity not at zero), and a
        // batch of ~5 MB that must go out in messages near 2 MiB.
        let sliced = batch(10_000).slice(3, 5_000);
        let large = batch(200_000);
        let input = vec![sliced, large];
        let schema = input[0].schema();
        let (output, largest) = round_trip(Arc::clone(&schema), input.clone()).await;
        assert!(
            output.len() > 2,
            "the large batch is split: {} batches",
            output.len()
        );
        assert!(largest < 3 * MAX_FLIGHT_DATA, "a {largest}-byte message");
        assert_eq!(
            concat_batches(&schema, &output).unwrap(),
            concat_batches(&schema, &input).unwrap()
        );
    }

    #[tokio::test]
    async fn an_empty_result_still_has_its_schema() {
        let schema = batch(1).schema();
        let frames: Vec<Frame> = encode(Arc::clone(&schema), futures::stream::empty())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(frames.len(), 1);
        let data = frames.into_iter().next().unwrap().into_flight_data();
        let sent = Schema::try_from(&data).unwrap();
        assert_eq!(&sent, schema.as_ref());
    }

    #[tokio::test]
    async fn dictionaries_go_out_as_their_values() {
        let keys = UInt8Array::from(vec![0, 1, 0, 2]);
        let values = StringArray::from(vec!["a", "b", "c"]);
        let dict = DictionaryArray::new(keys, Arc::new(values));
        let schema = Arc::new(Schema::new(vec![Field::new(
            "d",
            dict.data_type().clone(),
            false,
        )]));
        let input = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(dict)]).unwrap();
        let (output, _) = round_trip(schema, vec![input]).await;
        let column = output[0].column(0);
        assert_eq!(column.data_type(), &DataType::Utf8);
        assert_eq!(
            column.as_ref(),
            &StringArray::from(vec!["a", "b", "a", "c"]) as &dyn Array
        );
    }

    #[tokio::test]
    async fn an_error_mid_stream_reaches_the_client() {
        let schema = batch(1).schema();
        let input = futures::stream::iter([
            Ok(batch(10)),
            Err(FlightError::Tonic(Box::new(Status::resource_exhausted(
                "out of memory",
            )))),
        ]);
        let results: Vec<Result<Frame, Status>> = encode(schema, input).collect().await;
        let error = results.last().unwrap().as_ref().unwrap_err();
        assert_eq!(error.code(), tonic::Code::ResourceExhausted);
        assert!(results[..results.len() - 1].iter().all(Result::is_ok));
    }
}
