//! Criterion micro-benchmarks of result chunk decoding, the CPU work of every byte a Databricks
//! warehouse returns: LZ4-frame decompression and Arrow IPC decoding.
//!
//! The chunk is built in-process as a warehouse would send it: 100 000 TPC-H `lineitem` rows
//! (tpchgen-arrow; `STRING` columns as `Utf8`, as Databricks types them), written as one Arrow IPC
//! stream and compressed as LZ4 frames. Every benchmark reports throughput in bytes of the
//! decompressed IPC stream, so their MB/s compare directly:
//!
//! - `lz4_decompress`: [`decompress_lz4_frames`] alone;
//! - `ipc_zero_copy` / `ipc_copying`: [`decode_ipc_buffer`] over a shared [`Buffer`] (arrays are
//!   slices of it) vs [`decode_ipc_stream`] over a byte slice (one copy first);
//! - `lz4_ipc_zero_copy`: both steps over a whole-chunk buffer, decompressed then decoded in place;
//! - `decode_chunk_lz4`: [`decode_chunk`], what the client runs on every downloaded chunk
//!   (decompressed message by message, one allocation per message body).
//!
//! Run with `cargo bench -p dbfed-benchmarks --bench decode` (all micro-benchmarks:
//! `cargo bench -p dbfed-benchmarks`; a short run: append `-- --warm-up-time 1 --measurement-time 3`).

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::buffer::Buffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::StreamWriter;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dbfed_databricks::decode::{
    DEFAULT_MAX_CHUNK_BYTES, decode_chunk, decode_ipc_buffer, decode_ipc_stream,
    decompress_lz4_frames,
};
use tpchgen::generators::LineItemGenerator;
use tpchgen_arrow::LineItemArrow;

/// Rows in the chunk.
const ROWS: usize = 100_000;

/// TPC-H scale factor generating a little more than [`ROWS`] `lineitem` rows (about 120 000).
const SCALE: f64 = 0.02;

/// The label decode errors carry.
const WHAT: &str = "benchmark chunk";

/// One result chunk in its three forms.
struct Chunk {
    /// The schema the client promises (and the stream carries).
    schema: SchemaRef,
    /// The Arrow IPC stream.
    ipc: Vec<u8>,
    /// The same bytes as a shared Arrow buffer (cloning it is a reference count).
    ipc_buffer: Buffer,
    /// The IPC stream compressed as LZ4 frames, as downloaded.
    compressed: Vec<u8>,
}

/// `lineitem`'s schema as a warehouse reports it: strings as `Utf8` rather than `Utf8View`.
fn wire_schema(source: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        source
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8View => Field::new(f.name(), DataType::Utf8, f.is_nullable()),
                _ => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    ))
}

/// Builds the chunk: exactly [`ROWS`] rows of generated `lineitem`, in the generator's batches.
fn lineitem_chunk() -> Chunk {
    let schema = wire_schema(&LineItemArrow::schema_ref());
    let mut writer = StreamWriter::try_new(Vec::new(), &schema).expect("IPC writer starts");
    let mut rows = 0;
    for batch in LineItemArrow::new(LineItemGenerator::new(SCALE, 1, 1)) {
        let batch = batch.expect("tpchgen generates lineitem");
        let take = batch.num_rows().min(ROWS - rows);
        if take == 0 {
            break;
        }
        let columns = batch
            .slice(0, take)
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(column, field)| cast(column, field.data_type()))
            .collect::<Result<Vec<ArrayRef>, _>>()
            .expect("lineitem columns cast to the wire types");
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns).expect("wire batch");
        writer.write(&batch).expect("IPC writer writes");
        rows += take;
    }
    assert_eq!(rows, ROWS, "the scale factor yields at least {ROWS} rows");
    writer.finish().expect("IPC stream ends");
    let ipc = writer.into_inner().expect("IPC bytes");
    let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
    encoder.write_all(&ipc).expect("LZ4 compresses");
    let compressed = encoder.finish().expect("LZ4 frame ends");
    Chunk {
        schema,
        ipc_buffer: Buffer::from(ipc.as_slice()),
        ipc,
        compressed,
    }
}

/// Checks, once, that every path decodes the whole chunk to the same batches, so the timed
/// loops measure correct work.
fn check(chunk: &Chunk) {
    let raw = decompress_lz4_frames(&chunk.compressed, WHAT).expect("chunk decompresses");
    assert_eq!(raw, chunk.ipc, "LZ4 round trip");
    let zero_copy =
        decode_ipc_buffer(chunk.ipc_buffer.clone(), &chunk.schema, WHAT).expect("decodes");
    let copying = decode_ipc_stream(&chunk.ipc, &chunk.schema, WHAT).expect("decodes");
    let rows: usize = zero_copy.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, ROWS, "zero-copy decode returns every row");
    assert_eq!(zero_copy, copying, "both decoders return the same batches");
    let (chunked, size) = decode_chunk(
        &chunk.compressed,
        true,
        DEFAULT_MAX_CHUNK_BYTES,
        &chunk.schema,
        WHAT,
    )
    .expect("chunk decodes");
    assert_eq!(chunked, zero_copy, "decode_chunk returns the same batches");
    assert_eq!(
        size,
        chunk.ipc.len() as u64,
        "decode_chunk reports the IPC size"
    );
    eprintln!(
        "decode: {ROWS} lineitem rows in {} batches, IPC {} bytes, LZ4 {} bytes ({:.2}x)",
        zero_copy.len(),
        chunk.ipc.len(),
        chunk.compressed.len(),
        chunk.ipc.len() as f64 / chunk.compressed.len() as f64
    );
}

fn decode(c: &mut Criterion) {
    let chunk = lineitem_chunk();
    check(&chunk);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(chunk.ipc.len() as u64));
    group.bench_function("lz4_decompress", |b| {
        b.iter(|| decompress_lz4_frames(black_box(&chunk.compressed), WHAT).expect("decompresses"))
    });
    group.bench_function("ipc_zero_copy", |b| {
        b.iter(|| {
            decode_ipc_buffer(black_box(chunk.ipc_buffer.clone()), &chunk.schema, WHAT)
                .expect("decodes")
        })
    });
    group.bench_function("ipc_copying", |b| {
        b.iter(|| decode_ipc_stream(black_box(&chunk.ipc), &chunk.schema, WHAT).expect("decodes"))
    });
    group.bench_function("lz4_ipc_zero_copy", |b| {
        b.iter(|| {
            let raw =
                decompress_lz4_frames(black_box(&chunk.compressed), WHAT).expect("decompresses");
            decode_ipc_buffer(Buffer::from_vec(raw), &chunk.schema, WHAT).expect("decodes")
        })
    });
    group.bench_function("decode_chunk_lz4", |b| {
        b.iter(|| {
            decode_chunk(
                black_box(&chunk.compressed),
                true,
                DEFAULT_MAX_CHUNK_BYTES,
                &chunk.schema,
                WHAT,
            )
            .expect("decodes")
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
