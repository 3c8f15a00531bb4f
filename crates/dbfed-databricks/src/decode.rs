//! Result chunk decoding: LZ4 frames, Arrow IPC streams, casting to the promised schema.

use std::io::Read;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, new_null_array};
use arrow::buffer::Buffer;
use arrow::compute::{CastOptions, can_cast_types, cast_with_options};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::ipc::reader::StreamDecoder;
use arrow::util::display::FormatOptions;

use crate::error::{Error, Result};

/// The default bound on one result chunk, as downloaded and once decompressed (1 GiB); see
/// [`crate::ClientBuilder::max_chunk_bytes`].
pub const DEFAULT_MAX_CHUNK_BYTES: u64 = 1 << 30;

/// Decompresses LZ4-frame data made of one or more concatenated frames, producing at most
/// [`DEFAULT_MAX_CHUNK_BYTES`].
pub fn decompress_lz4_frames(input: &[u8], what: &str) -> Result<Vec<u8>> {
    decompress_lz4_frames_limited(input, DEFAULT_MAX_CHUNK_BYTES, what)
}

/// Decompresses LZ4-frame data made of one or more concatenated frames, failing with
/// [`Error::Decode`] as soon as the output would exceed `max_output` bytes.
///
/// The frames' declared content sizes are never trusted for allocation: memory grows with
/// what really decompresses, up to `max_output` (LZ4 expands up to ~255×, so a small hostile
/// body could otherwise claim gigabytes).
pub fn decompress_lz4_frames_limited(input: &[u8], max_output: u64, what: &str) -> Result<Vec<u8>> {
    let cap = usize::try_from(max_output).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(input.len().saturating_mul(3).min(cap));
    let mut rest = input;
    // Each pass decodes at least one frame header from `rest` or fails, so this terminates.
    while !rest.is_empty() {
        let before = rest.len();
        let room = max_output.saturating_sub(out.len() as u64);
        let mut decoder = lz4_flex::frame::FrameDecoder::new(&mut rest);
        // One byte more than the room left tells "exactly at the limit" from "over it".
        (&mut decoder)
            .take(room.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| Error::decode(what, format!("invalid LZ4 frame data: {e}")))?;
        drop(decoder);
        if out.len() as u64 > max_output {
            return Err(Error::decode(
                what,
                format!("it decompresses to more than the limit of {max_output} bytes"),
            ));
        }
        if rest.len() == before {
            return Err(Error::decode(what, "LZ4 decoder made no progress"));
        }
    }
    Ok(out)
}

/// Decodes a result chunk: an Arrow IPC stream, LZ4-frame compressed (one or more concatenated
/// frames) when `lz4`, casting each batch to `target`; also returns the stream's uncompressed
/// size. What the client uses for every Arrow chunk.
///
/// The stream is decompressed message by message straight into one allocation per message
/// body, which its batch then slices without a copy: no whole-chunk buffer, and each batch
/// owns just its own memory (memory accounting such as `RecordBatch::get_array_memory_size`,
/// which DataFusion and Arrow Flight use, sees the batch, not the chunk). Output beyond
/// `max_output` bytes is an [`Error::Decode`]; declared lengths are never trusted for
/// allocation beyond what really decompresses (at most 8 MiB ahead of it).
pub fn decode_chunk(
    bytes: &[u8],
    lz4: bool,
    max_output: u64,
    target: &SchemaRef,
    what: &str,
) -> Result<(Vec<RecordBatch>, u64)> {
    if lz4 {
        decode_ipc_messages(Lz4Frames::new(bytes, what), max_output, target, what)
    } else {
        decode_ipc_messages(bytes, max_output, target, what)
    }
}

/// A reader over concatenated LZ4 frames.
struct Lz4Frames<'a> {
    rest: &'a [u8],
    frame: Option<lz4_flex::frame::FrameDecoder<&'a [u8]>>,
    what: &'a str,
}

impl<'a> Lz4Frames<'a> {
    fn new(input: &'a [u8], what: &'a str) -> Self {
        Self {
            rest: input,
            frame: None,
            what,
        }
    }
}

impl Read for Lz4Frames<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let frame = match &mut self.frame {
                Some(frame) => frame,
                None if self.rest.is_empty() => return Ok(0),
                None => self
                    .frame
                    .insert(lz4_flex::frame::FrameDecoder::new(self.rest)),
            };
            let n = frame.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            // The frame ended: the next one starts where it stopped reading.
            let Some(frame) = self.frame.take() else {
                return Ok(0);
            };
            let rest = frame.into_inner();
            if rest.len() == self.rest.len() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("LZ4 decoder made no progress in {}", self.what),
                ));
            }
            self.rest = rest;
        }
    }
}

/// Reads exactly `len` bytes of `input` into a new buffer that grows with what really arrives
/// (at most 8 MiB is reserved ahead of it); fewer bytes is an error naming `part`.
fn read_part(input: &mut impl Read, len: usize, part: &str, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len.min(8 << 20));
    input
        .take(len as u64)
        .read_to_end(&mut out)
        .map_err(|e| Error::decode(what, format!("invalid LZ4 frame data: {e}")))?;
    if out.len() < len {
        return Err(Error::decode(
            what,
            format!(
                "invalid Arrow IPC stream: {part} declares {len} bytes but only {} remain",
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// Decodes the Arrow IPC stream `input` yields, one message at a time (see [`decode_chunk`]).
fn decode_ipc_messages(
    mut input: impl Read,
    max_output: u64,
    target: &SchemaRef,
    what: &str,
) -> Result<(Vec<RecordBatch>, u64)> {
    const CONTINUATION: [u8; 4] = [0xFF; 4];
    /// What ends a stream: a continuation marker and a zero length.
    const END_OF_STREAM: [u8; 8] = [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0];
    let over = || {
        Error::decode(
            what,
            format!("it decompresses to more than the limit of {max_output} bytes"),
        )
    };
    let mut decoder = StreamDecoder::new();
    let mut batches = Vec::new();
    let mut total = 0u64;
    loop {
        // `[0xFFFFFFFF] len:i32 metadata body`; a clean end of input ends the stream.
        let mut prefix = [0u8; 4];
        let got = read_up_to(&mut input, &mut prefix, what)?;
        if got == 0 {
            // No end-of-stream marker: end the decoder's stream as if there were one.
            for batch in feed(&mut decoder, Buffer::from(END_OF_STREAM.as_slice()), what)? {
                batches.push(cast_batch(&batch, target, what)?);
            }
            break;
        }
        if got < 4 {
            return Err(Error::decode(
                what,
                "invalid Arrow IPC stream: a message length is cut short",
            ));
        }
        let mut header = prefix.to_vec();
        if prefix == CONTINUATION {
            let got = read_up_to(&mut input, &mut prefix, what)?;
            if got < 4 {
                return Err(Error::decode(
                    what,
                    "invalid Arrow IPC stream: a message length is cut short",
                ));
            }
            header.extend_from_slice(&prefix);
        }
        let meta_len = i32::from_le_bytes(prefix);
        if meta_len == 0 {
            total += header.len() as u64;
            for batch in feed(&mut decoder, Buffer::from_vec(header), what)? {
                batches.push(cast_batch(&batch, target, what)?);
            }
            break;
        }
        let meta_len = usize::try_from(meta_len).map_err(|_| {
            Error::decode(
                what,
                format!("invalid Arrow IPC stream: negative metadata length at byte {total}"),
            )
        })?;
        if total + (header.len() + meta_len) as u64 > max_output {
            return Err(over());
        }
        let metadata = read_part(&mut input, meta_len, "the metadata of a message", what)?;
        let message = arrow::ipc::root_as_message(&metadata).map_err(|e| {
            Error::decode(
                what,
                format!("invalid Arrow IPC stream: unreadable message header at byte {total}: {e}"),
            )
        })?;
        let body_len = usize::try_from(message.bodyLength()).map_err(|_| {
            Error::decode(
                what,
                format!("invalid Arrow IPC stream: negative body length at byte {total}"),
            )
        })?;
        check_message_buffers(&message, body_len, total, what)?;
        total += (header.len() + meta_len) as u64;
        if total + body_len as u64 > max_output {
            return Err(over());
        }
        let body = read_part(&mut input, body_len, "the body of a message", what)?;
        total += body_len as u64;
        header.extend_from_slice(&metadata);
        for batch in feed(&mut decoder, Buffer::from_vec(header), what)? {
            batches.push(cast_batch(&batch, target, what)?);
        }
        for batch in feed(&mut decoder, Buffer::from_vec(body), what)? {
            batches.push(cast_batch(&batch, target, what)?);
        }
    }
    finish(&mut decoder, what)?;
    Ok((batches, total))
}

/// The end of the stream: an error if a message is cut short or there was no schema.
fn finish(decoder: &mut StreamDecoder, what: &str) -> Result<()> {
    decoder
        .finish()
        .map_err(|e| Error::decode(what, format!("invalid Arrow IPC stream: {e}")))?;
    if decoder.schema().is_none() {
        return Err(Error::decode(
            what,
            "invalid Arrow IPC stream: it has no schema message",
        ));
    }
    Ok(())
}

/// Gives `bytes` to `decoder` and returns the batches it completes. The decoder slices each
/// batch's arrays out of the buffer holding its message body, without a copy.
fn feed(decoder: &mut StreamDecoder, mut buffer: Buffer, what: &str) -> Result<Vec<RecordBatch>> {
    // Arrow's decoder trusts some offsets of a message it has parsed (the buffers were checked
    // before); should another malformed input reach a panic inside it, that is a decode error
    // of this chunk, not the end of the consumer's thread.
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut batches = Vec::new();
        while !buffer.is_empty() {
            if let Some(batch) = decoder.decode(&mut buffer)? {
                batches.push(batch);
            }
        }
        Ok(batches)
    }))
    .unwrap_or_else(|panic| {
        let detail = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        Err(arrow::error::ArrowError::IpcError(format!(
            "the reader failed: {detail}"
        )))
    })
    .map_err(|e| Error::decode(what, format!("invalid Arrow IPC stream: {e}")))
}

/// Reads up to `buf.len()` bytes, fewer only at the end of `input`.
fn read_up_to(input: &mut impl Read, buf: &mut [u8], what: &str) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::decode(what, format!("invalid LZ4 frame data: {e}"))),
        }
    }
    Ok(got)
}

/// Decodes one complete Arrow IPC stream and casts each batch to `target` (as
/// [`decode_chunk`] does, uncompressed and without an output limit).
pub fn decode_ipc_stream(bytes: &[u8], target: &SchemaRef, what: &str) -> Result<Vec<RecordBatch>> {
    decode_ipc_messages(bytes, u64::MAX, target, what).map(|(batches, _)| batches)
}

/// Decodes one complete Arrow IPC stream held in `bytes` and casts each batch to `target`.
///
/// The batches' arrays are slices of `bytes` (no copy, except for a buffer that is not aligned
/// for its type), so the whole buffer lives as long as any of them — and memory accounting by
/// buffer capacity (`RecordBatch::get_array_memory_size`) counts all of `bytes` for every
/// array. The client decodes with [`decode_chunk`] instead, one buffer per message. The stream's framing is
/// checked first: a message whose declared metadata or body length runs past the end of
/// `bytes` is an [`Error::Decode`], so a hostile length never becomes an allocation. Bytes after
/// the end-of-stream marker are ignored; a stream cut inside a message is an error.
pub fn decode_ipc_buffer(
    bytes: Buffer,
    target: &SchemaRef,
    what: &str,
) -> Result<Vec<RecordBatch>> {
    let end = check_ipc_framing(&bytes, what)?;
    let mut decoder = StreamDecoder::new();
    let batches = feed(&mut decoder, bytes.slice_with_length(0, end), what)?;
    finish(&mut decoder, what)?;
    batches
        .iter()
        .map(|batch| cast_batch(batch, target, what))
        .collect()
}

/// Checks that every buffer a record or dictionary batch message declares lies inside its
/// body of `body_len` bytes (Arrow slices them out of the body without checking), `at` being
/// the message's offset in the stream.
fn check_message_buffers(
    message: &arrow::ipc::Message<'_>,
    body_len: usize,
    at: u64,
    what: &str,
) -> Result<()> {
    let buffers = message
        .header_as_record_batch()
        .and_then(|b| b.buffers())
        .or_else(|| {
            message
                .header_as_dictionary_batch()
                .and_then(|d| d.data())
                .and_then(|b| b.buffers())
        });
    for buffer in buffers.iter().flat_map(|b| b.iter()) {
        let end = u64::try_from(buffer.offset())
            .ok()
            .zip(u64::try_from(buffer.length()).ok())
            .and_then(|(offset, length)| offset.checked_add(length));
        if end.is_none_or(|end| end > body_len as u64) {
            return Err(Error::decode(
                what,
                format!(
                    "invalid Arrow IPC stream: a buffer ({} bytes at {}) of the message at byte \
                     {at} lies outside its body of {body_len} bytes",
                    buffer.length(),
                    buffer.offset()
                ),
            ));
        }
    }
    Ok(())
}

/// Walks the messages of an Arrow IPC stream (`[0xFFFFFFFF] len:i32 metadata body`) and checks
/// that every declared length fits in `bytes`. Arrow's reader allocates a message's metadata
/// and body from these declared lengths before reading them. Returns where the stream ends:
/// just after its end-of-stream marker, else the end of `bytes`.
fn check_ipc_framing(bytes: &[u8], what: &str) -> Result<usize> {
    const CONTINUATION: [u8; 4] = [0xFF; 4];
    let bad = |message: String| Error::decode(what, format!("invalid Arrow IPC stream: {message}"));
    let read_i32 = |at: usize| -> Option<i32> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        Some(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut pos = 0usize;
    // Every message consumes at least 4 bytes, so this loop ends.
    while pos < bytes.len() {
        let mut at = pos;
        if bytes.get(at..at + 4) == Some(&CONTINUATION[..]) {
            at += 4;
        }
        let Some(meta_len) = read_i32(at) else {
            // A cut length prefix: Arrow's decoder reports it.
            return Ok(bytes.len());
        };
        at += 4;
        if meta_len == 0 {
            return Ok(at);
        }
        if meta_len < 0 {
            return Err(bad(format!(
                "a message declares a negative metadata length at offset {pos}"
            )));
        }
        let meta_len = meta_len as usize;
        let meta_end = at
            .checked_add(meta_len)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| {
                bad(format!(
                    "a message declares {meta_len} bytes of metadata at offset {pos} but only {} remain",
                    bytes.len() - at.min(bytes.len())
                ))
            })?;
        let message = arrow::ipc::root_as_message(&bytes[at..meta_end])
            .map_err(|e| bad(format!("unreadable message header at offset {pos}: {e}")))?;
        let body_len = usize::try_from(message.bodyLength())
            .map_err(|_| bad(format!("negative body length at offset {pos}")))?;
        check_message_buffers(&message, body_len, pos as u64, what)?;
        pos = meta_end
            .checked_add(body_len)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| {
                bad(format!(
                    "a message declares a body of {body_len} bytes at offset {pos} but only {} remain",
                    bytes.len() - meta_end
                ))
            })?;
    }
    Ok(bytes.len())
}

/// Casts `batch` column by column (by position) to `target`.
///
/// Fails with a [`Error::Decode`] naming the column when the column count differs or a value
/// cannot be represented in the promised type (casts are not lossy-silent: `safe = false`).
pub fn cast_batch(batch: &RecordBatch, target: &SchemaRef, what: &str) -> Result<RecordBatch> {
    if batch.schema().fields() == target.fields() {
        return Ok(batch
            .clone()
            .with_schema(target.clone())
            .unwrap_or_else(|_| batch.clone()));
    }
    if batch.num_columns() != target.fields().len() {
        return Err(Error::decode(
            what,
            format!(
                "it has {} columns but the manifest declares {}",
                batch.num_columns(),
                target.fields().len()
            ),
        ));
    }
    let options = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    let columns = batch
        .columns()
        .iter()
        .zip(target.fields())
        .map(|(array, field)| -> Result<ArrayRef> {
            let from = array.data_type();
            let to = field.data_type();
            if from == to {
                return Ok(array.clone());
            }
            if *to == DataType::Null {
                if array.logical_null_count() == array.len() {
                    return Ok(new_null_array(to, array.len()));
                }
                return Err(Error::decode(
                    what,
                    format!(
                        "column {:?} is declared VOID but holds values",
                        field.name()
                    ),
                ));
            }
            if !can_cast_types(from, to) {
                return Err(Error::decode(
                    what,
                    format!(
                        "column {:?} arrived as {from} and cannot be converted to {to}",
                        field.name()
                    ),
                ));
            }
            cast_with_options(array, to, &options).map_err(|e| {
                Error::decode(
                    what,
                    format!("column {:?}: cannot cast {from} to {to}: {e}", field.name()),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new_with_options(
        Arc::clone(target),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .map_err(|e| Error::decode(what, e))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use arrow::array::{Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use arrow::ipc::writer::StreamWriter;

    use super::*;

    fn ipc(batch: &RecordBatch) -> Vec<u8> {
        let mut buf = Vec::new();
        {
            let mut w = StreamWriter::try_new(&mut buf, &batch.schema()).expect("writer");
            w.write(batch).expect("write");
            w.finish().expect("finish");
        }
        buf
    }

    fn lz4(data: &[u8]) -> Vec<u8> {
        let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
        enc.write_all(data).expect("compress");
        enc.finish().expect("finish")
    }

    fn sample() -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int32Array::from(vec![1, 2, 3])) as ArrayRef),
            (
                "s",
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])) as ArrayRef,
            ),
        ])
        .expect("batch")
    }

    #[test]
    fn concatenated_lz4_frames_decode_completely() {
        let a = b"hello, ".repeat(100);
        let b = b"world".repeat(1000);
        let mut both = lz4(&a);
        both.extend(lz4(&b));
        let out = decompress_lz4_frames(&both, "test").expect("two frames");
        assert_eq!(out.len(), a.len() + b.len());
        assert_eq!(&out[..a.len()], &a[..]);
        assert_eq!(&out[a.len()..], &b[..]);
    }

    #[test]
    fn ipc_split_over_frames_roundtrips() {
        let bytes = ipc(&sample());
        let (x, y) = bytes.split_at(bytes.len() / 3);
        let mut framed = lz4(x);
        framed.extend(lz4(y));
        let raw = decompress_lz4_frames(&framed, "chunk").expect("lz4");
        let batches = decode_ipc_stream(&raw, &sample().schema(), "chunk").expect("ipc");
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0], sample());
    }

    fn ipc_of(batches: &[RecordBatch]) -> Vec<u8> {
        let mut buf = Vec::new();
        {
            let mut w = StreamWriter::try_new(&mut buf, &batches[0].schema()).expect("writer");
            for b in batches {
                w.write(b).expect("write");
            }
            w.finish().expect("finish");
        }
        buf
    }

    fn numbered(batch: usize, rows: i64) -> RecordBatch {
        let start = batch as i64 * rows;
        RecordBatch::try_from_iter(vec![(
            "n",
            Arc::new(Int64Array::from_iter_values(start..start + rows)) as ArrayRef,
        )])
        .expect("batch")
    }

    #[test]
    fn chunks_decode_message_by_message_into_batches_of_their_own() {
        let batches: Vec<RecordBatch> = (0..10).map(|i| numbered(i, 1000)).collect();
        let bytes = ipc_of(&batches);
        // Split over three LZ4 frames at arbitrary points (inside messages).
        let (a, rest) = bytes.split_at(bytes.len() / 3);
        let (b, c) = rest.split_at(rest.len() / 2);
        let mut framed = lz4(a);
        framed.extend(lz4(b));
        framed.extend(lz4(c));
        let schema = batches[0].schema();
        for (input, lz4) in [(&framed, true), (&bytes, false)] {
            let (decoded, size) =
                decode_chunk(input, lz4, u64::MAX, &schema, "chunk 0").expect("decodes");
            assert_eq!(decoded, batches);
            assert_eq!(size, bytes.len() as u64);
            for batch in &decoded {
                // Each batch holds its own message body, not the whole chunk.
                assert!(
                    batch.get_array_memory_size() < bytes.len() / 4,
                    "{} of {}",
                    batch.get_array_memory_size(),
                    bytes.len()
                );
            }
        }
    }

    #[test]
    fn chunk_output_past_the_limit_and_cut_streams_are_errors() {
        let batches: Vec<RecordBatch> = (0..4).map(|i| numbered(i, 1000)).collect();
        let bytes = ipc_of(&batches);
        let schema = batches[0].schema();
        let framed = lz4(&bytes);
        let err = decode_chunk(&framed, true, bytes.len() as u64 / 2, &schema, "chunk 3")
            .expect_err("over the limit");
        assert!(err.to_string().contains("limit"), "{err}");
        assert!(decode_chunk(&framed, true, bytes.len() as u64, &schema, "c").is_ok());
        let cut = lz4(&bytes[..bytes.len() - 100]);
        let err = decode_chunk(&cut, true, u64::MAX, &schema, "chunk 4").expect_err("cut");
        assert!(err.to_string().contains("chunk 4"), "{err}");
        // Without its end-of-stream marker (8 bytes), a stream still decodes completely.
        let unterminated = &bytes[..bytes.len() - 8];
        let (decoded, _) =
            decode_chunk(unterminated, false, u64::MAX, &schema, "c").expect("decodes");
        assert_eq!(decoded, batches);
        // A schema and nothing else: no batches.
        let empty = ipc_of(&[numbered(0, 0)]);
        let (decoded, _) = decode_chunk(&empty, false, u64::MAX, &schema, "c").expect("decodes");
        assert_eq!(decoded.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    }

    #[test]
    fn owned_buffers_decode_in_place() {
        let bytes = Buffer::from_vec(ipc(&sample()));
        let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
        let batches = decode_ipc_buffer(bytes, &sample().schema(), "chunk").expect("ipc");
        assert_eq!(batches, vec![sample()]);
        let ids = batches[0].column(0).to_data();
        let values = ids.buffers()[0].as_ptr() as usize;
        assert!(
            range.contains(&values),
            "the values were copied out of the chunk's buffer"
        );
    }

    #[test]
    fn bytes_after_the_end_of_stream_are_ignored_and_a_cut_message_is_not() {
        let mut bytes = ipc(&sample());
        bytes.extend_from_slice(b"trailing garbage");
        let batches = decode_ipc_stream(&bytes, &sample().schema(), "chunk").expect("ipc");
        assert_eq!(batches, vec![sample()]);

        // No end-of-stream marker and the last message cut short.
        let whole = ipc(&sample());
        let cut = &whole[..whole.len() - 12];
        let err = decode_ipc_stream(cut, &sample().schema(), "chunk 2").expect_err("cut");
        assert!(err.to_string().contains("chunk 2"), "{err}");
    }

    #[test]
    fn truncated_or_garbage_lz4_is_an_error() {
        let framed = lz4(&b"x".repeat(10_000));
        let err =
            decompress_lz4_frames(&framed[..framed.len() - 5], "chunk 0").expect_err("truncated");
        assert!(err.to_string().contains("chunk 0"), "{err}");
        assert!(decompress_lz4_frames(b"not lz4 at all", "c").is_err());
        assert!(decompress_lz4_frames(&[], "c").expect("empty").is_empty());
    }

    #[test]
    fn lz4_output_is_bounded_by_the_limit_not_the_input() {
        let zeros = lz4(&vec![0u8; 1 << 20]);
        let err = decompress_lz4_frames_limited(&zeros, 1000, "chunk 9").expect_err("over");
        assert!(err.to_string().contains("limit of 1000 bytes"), "{err}");
        let out = decompress_lz4_frames_limited(&zeros, 1 << 20, "chunk 9").expect("at limit");
        assert_eq!(out.len(), 1 << 20);
        // The limit counts across concatenated frames.
        let mut two = lz4(&[1u8; 600]);
        two.extend(lz4(&[2u8; 600]));
        assert!(decompress_lz4_frames_limited(&two, 1000, "c").is_err());
        assert_eq!(
            decompress_lz4_frames_limited(&two, 1200, "c")
                .expect("fits")
                .len(),
            1200
        );
    }

    #[test]
    fn ipc_lengths_past_the_data_are_rejected_before_reading() {
        let bytes = ipc(&sample());
        // The schema message's metadata length claims 2 GiB.
        let mut huge = bytes.clone();
        huge[4..8].copy_from_slice(&i32::MAX.to_le_bytes());
        let err = decode_ipc_stream(&huge, &sample().schema(), "chunk 1").expect_err("huge");
        assert!(err.to_string().contains("metadata"), "{err}");
        // An intact stream passes the framing check.
        assert!(check_ipc_framing(&bytes, "c").is_ok());
        // A cut one is left to Arrow's reader, which reports it.
        assert!(decode_ipc_stream(&bytes[..bytes.len() / 2], &sample().schema(), "c").is_err());
    }

    #[test]
    fn truncated_ipc_is_an_error() {
        let bytes = ipc(&sample());
        // Cut in the middle of the record batch message.
        let cut = &bytes[..bytes.len() - 20];
        let err = decode_ipc_stream(cut, &sample().schema(), "chunk 2").expect_err("truncated");
        assert!(matches!(err, Error::Decode { .. }), "{err:?}");
        assert!(decode_ipc_stream(b"garbage!", &sample().schema(), "c").is_err());
        assert!(decode_ipc_stream(&[], &sample().schema(), "c").is_err());
    }

    #[test]
    fn batches_are_cast_to_the_promised_schema() {
        let target = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let out = cast_batch(&sample(), &target, "c").expect("cast");
        assert_eq!(out.schema(), target);
        let ids = out
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("int64");
        assert_eq!(ids.values(), &[1, 2, 3]);

        let ts_la = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("America/Los_Angeles".into())),
            true,
        )]));
        let ts = RecordBatch::try_new(
            ts_la,
            vec![Arc::new(
                TimestampMicrosecondArray::from(vec![Some(1_609_524_000_000_000), None])
                    .with_timezone("America/Los_Angeles"),
            )],
        )
        .expect("ts batch");
        let utc = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        )]));
        let out = cast_batch(&ts, &utc, "c").expect("tz cast");
        let col = out
            .column(0)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .expect("ts");
        assert_eq!(col.value(0), 1_609_524_000_000_000, "instant preserved");
        assert!(col.is_null(1));
    }

    #[test]
    fn impossible_casts_name_the_column() {
        let wrong_count = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, true)]));
        let err = cast_batch(&sample(), &wrong_count, "chunk 1").expect_err("count");
        assert!(err.to_string().contains("2 columns"), "{err}");

        let bad = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("s", DataType::Int32, true),
        ]));
        let err = cast_batch(&sample(), &bad, "chunk 1").expect_err("utf8 'a' to int");
        assert!(err.to_string().contains("\"s\""), "{err}");
    }
}
