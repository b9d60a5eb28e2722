//! Structured JSON logs on stdout, written by a background thread.
//!
//! The request path hands each line to a bounded queue and never waits: when the writer falls
//! behind, lines are dropped and counted in `payedge_log_lines_dropped_total`.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Metric, MetricFamily, MetricType};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines the queue holds before new ones are dropped.
const QUEUE_LINES: usize = 65_536;
const WRITE_BUFFER: usize = 64 * 1024;
/// The filter used when `PAYEDGE_LOG` is unset: payedge at info, Pingora's internals at warn.
const DEFAULT_FILTER: &str = "info,pingora_core=warn,pingora_proxy=warn,pingora=warn";

static GUARD: Mutex<Option<WorkerGuard>> = Mutex::new(None);
static WRITER: OnceLock<NonBlocking> = OnceLock::new();

/// Installs the JSON subscriber (also for Pingora's `log` records) and returns the counter of
/// dropped lines. Call once, before the server starts.
pub fn init() -> ErrorCounter {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE_LINES)
        .thread_name("payedge-log")
        // Lines are written in batches: the worker flushes whenever its queue runs empty.
        .finish(std::io::BufWriter::with_capacity(
            WRITE_BUFFER,
            std::io::stdout(),
        ));
    let dropped = writer.error_counter();
    let _ = WRITER.set(writer.clone());
    let filter =
        EnvFilter::try_from_env("PAYEDGE_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let installed = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(true)
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init();
    if installed.is_ok() {
        if let Ok(mut slot) = GUARD.lock() {
            *slot = Some(guard);
        }
    }
    dropped
}

/// Writes ready-made lines (each ending in a newline) through the same bounded queue as every
/// other log line, in one message: for lines whose shape tracing cannot express, such as the
/// business log's nested properties.
pub fn write_lines(lines: &str) {
    if let Some(writer) = WRITER.get() {
        let _ = writer.clone().write_all(lines.as_bytes());
    }
}

/// Writes out what is queued and stops the writer; later lines are discarded. For process exit:
/// a second caller waits until the first one's flush is done.
pub fn flush() {
    if let Ok(mut slot) = GUARD.lock() {
        drop(slot.take());
    }
}

/// Exposes the dropped-line count as a Prometheus counter, read at scrape time.
pub struct DroppedLines {
    counter: ErrorCounter,
    desc: Desc,
}

impl DroppedLines {
    pub fn new(counter: ErrorCounter) -> prometheus::Result<Self> {
        let desc = Desc::new(
            "payedge_log_lines_dropped_total".into(),
            "Log lines dropped because the log writer fell behind.".into(),
            Vec::new(),
            Default::default(),
        )?;
        Ok(Self { counter, desc })
    }
}

impl Collector for DroppedLines {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut counter = Counter::default();
        counter.set_value(self.counter.dropped_lines() as f64);
        let mut metric = Metric::default();
        metric.set_counter(counter);
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::COUNTER);
        family.set_metric(vec![metric]);
        vec![family]
    }
}
