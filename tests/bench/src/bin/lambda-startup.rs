//! Process start → ready of each Lambda bootstrap, as Lambda sees it.
//!
//! A Lambda function is ready when its runtime asks the Runtime API for its
//! first invocation (`GET /2018-06-01/runtime/invocation/next`): everything
//! `main` builds once (tracing, settings, the HTTP client and its TLS roots,
//! the AWS SDK configuration in secret mode) happens before. This starts each
//! bootstrap against a Runtime API of its own on loopback, times spawn →
//! that first request, and kills the process; `--runs` times each, in header
//! mode and in secret mode (no AWS call is made before the first invocation:
//! the endpoint is a closed port, and a call would show as a failure).
//!
//! What a bootstrap's size costs before the process starts, which loopback
//! cannot show, is measured beside it: the size of the zip Lambda downloads
//! (`sam deploy` zips with deflate at zlib's default level, 6), the time to
//! inflate it, and start → ready with the bootstrap's pages dropped from the
//! page cache first (`posix_fadvise(DONTNEED)`: read from disk, as at a host's
//! first start).
//!
//!   lambda-startup --lambda-dir target/lambda [--runs 30]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// A Runtime API that reports when the first `/next` arrives, then holds it.
fn runtime_api() -> (String, mpsc::Receiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = listener.local_addr().expect("an address").to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                if seen.starts_with(b"GET /2018-06-01/runtime/invocation/next") {
                    let _ = tx.send(Instant::now());
                }
                // Held open: the function waits for an invocation that never comes.
                std::thread::sleep(Duration::from_secs(60));
            });
        }
    });
    (addr, rx)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The bootstrap as `sam deploy` zips it (deflate, level 6): its size, and
/// the median time to inflate it.
fn zipped(bootstrap: &std::path::Path, runs: usize) -> (usize, f64) {
    let bytes = std::fs::read(bootstrap).expect("the bootstrap reads");
    let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
    deflate.write_all(&bytes).expect("deflate");
    let zipped = deflate.finish().expect("deflate");
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            let mut out = Vec::with_capacity(bytes.len());
            flate2::read::DeflateDecoder::new(&zipped[..])
                .read_to_end(&mut out)
                .expect("inflate");
            assert_eq!(out.len(), bytes.len());
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (zipped.len(), percentile(&times, 0.5))
}

/// Drops the file's pages from the page cache, so that the next start reads
/// it from disk.
fn evict(file: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(file).expect("the bootstrap opens");
    // SAFETY: a valid descriptor; the call only advises the kernel.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise");
}

fn main() {
    let dir = PathBuf::from(arg("--lambda-dir").unwrap_or_else(|| "target/lambda".into()));
    let runs: usize = arg("--runs").and_then(|r| r.parse().ok()).unwrap_or(30);
    let mut functions: Vec<String> = std::fs::read_dir(&dir)
        .expect("the Lambda build directory (cargo lambda build --release)")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("bootstrap").is_file())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    functions.sort();
    println!("| function | bootstrap | zipped | inflate | mode | median | p90 | max |");
    println!("|---|---|---|---|---|---|---|---|");
    for function in &functions {
        let bootstrap = dir.join(function).join("bootstrap");
        let size = std::fs::metadata(&bootstrap).map(|m| m.len()).unwrap_or(0);
        let (zip_size, inflate) = zipped(&bootstrap, runs);
        let mut first = true;
        for (mode, secret, cold) in [
            ("header", false, false),
            ("secret", true, false),
            ("header, from disk", false, true),
        ] {
            let mut times = Vec::with_capacity(runs);
            for _ in 0..runs {
                if cold {
                    evict(&bootstrap);
                }
                let (api, ready) = runtime_api();
                let mut command = Command::new(&bootstrap);
                command
                    .env_clear()
                    .env("AWS_LAMBDA_RUNTIME_API", &api)
                    .env("AWS_LAMBDA_FUNCTION_NAME", function)
                    .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
                    .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
                    .env("AWS_REGION", "us-east-1")
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                if secret {
                    command
                        .env("TOKENS_SECRET_ID", "bench/tokens")
                        .env("TOKEN_STATUS_SECRET_ID", "bench/status")
                        .env("AWS_ACCESS_KEY_ID", "bench")
                        .env("AWS_SECRET_ACCESS_KEY", "bench")
                        .env("AWS_EC2_METADATA_DISABLED", "true")
                        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
                }
                let started = Instant::now();
                let mut child = command.spawn().expect("the bootstrap starts");
                let at = ready.recv_timeout(Duration::from_secs(10));
                let _ = child.kill();
                let _ = child.wait();
                match at {
                    Ok(at) => times.push(at.duration_since(started).as_secs_f64() * 1000.0),
                    Err(_) => panic!("{function} ({mode}) never asked for an invocation"),
                }
            }
            times.sort_by(f64::total_cmp);
            let sizes = if std::mem::take(&mut first) {
                format!(
                    "{:.2} MiB ({size}) | {:.2} MiB ({zip_size}) | {inflate:.1} ms",
                    size as f64 / 1_048_576.0,
                    zip_size as f64 / 1_048_576.0,
                )
            } else {
                " | | ".into()
            };
            println!(
                "| {function} | {sizes} | {mode} | {:.1} ms | {:.1} ms | {:.1} ms |",
                percentile(&times, 0.5),
                percentile(&times, 0.9),
                times[times.len() - 1],
            );
        }
    }
}
