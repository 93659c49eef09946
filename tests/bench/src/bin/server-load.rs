//! `server-load [--server-bin target/server/gateway] [--levels 100,300,1000]
//!              [--seconds 15] [--pace-ms 100] [--chunk-bytes 50] [--answer-bytes 2000]
//!              [--split-cores] [--server-url URL --sim-addr 0.0.0.0:18080]`
//!
//! Holds N streamed chats open at once against the self-hosted `server` (its
//! own process, header mode, one token per stream so no stream waits for a
//! busy account), the Hailuo simulator in this process, for `--seconds` per
//! level: each of N workers streams an answer to its `[DONE]`, checks it, and
//! starts the next (the workers' starts spread over one event interval). A
//! stream that is not a 200, carries an error chunk, ends
//! without `[DONE]` or is short of the answer's bytes is an error.
//!
//! Per-chunk latency is the time from the simulator sending a piece of text to
//! this process holding it (the simulator records each send on the same
//! clock). The same load is also run straight through the upstream client,
//! without the server: that is the load generator's and the simulator's own
//! share of the latency at that concurrency (its ceiling), so what the server
//! adds is the difference. The server's RSS is read from `/proc` (peak:
//! `VmHWM`, reset before each level through `clear_refs`).
//!
//! `--split-cores` gives the server the last CPU to itself and this process
//! (the simulator and the clients) the others, with `taskset`: on a machine
//! this small the generator's own tail otherwise hides the server's.
//!
//! `--server-url http://host:8080` measures a server already running on
//! another machine instead, so that the generator's tail is not the server's
//! CPU's: start it there in header mode with `HAILUO_BASE_URL` at this
//! machine's simulator, bound where it can reach it (`--sim-addr
//! 0.0.0.0:18080`). Latencies are still taken on this process's clock (the
//! simulator's send, this process's receipt); the server's RSS is left to
//! that machine (`VmHWM` in its `/proc/<pid>/status`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat_bench::{percentile, status_kib, Started};
use hailuo_gateway::settings::Lookup;
use hailuo_gateway::upstream::hailuo::{HailuoClient, HailuoConfig};
use hailuo_gateway::upstream::{ChatTurn, Turn, Upstream};
use hailuo_simulator::state::Settings;
use hailuo_simulator::Shared;

/// Pin every thread of `pid` to `cpus` (a `taskset` list, `0-2`).
fn pin(pid: u32, cpus: &str) {
    let status = std::process::Command::new("taskset")
        .args(["--all-tasks", "--cpu-list", "--pid", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("taskset (util-linux) runs");
    assert!(status.success(), "taskset {cpus} {pid} failed");
}

/// One finished stream: the conversation and when each piece arrived.
struct Stream {
    chat_id: String,
    received: Vec<(Instant, usize)>,
}

#[derive(Default)]
struct Tally {
    streams: Vec<Stream>,
    errors: Vec<String>,
}

async fn through_server(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    prompt: &str,
    answer_bytes: usize,
) -> Result<Stream, String> {
    let body = serde_json::json!({"model": "hailuo", "stream": true,
        "messages": [{"role": "user", "content": prompt}]});
    let response = http
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("request: {e}"))?;
    let (chat_id, received) = chat_bench::read_chat_stream(response).await?;
    let have = received.last().map_or(0, |(_, have)| *have);
    if have < answer_bytes {
        return Err(format!("[DONE] after {have} of {answer_bytes} bytes"));
    }
    Ok(Stream { chat_id, received })
}

async fn direct(client: &HailuoClient, token: &str, prompt: &str) -> Result<Stream, String> {
    let turn = ChatTurn {
        prompt: prompt.into(),
        ..ChatTurn::default()
    };
    let events = client
        .chat(token, &Turn::Text(&turn))
        .await
        .map_err(|e| e.to_string())?;
    let (chat_id, received) = chat_bench::read_upstream(events).await?;
    client
        .delete_conversation(token, &chat_id)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Stream { chat_id, received })
}

/// Latencies of every chunk of every stream, in seconds, sorted.
fn all_latencies(sim: &Shared, streams: &[Stream]) -> Vec<f64> {
    let s = sim.lock().unwrap();
    let mut all = Vec::new();
    for stream in streams {
        let conv = s
            .conversation(&stream.chat_id)
            .expect("conversation recorded");
        all.extend(chat_bench::latencies(&conv.sent, &stream.received));
    }
    all.sort_by(f64::total_cmp);
    all
}

/// N workers, each streaming answers back to back until the deadline. Their
/// starts are spread over `stagger` (one event interval): started together,
/// every stream would get its events in the same instant, a burst of N every
/// interval that no real crowd of callers makes.
async fn hold<F, Fut>(n: usize, seconds: u64, stagger: Duration, one: F) -> Tally
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Stream, String>> + Send,
{
    let tally = Arc::new(Mutex::new(Tally::default()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for worker in 0..n {
        let (one, tally) = (one.clone(), tally.clone());
        let offset = stagger * worker as u32 / n as u32;
        workers.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut round = 0;
            while Instant::now() < deadline {
                let result = one(worker, round).await;
                let mut t = tally.lock().unwrap();
                match result {
                    Ok(stream) => t.streams.push(stream),
                    Err(e) => t.errors.push(e),
                }
                round += 1;
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    Arc::try_unwrap(tally)
        .ok()
        .expect("workers done")
        .into_inner()
        .unwrap()
}

#[tokio::main]
async fn main() {
    let mut server_bin = "target/server/gateway".to_string();
    let mut levels = vec![100usize, 300, 1000];
    let mut seconds = 15u64;
    let mut pace_ms = 100u64;
    let mut chunk_bytes = 50usize;
    let mut answer_bytes = 2000usize;
    let mut split_cores = false;
    let mut server_url: Option<String> = None;
    let mut sim_addr = "127.0.0.1:0".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().expect("a value after the flag");
        match a.as_str() {
            "--server-bin" => server_bin = value(),
            "--levels" => {
                levels = value()
                    .split(',')
                    .map(|l| l.parse().expect("levels"))
                    .collect()
            }
            "--seconds" => seconds = value().parse().unwrap(),
            "--pace-ms" => pace_ms = value().parse().unwrap(),
            "--chunk-bytes" => chunk_bytes = value().parse().unwrap(),
            "--answer-bytes" => answer_bytes = value().parse().unwrap(),
            "--split-cores" => split_cores = true,
            "--server-url" => server_url = Some(value().trim_end_matches('/').to_string()),
            "--sim-addr" => sim_addr = value(),
            other => panic!("unknown argument {other}"),
        }
    }

    assert!(
        !(split_cores && server_url.is_some()),
        "--split-cores pins a local server; --server-url has none"
    );
    let (sim, sim_url) = chat_bench::start_simulator(
        &sim_addr,
        Settings {
            pace_ms,
            chunk_bytes,
            heartbeat_every: 20,
            ..Settings::default()
        },
    )
    .await;

    // The server: this machine's own process, or one elsewhere (no pid here).
    let (local, base) = match &server_url {
        Some(url) => (None, url.clone()),
        None => {
            let server = Started::gateway(&server_bin, &sim_url, &[]).wait_until_up();
            let base = format!("http://127.0.0.1:{}", server.port);
            (Some(server), base)
        }
    };
    let pid = local.as_ref().map(Started::pid);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let placement = if let Some(url) = &server_url {
        format!("the server at {url}, the simulator at {sim_url} and the generator here")
    } else if let Some(pid) = pid.filter(|_| split_cores && cores >= 2) {
        let last = cores - 1;
        pin(pid, &last.to_string());
        pin(std::process::id(), &format!("0-{}", last - 1));
        format!(
            "the server alone on CPU {last}, the generator on CPUs 0-{}",
            last - 1
        )
    } else {
        "the server and the generator sharing every CPU".to_string()
    };
    let url = format!("{base}/v1/chat/completions");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let sim_base = sim_url.clone();
    let config = HailuoConfig::from_lookup(&Lookup::new(&move |k| {
        (k == "HAILUO_BASE_URL").then(|| sim_base.clone())
    }));
    let upstream = Arc::new(HailuoClient::new(config).unwrap());
    let prompt = format!("load [sim:len={answer_bytes}]");
    let mb = |kib: u64| format!("{:.1} MB", kib as f64 / 1024.0);
    let idle = pid.map_or("not read here".into(), |pid| mb(status_kib(pid, "VmRSS:")));

    println!(
        "server-load: answers of {answer_bytes} bytes in {chunk_bytes}-byte events {pace_ms} ms apart, \
         {seconds} s per level, {placement}, server idle RSS {idle}\n"
    );
    println!("| concurrent streams | path | streams done | errors | chunks | per-chunk p50 | per-chunk p99 | server peak RSS |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    let ms = |s: f64| format!("{:.2} ms", s * 1000.0);
    let mut failed = false;
    for &n in &levels {
        // The generator's own ceiling: the same streams without the server.
        let (client, p) = (upstream.clone(), prompt.clone());
        let stagger = Duration::from_millis(pace_ms);
        let base = hold(n, seconds, stagger, move |w, _| {
            let (client, p) = (client.clone(), p.clone());
            async move { direct(&client, &format!("direct-{w}"), &p).await }
        })
        .await;
        let base_lat = all_latencies(&sim, &base.streams);
        println!(
            "| {n} | upstream client alone | {} | {} | {} | {} | {} | — |",
            base.streams.len(),
            base.errors.len(),
            base_lat.len(),
            ms(percentile(&base_lat, 0.5)),
            ms(percentile(&base_lat, 0.99)),
        );

        if let Some(pid) = pid {
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
        let (http2, url2, p) = (http.clone(), url.clone(), prompt.clone());
        let through = hold(n, seconds, stagger, move |w, _| {
            let (http, url, p) = (http2.clone(), url2.clone(), p.clone());
            async move { through_server(&http, &url, &format!("load-{w}"), &p, answer_bytes).await }
        })
        .await;
        let peak = pid.map_or("—".into(), |pid| {
            format!("**{}**", mb(status_kib(pid, "VmHWM:")))
        });
        let lat = all_latencies(&sim, &through.streams);
        println!(
            "| {n} | through the server | {} | **{}** | {} | {} | **{}** | {peak} |",
            through.streams.len(),
            through.errors.len(),
            lat.len(),
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
        );
        for e in through.errors.iter().chain(&base.errors).take(5) {
            eprintln!("  error at {n}: {e}");
        }
        failed |= !through.errors.is_empty() || through.streams.is_empty();
    }
    if failed {
        std::process::exit(1);
    }
}
