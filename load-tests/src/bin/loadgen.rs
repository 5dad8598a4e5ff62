//! A small HTTP/1.1 load generator for LLM gateways. Unlike general tools it measures
//! time to the first content of streamed responses (the first chunk carrying text, as a
//! user sees it; OpenAI-style streams open with an empty role-only chunk that does not
//! count), and it reports every non-2xx answer.
//!
//! Each connection sends requests back to back over keep-alive; results are printed as
//! one JSON object.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;

#[derive(Parser, Clone)]
#[command(about = "HTTP load generator measuring latency and time to first chunk")]
struct Args {
    /// Target URL (http only), e.g. http://127.0.0.1:8080/v1/chat/completions
    #[arg(long)]
    url: String,
    /// Request body (JSON). Without it, requests are GETs.
    #[arg(long)]
    body: Option<String>,
    /// Extra header, `name: value`; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Concurrent connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Stop after this many requests in total.
    #[arg(long)]
    requests: Option<usize>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Spread connection starts over this many ms (for many thousands of streams).
    #[arg(long, default_value_t = 0)]
    ramp_ms: u64,
    /// Longest a single request may take before it counts as an error, in seconds.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// A label copied into the output.
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Default)]
struct Samples {
    latency_us: Vec<u64>,
    first_chunk_us: Vec<u64>,
    ok: usize,
    non_2xx: usize,
    errors: usize,
    first_failure: Option<String>,
}

struct Target {
    host: String,
    address: String,
    path: String,
    method: hyper::Method,
    body: Bytes,
    headers: Vec<(String, String)>,
}

fn parse(args: &Args) -> Target {
    let rest = args.url.strip_prefix("http://").expect("only http:// URLs");
    let (address, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let headers = args
        .headers
        .iter()
        .map(|h| {
            let (name, value) = h.split_once(':').expect("headers look like `name: value`");
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    Target {
        host: address.to_owned(),
        address: address.to_owned(),
        path,
        method: if args.body.is_some() { hyper::Method::POST } else { hyper::Method::GET },
        body: Bytes::from(args.body.clone().unwrap_or_default()),
        headers,
    }
}

async fn connect(target: &Target) -> Result<http1::SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(&target.address).await.map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let io = TokioIo::new(stream);
    let (sender, connection) = http1::handshake(io).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One request: (status, first content after, total) or an error.
async fn one(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    target: &Target,
) -> Result<(u16, Duration, Duration), String> {
    let mut request = Request::builder().method(target.method.clone()).uri(&target.path).header("host", &target.host);
    if !target.body.is_empty() {
        request = request.header("content-type", "application/json");
    }
    for (name, value) in &target.headers {
        request = request.header(name, value);
    }
    let request = request.body(Full::new(target.body.clone())).map_err(|e| e.to_string())?;
    let started = Instant::now();
    sender.ready().await.map_err(|e| format!("connection: {e}"))?;
    let response = sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut first_chunk = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        if first_chunk.is_none() && frame.data_ref().is_some_and(|d| carries_content(d)) {
            first_chunk = Some(started.elapsed());
        }
    }
    let total = started.elapsed();
    Ok((status, first_chunk.unwrap_or(total), total))
}

/// Whether a body chunk holds a non-empty `"content":"…"` (any chunk of a non-SSE body counts).
fn carries_content(data: &[u8]) -> bool {
    if !data.starts_with(b"data:") {
        return !data.is_empty();
    }
    let needle = b"\"content\":\"";
    data.windows(needle.len() + 1).any(|w| w.starts_with(needle) && w[needle.len()] != b'"')
}

async fn worker(
    target: Arc<Target>,
    budget: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    delay: Duration,
    timeout: Duration,
) -> Samples {
    tokio::time::sleep(delay).await;
    let mut samples = Samples::default();
    let mut sender = None;
    while !stop.load(Ordering::Relaxed) {
        if budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1)).is_err() {
            break;
        }
        if sender.is_none() {
            match connect(&target).await {
                Ok(s) => sender = Some(s),
                Err(error) => {
                    samples.errors += 1;
                    samples.first_failure.get_or_insert(error);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let outcome = tokio::time::timeout(timeout, one(s, &target))
            .await
            .unwrap_or_else(|_| Err(format!("no complete answer within {timeout:?}")));
        match outcome {
            Ok((status, first, total)) => {
                if (200..300).contains(&status) {
                    samples.ok += 1;
                    samples.latency_us.push(total.as_micros() as u64);
                    samples.first_chunk_us.push(first.as_micros() as u64);
                } else {
                    samples.non_2xx += 1;
                    samples.first_failure.get_or_insert(format!("HTTP {status}"));
                }
            }
            Err(error) => {
                samples.errors += 1;
                samples.first_failure.get_or_insert(error);
                sender = None;
            }
        }
    }
    samples
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let target = Arc::new(parse(&args));
    let budget = Arc::new(AtomicUsize::new(args.requests.unwrap_or(usize::MAX)));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let ramp = Duration::from_millis(args.ramp_ms);
    let workers: Vec<_> = (0..args.connections)
        .map(|i| {
            let delay = ramp.mul_f64(i as f64 / args.connections.max(1) as f64);
            tokio::spawn(worker(
                target.clone(),
                budget.clone(),
                stop.clone(),
                delay,
                Duration::from_secs_f64(args.timeout),
            ))
        })
        .collect();
    if let Some(seconds) = args.duration {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            stop.store(true, Ordering::Relaxed);
        });
    }
    let mut all = Samples::default();
    for worker in workers {
        let samples = worker.await.expect("worker");
        all.latency_us.extend(samples.latency_us);
        all.first_chunk_us.extend(samples.first_chunk_us);
        all.ok += samples.ok;
        all.non_2xx += samples.non_2xx;
        all.errors += samples.errors;
        if all.first_failure.is_none() {
            all.first_failure = samples.first_failure;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.latency_us.sort_unstable();
    all.first_chunk_us.sort_unstable();
    let report = json!({
        "label": args.label,
        "connections": args.connections,
        "ok": all.ok,
        "non_2xx": all.non_2xx,
        "errors": all.errors,
        "first_failure": all.first_failure,
        "seconds": elapsed,
        "rps": all.ok as f64 / elapsed,
        "latency_ms": {"p50": percentile(&all.latency_us, 50.0), "p90": percentile(&all.latency_us, 90.0),
                       "p99": percentile(&all.latency_us, 99.0), "max": percentile(&all.latency_us, 100.0)},
        "first_chunk_ms": {"p50": percentile(&all.first_chunk_us, 50.0), "p99": percentile(&all.first_chunk_us, 99.0)},
    });
    println!("{report}");
}
