//! `tollgate usage export`: usage events from JetStream into Parquet files partitioned the
//! Hive way (`date=YYYY-MM-DD/domain=NAME/part-FIRST-LAST.parquet`), for DuckDB, Spark,
//! Trino or anything that reads a lakehouse table. The schema is in [`schema`] and in
//! `docs/events/usage-parquet.md`.
//!
//! **Exactly once, across crashes.** A durable consumer reads the usage stream in order.
//! Messages are cut into blocks of stream sequence numbers (`block` of them: a block's
//! files depend only on the messages in it, not on timing), and a block is committed in
//! steps that a restart can finish or undo:
//! 1. every partition's file is written under `_tollgate/staging/<block>/` and synced;
//! 2. a `READY` marker is written there;
//! 3. the files are renamed into place, the ledger (`_tollgate/<consumer>.json`, the last
//!    stream sequence committed) is replaced, the staging directory removed;
//! 4. the block's messages are acknowledged.
//!
//! A restart first rolls every `READY` block forward (step 3) and removes every other
//! staging directory, then reads from the ledger's position on (the durable consumer is
//! recreated there, so what a crashed run held unacknowledged comes back at once) and
//! skips any message the ledger covers. So a crash
//! anywhere leaves neither duplicates nor gaps, and a restart over the same messages writes
//! the same files, byte for byte.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::{
    Int64Builder, ListBuilder, StringBuilder, StructBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures_util::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::Deserialize;
use tollgate_events::{Broker, USAGE_STREAM};

/// What can go wrong in an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The broker refused or did not answer.
    #[error("event broker: {0}")]
    Broker(String),
    /// The export directory could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What happened.
        source: std::io::Error,
    },
    /// A Parquet file could not be written.
    #[error("parquet: {0}")]
    Parquet(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_owned(),
        source,
    }
}

/// How to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The table's root directory.
    pub dir: PathBuf,
    /// The durable consumer's name (one per destination).
    pub consumer: String,
    /// Stream sequence numbers per block (files are cut at block boundaries).
    pub block: u64,
    /// Stop once no message arrived for this long (`None`: run until stopped).
    pub until_idle: Option<Duration>,
    /// Caught up, a block's part so far is committed once its oldest row waited this long
    /// (fewer, larger files while tailing a live stream).
    pub flush_after: Duration,
}

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Usage rows written.
    pub rows: u64,
    /// Files written.
    pub files: u64,
    /// Messages skipped because an earlier run had committed them.
    pub skipped: u64,
    /// The last stream sequence committed.
    pub last_seq: u64,
}

/// The columns of every file (the partition columns `date` and `domain` are in the path).
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("stream_seq", DataType::Int64, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("policy", DataType::Utf8, false),
        Field::new(
            "interval_start",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new(
            "interval_end",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("allowed", DataType::Int64, false),
        Field::new("denied", DataType::Int64, false),
        Field::new("shadow_denied", DataType::Int64, false),
        Field::new("hits_allowed", DataType::Int64, false),
        Field::new("hits_denied", DataType::Int64, false),
        Field::new("error_bound", DataType::Int64, false),
        Field::new("events_dropped", DataType::Int64, false),
        Field::new("denials_omitted", DataType::Int64, false),
        Field::new_list(
            "heavy_hitters",
            Field::new("item", DataType::Struct(hitter_fields()), true),
            false,
        ),
    ]))
}

fn hitter_fields() -> Fields {
    Fields::from(vec![
        Field::new("value", DataType::Utf8, false),
        Field::new("count", DataType::Int64, false),
        Field::new("error", DataType::Int64, false),
    ])
}

#[derive(Debug, Deserialize)]
struct Envelope {
    id: String,
    source: String,
    data: UsageData,
}

#[derive(Debug, Deserialize)]
struct UsageData {
    domain: String,
    policy: String,
    start_ms: i64,
    end_ms: i64,
    allowed: u64,
    denied: u64,
    shadow_denied: u64,
    hits_allowed: u64,
    hits_denied: u64,
    error_bound: u64,
    events_dropped: u64,
    denials_omitted: u64,
    heavy_hitters: Vec<Hitter>,
}

#[derive(Debug, Deserialize)]
struct Hitter {
    value: String,
    count: u64,
    error: u64,
}

/// One usage event with where it sits in the stream.
#[derive(Debug)]
struct Row {
    seq: u64,
    event: Envelope,
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A partition value as a path segment: Hive's escaping (`%XX` for every byte that is not
/// a letter, digit, `_`, `-` or `.`), which Spark and DuckDB undo when they read the path.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.starts_with('.') {
        out.replace_range(0..1, "%2E");
    }
    out
}

fn date_of(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_else(|_| "1970-01-01".into())
}

fn batch(rows: &[&Row]) -> Result<RecordBatch, ExportError> {
    let mut event_id = StringBuilder::new();
    let mut seq = Int64Builder::new();
    let mut source = StringBuilder::new();
    let mut policy = StringBuilder::new();
    let mut start = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let mut end = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let mut counts: Vec<Int64Builder> = (0..8).map(|_| Int64Builder::new()).collect();
    let struct_builder = StructBuilder::from_fields(hitter_fields(), 0);
    let mut hitters = ListBuilder::new(struct_builder).with_field(Field::new(
        "item",
        DataType::Struct(hitter_fields()),
        true,
    ));
    for row in rows {
        let e = &row.event;
        let d = &e.data;
        event_id.append_value(&e.id);
        seq.append_value(int(row.seq));
        source.append_value(&e.source);
        policy.append_value(&d.policy);
        start.append_value(d.start_ms);
        end.append_value(d.end_ms);
        for (b, v) in counts.iter_mut().zip([
            d.allowed,
            d.denied,
            d.shadow_denied,
            d.hits_allowed,
            d.hits_denied,
            d.error_bound,
            d.events_dropped,
            d.denials_omitted,
        ]) {
            b.append_value(int(v));
        }
        let items = hitters.values();
        for h in &d.heavy_hitters {
            items
                .field_builder::<StringBuilder>(0)
                .ok_or_else(|| ExportError::Parquet("heavy_hitters.value builder".into()))?
                .append_value(&h.value);
            items
                .field_builder::<Int64Builder>(1)
                .ok_or_else(|| ExportError::Parquet("heavy_hitters.count builder".into()))?
                .append_value(int(h.count));
            items
                .field_builder::<Int64Builder>(2)
                .ok_or_else(|| ExportError::Parquet("heavy_hitters.error builder".into()))?
                .append_value(int(h.error));
            items.append(true);
        }
        hitters.append(true);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(event_id.finish()),
        Arc::new(seq.finish()),
        Arc::new(source.finish()),
        Arc::new(policy.finish()),
        Arc::new(start.finish()),
        Arc::new(end.finish()),
    ];
    columns.extend(counts.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.push(Arc::new(hitters.finish()));
    RecordBatch::try_new(schema(), columns).map_err(|e| ExportError::Parquet(e.to_string()))
}

fn write_parquet(path: &Path, rows: &[&Row]) -> Result<(), ExportError> {
    let batch = batch(rows)?;
    let file = fs::File::create(path).map_err(io(path))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by("tollgate usage export".into())
        .build();
    let mut writer = ArrowWriter::try_new(file, schema(), Some(props))
        .map_err(|e| ExportError::Parquet(e.to_string()))?;
    writer
        .write(&batch)
        .map_err(|e| ExportError::Parquet(e.to_string()))?;
    let file = writer
        .into_inner()
        .map_err(|e| ExportError::Parquet(e.to_string()))?;
    file.sync_all().map_err(io(path))?;
    Ok(())
}

/// Where the export keeps its own files (ignored by Hive readers: it starts with `_`).
fn own_dir(dir: &Path) -> PathBuf {
    dir.join("_tollgate")
}

fn ledger_path(dir: &Path, consumer: &str) -> PathBuf {
    own_dir(dir).join(format!("{consumer}.json"))
}

fn read_ledger(dir: &Path, consumer: &str) -> Result<u64, ExportError> {
    let path = ledger_path(dir, consumer);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["last_seq"].as_u64())
            .unwrap_or(0)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io(&path)(e)),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// Test hook: `TOLLGATE_EXPORT_CRASH_AT=staged` aborts the process after a block's files are
/// staged but before it is marked ready; `=moving` after its first file was moved into
/// place. Used by the crash tests; unset in production.
fn crash_point(at: &str) {
    if std::env::var("TOLLGATE_EXPORT_CRASH_AT").is_ok_and(|v| v == at) {
        eprintln!("crashing at '{at}' (TOLLGATE_EXPORT_CRASH_AT)");
        std::process::abort();
    }
}

/// Finishes step 3 for one ready staging directory: moves its files into place, records
/// its last sequence, removes it.
fn roll_forward(dir: &Path, staging: &Path, consumer: &str) -> Result<u64, ExportError> {
    let ready = fs::read_to_string(staging.join("READY")).map_err(io(staging))?;
    let mut moved = 0;
    for line in ready.lines().skip(1) {
        let Some((from, to)) = line.split_once('\t') else {
            continue;
        };
        let (from, to) = (staging.join(from), dir.join(to));
        if from.exists() {
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).map_err(io(parent))?;
            }
            fs::rename(&from, &to).map_err(io(&to))?;
            moved += 1;
            if moved == 1 {
                crash_point("moving");
            }
        }
    }
    let last: u64 = ready
        .lines()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    if last > read_ledger(dir, consumer)? {
        write_atomically(
            &ledger_path(dir, consumer),
            format!("{{\"last_seq\":{last}}}").as_bytes(),
        )?;
    }
    fs::remove_dir_all(staging).map_err(io(staging))?;
    Ok(last)
}

/// Finishes or undoes what a crashed run left in staging.
fn recover(dir: &Path, consumer: &str) -> Result<(), ExportError> {
    let staging_root = own_dir(dir).join("staging").join(consumer);
    let Ok(entries) = fs::read_dir(&staging_root) else {
        return Ok(());
    };
    let mut blocks: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    blocks.sort();
    for staging in blocks {
        if staging.join("READY").exists() {
            let last = roll_forward(dir, &staging, consumer)?;
            tracing::info!(staging = %staging.display(), last, "finished a block a previous run had staged");
        } else {
            fs::remove_dir_all(&staging).map_err(io(&staging))?;
            tracing::info!(staging = %staging.display(), "removed a block a previous run had not finished staging");
        }
    }
    Ok(())
}

/// Commits one block's rows (steps 1 to 3); returns the files written.
fn commit_block(dir: &Path, consumer: &str, rows: &[Row]) -> Result<u64, ExportError> {
    let (Some(first), Some(last)) = (rows.first().map(|r| r.seq), rows.last().map(|r| r.seq))
    else {
        return Ok(0);
    };
    let mut partitions: BTreeMap<(String, String), Vec<&Row>> = BTreeMap::new();
    for row in rows {
        let key = (
            date_of(row.event.data.start_ms),
            row.event.data.domain.clone(),
        );
        partitions.entry(key).or_default().push(row);
    }
    let staging = own_dir(dir)
        .join("staging")
        .join(consumer)
        .join(format!("{first:020}-{last:020}"));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    fs::create_dir_all(&staging).map_err(io(&staging))?;
    let mut manifest = format!("{last}\n");
    for (i, ((date, domain), part)) in partitions.iter().enumerate() {
        let p_first = part.first().map_or(0, |r| r.seq);
        let p_last = part.last().map_or(0, |r| r.seq);
        let name = format!("{i:04}.parquet");
        write_parquet(&staging.join(&name), part)?;
        let target = format!(
            "date={date}/domain={}/part-{p_first:020}-{p_last:020}.parquet",
            escape(domain)
        );
        manifest.push_str(&format!("{name}\t{target}\n"));
    }
    crash_point("staged");
    write_atomically(&staging.join("READY"), manifest.as_bytes())?;
    roll_forward(dir, &staging, consumer)?;
    Ok(partitions.len() as u64)
}

/// Exports usage events from the broker into `options.dir`.
pub async fn export(broker: &Broker, options: &ExportOptions) -> Result<ExportReport, ExportError> {
    let dir = &options.dir;
    fs::create_dir_all(own_dir(dir)).map_err(io(dir))?;
    recover(dir, &options.consumer)?;
    let mut report = ExportReport {
        last_seq: read_ledger(dir, &options.consumer)?,
        ..ExportReport::default()
    };
    broker
        .ensure_streams()
        .await
        .map_err(|e| ExportError::Broker(e.to_string()))?;
    let stream = broker
        .jetstream()
        .get_stream(USAGE_STREAM)
        .await
        .map_err(|e| ExportError::Broker(e.to_string()))?;
    // The ledger in the destination is the truth, not the consumer's acknowledgements: a
    // crashed run leaves messages delivered and unacknowledged, which the server would only
    // hand out again after ack_wait. So the consumer is made afresh at the ledger's position
    // on every start (one export per consumer name at a time).
    let _ = stream.delete_consumer(&options.consumer).await;
    let consumer: async_nats::jetstream::consumer::Consumer<pull::Config> = stream
        .create_consumer(pull::Config {
            durable_name: Some(options.consumer.clone()),
            description: Some(format!("tollgate usage export to {}", dir.display())),
            filter_subject: "tollgate.usage.>".into(),
            deliver_policy: if report.last_seq == 0 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: report.last_seq + 1,
                }
            },
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(300),
            max_ack_pending: i64::try_from(options.block.saturating_mul(2))
                .unwrap_or(i64::MAX)
                .max(1000),
            ..Default::default()
        })
        .await
        .map_err(|e| ExportError::Broker(e.to_string()))?;
    let block_of = |seq: u64| (seq.saturating_sub(1)) / options.block.max(1);
    let mut pending: Vec<Row> = Vec::new();
    let mut to_ack: Vec<async_nats::jetstream::Message> = Vec::new();
    let mut last_message = Instant::now();
    let mut pending_since: Option<Instant> = None;
    loop {
        let mut fetched = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(|e| ExportError::Broker(e.to_string()))?;
        let mut got = 0;
        while let Some(message) = fetched.next().await {
            let message = message.map_err(|e| ExportError::Broker(e.to_string()))?;
            got += 1;
            let seq = message
                .info()
                .map_err(|e| ExportError::Broker(e.to_string()))?
                .stream_sequence;
            if seq <= report.last_seq {
                report.skipped += 1;
                message
                    .ack()
                    .await
                    .map_err(|e| ExportError::Broker(e.to_string()))?;
                continue;
            }
            if pending
                .first()
                .is_some_and(|r| block_of(r.seq) != block_of(seq))
            {
                flush(dir, options, &mut pending, &mut to_ack, &mut report).await?;
                pending_since = None;
            }
            match serde_json::from_slice::<Envelope>(&message.payload) {
                Ok(event) => {
                    pending_since.get_or_insert_with(Instant::now);
                    pending.push(Row { seq, event });
                }
                Err(e) => tracing::warn!(seq, error = %e, "usage event that is not one; skipped"),
            }
            to_ack.push(message);
        }
        if got > 0 {
            last_message = Instant::now();
            continue;
        }
        // Caught up: what is pending is written as the block's part so far, when it has
        // waited long enough or the export stops.
        let stopping = options
            .until_idle
            .is_some_and(|idle| last_message.elapsed() >= idle);
        if stopping || pending_since.is_some_and(|t| t.elapsed() >= options.flush_after) {
            flush(dir, options, &mut pending, &mut to_ack, &mut report).await?;
            pending_since = None;
        }
        if stopping {
            return Ok(report);
        }
    }
}

async fn flush(
    dir: &Path,
    options: &ExportOptions,
    pending: &mut Vec<Row>,
    to_ack: &mut Vec<async_nats::jetstream::Message>,
    report: &mut ExportReport,
) -> Result<(), ExportError> {
    if !pending.is_empty() {
        report.files += commit_block(dir, &options.consumer, pending)?;
        report.rows += pending.len() as u64;
        report.last_seq = pending.last().map_or(report.last_seq, |r| r.seq);
        tracing::info!(
            rows = pending.len(),
            last_seq = report.last_seq,
            "usage block committed"
        );
        pending.clear();
    }
    for message in to_ack.drain(..) {
        message
            .ack()
            .await
            .map_err(|e| ExportError::Broker(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_values_are_escaped_as_hive_does() {
        assert_eq!(escape("api"), "api");
        assert_eq!(escape("api.v1"), "api.v1");
        assert_eq!(escape("a/b=c d"), "a%2Fb%3Dc%20d");
        assert_eq!(escape(".."), "%2E.");
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(1_764_633_600_000), "2025-12-02");
    }
}
