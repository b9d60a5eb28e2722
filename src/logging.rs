//! Structured JSON logs on stdout, written by a background thread.
//!
//! Every line goes into a bounded queue that the request path fills without ever waiting and
//! without waking anyone: the writer thread is not parked on the queue but drains it on its own
//! short tick, so a busy gateway pays for no wake-ups per line (a wake-up per line cost more
//! than the line itself in the trigger benchmark). When the writer falls behind, lines are
//! dropped and counted in `payedge_log_lines_dropped_total`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Metric, MetricFamily, MetricType};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Lines the queue holds before new ones are dropped.
const QUEUE_LINES: usize = 65_536;
const WRITE_BUFFER: usize = 64 * 1024;
/// How often the writer drains the queue while lines keep coming, and when they don't.
const BUSY_TICK: Duration = Duration::from_millis(2);
const IDLE_TICK: Duration = Duration::from_millis(20);
/// The filter used when `PAYEDGE_LOG` is unset: payedge at info, Pingora's internals at warn.
const DEFAULT_FILTER: &str = "info,pingora_core=warn,pingora_proxy=warn,pingora=warn";

/// The queue every log line goes through.
#[derive(Clone)]
pub struct LogQueue {
    tx: SyncSender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

impl LogQueue {
    fn push(&self, line: Vec<u8>) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One line's writer, as tracing's formatter asks for it.
pub struct LineWriter<'a>(&'a LogQueue);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogQueue {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(self)
    }
}

struct Writer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

static QUEUE: OnceLock<LogQueue> = OnceLock::new();
static WRITER: Mutex<Option<Writer>> = Mutex::new(None);

/// Installs the JSON subscriber (also for Pingora's `log` records) and starts the writer.
/// Returns the counter of dropped lines. Call once, before the server starts.
pub fn init() -> Arc<AtomicU64> {
    let (tx, rx) = sync_channel(QUEUE_LINES);
    let queue = LogQueue {
        tx,
        dropped: Arc::new(AtomicU64::new(0)),
    };
    let dropped = Arc::clone(&queue.dropped);
    let filter =
        EnvFilter::try_from_env("PAYEDGE_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let installed = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(true)
        .with_env_filter(filter)
        .with_writer(queue.clone())
        .try_init();
    if installed.is_err() || QUEUE.set(queue).is_err() {
        return dropped;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let spawned = std::thread::Builder::new()
        .name("payedge-log".into())
        .spawn(move || drain(rx, &stopping));
    if let (Ok(thread), Ok(mut slot)) = (spawned, WRITER.lock()) {
        *slot = Some(Writer { stop, thread });
    }
    dropped
}

fn drain(rx: Receiver<Vec<u8>>, stop: &AtomicBool) {
    let mut out = std::io::BufWriter::with_capacity(WRITE_BUFFER, std::io::stdout());
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let mut wrote = false;
        while let Ok(line) = rx.try_recv() {
            let _ = out.write_all(&line);
            wrote = true;
        }
        if wrote {
            let _ = out.flush();
        }
        if stopping {
            return;
        }
        std::thread::sleep(if wrote { BUSY_TICK } else { IDLE_TICK });
    }
}

/// Writes ready-made lines (each ending in a newline) through the same queue, as one entry:
/// for lines whose shape tracing cannot express, such as the business log's nested properties,
/// and for the request log, which is cheaper to serialize directly.
pub fn write_lines(lines: Vec<u8>) {
    if let Some(queue) = QUEUE.get() {
        queue.push(lines);
    }
}

/// Writes out what is queued and stops the writer; later lines are discarded. For process exit:
/// a second caller waits until the first one's flush is done.
pub fn flush() {
    if let Ok(mut slot) = WRITER.lock()
        && let Some(writer) = slot.take()
    {
        writer.stop.store(true, Ordering::Release);
        let _ = writer.thread.join();
    }
}

/// Exposes the dropped-line count as a Prometheus counter, read at scrape time.
pub struct DroppedLines {
    counter: Arc<AtomicU64>,
    desc: Desc,
}

impl DroppedLines {
    pub fn new(counter: Arc<AtomicU64>) -> prometheus::Result<Self> {
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
        counter.set_value(self.counter.load(Ordering::Relaxed) as f64);
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
