//! An open-loop HTTP/1.1 load generator: requests at a fixed rate, whatever the server's speed,
//! so that two servers can be compared at the *same* load (wrk keeps its connections busy, so
//! each server sets its own load, and the slower one's latency is mostly its own queue).
//!
//!     paced_load HOST:PORT PATH RATE SECONDS CONNECTIONS [HEADER...]
//!
//! Each connection sends its share of RATE on its own schedule (connection k at
//! k/RATE + j·CONNECTIONS/RATE), one request at a time, keep-alive. A request whose connection
//! was still busy with the previous answer at its scheduled time counts from that time (the
//! server's slowness delayed it: wrk2's correction for coordinated omission); otherwise from the
//! moment it was written (tokio's timer wakes up to a millisecond late, which is not the server's
//! doing). The first second is a warm-up and is not counted. Prints one line:
//!
//!     rps p50_ms p99_ms p999_ms max_ms non2xx errors
//!
//! Exits 1 when any request failed at the socket.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const WARM_UP: Duration = Duration::from_secs(1);

struct Plan {
    addr: String,
    request: Vec<u8>,
    rate: f64,
    connections: usize,
    start: Instant,
    end: Instant,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    non2xx: u64,
    errors: u64,
}

fn usage() -> ! {
    eprintln!("usage: paced_load HOST:PORT PATH RATE SECONDS CONNECTIONS [HEADER...]");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        usage();
    }
    let (Ok(rate), Ok(seconds), Ok(connections)) = (
        args[2].parse::<f64>(),
        args[3].parse::<f64>(),
        args[4].parse::<usize>(),
    ) else {
        usage()
    };
    if rate <= 0.0 || seconds <= WARM_UP.as_secs_f64() || connections == 0 {
        usage();
    }
    let mut request = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", args[1], args[0]);
    for header in &args[5..] {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("paced_load: {e}");
            std::process::exit(1);
        }
    };
    let start = Instant::now() + Duration::from_millis(200);
    let plan = std::sync::Arc::new(Plan {
        addr: args[0].clone(),
        request: request.into_bytes(),
        rate,
        connections,
        start,
        end: start + Duration::from_secs_f64(seconds),
    });
    let tallies = runtime.block_on(async {
        let tasks: Vec<_> = (0..connections)
            .map(|k| tokio::spawn(connection(std::sync::Arc::clone(&plan), k)))
            .collect();
        let mut tallies = Vec::new();
        for task in tasks {
            tallies.push(task.await.unwrap_or_else(|_| Tally {
                errors: 1,
                ..Tally::default()
            }));
        }
        tallies
    });
    let mut all = Tally::default();
    for t in tallies {
        all.latencies_us.extend(t.latencies_us);
        all.non2xx += t.non2xx;
        all.errors += t.errors;
    }
    all.latencies_us.sort_unstable();
    let at = |q: f64| -> f64 {
        let n = all.latencies_us.len();
        if n == 0 {
            return f64::NAN;
        }
        let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        all.latencies_us[i] as f64 / 1000.0
    };
    let counted = seconds - WARM_UP.as_secs_f64();
    println!(
        "{:.1} {:.3} {:.3} {:.3} {:.3} {} {}",
        all.latencies_us.len() as f64 / counted,
        at(0.50),
        at(0.99),
        at(0.999),
        at(1.0),
        all.non2xx,
        all.errors
    );
    if all.errors > 0 {
        std::process::exit(1);
    }
}

/// Connection `k`'s share of the schedule.
async fn connection(plan: std::sync::Arc<Plan>, k: usize) -> Tally {
    let mut tally = Tally::default();
    let stream = match TcpStream::connect(&plan.addr).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("paced_load: connect {}: {e}", plan.addr);
            tally.errors += 1;
            return tally;
        }
    };
    let _ = stream.set_nodelay(true);
    let mut stream = BufReader::new(stream);
    let counted_from = plan.start + WARM_UP;
    let mut free_since = Instant::now();
    for j in 0.. {
        let slot = (k + j * plan.connections) as f64 / plan.rate;
        let scheduled = plan.start + Duration::from_secs_f64(slot);
        if scheduled >= plan.end {
            break;
        }
        tokio::time::sleep_until(scheduled.into()).await;
        let written = Instant::now();
        // Busy at its time: the wait for the previous answer is part of this one's latency.
        let counted_from_time = if free_since > scheduled {
            scheduled
        } else {
            written
        };
        let status = match exchange(&mut stream, &plan.request).await {
            Ok(status) => status,
            Err(e) => {
                eprintln!("paced_load: {e}");
                tally.errors += 1;
                return tally;
            }
        };
        free_since = Instant::now();
        if scheduled >= counted_from {
            tally
                .latencies_us
                .push((free_since - counted_from_time).as_micros() as u64);
            if !(200..300).contains(&status) {
                tally.non2xx += 1;
            }
        }
    }
    tally
}

/// Writes the request and reads one whole answer (Content-Length or chunked); its status.
async fn exchange(stream: &mut BufReader<TcpStream>, request: &[u8]) -> std::io::Result<u16> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    stream.get_mut().write_all(request).await?;
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let mut length = None;
    let mut chunked = false;
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Err(bad("closed within the headers"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
    }
    if chunked {
        loop {
            line.clear();
            stream.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim_end(), 16).map_err(|_| bad("chunk size"))?;
            let mut chunk = vec![0; size + 2];
            stream.read_exact(&mut chunk).await?;
            if size == 0 {
                return Ok(status);
            }
        }
    }
    let mut body = vec![0; length.ok_or_else(|| bad("no content-length"))?];
    stream.read_exact(&mut body).await?;
    Ok(status)
}
