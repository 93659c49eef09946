//! `chat-bench [--gateway-bin target/release/chat-completions] [--runs 20] [--answer-bytes 102400]
//!             [--sim-addr 127.0.0.1:PORT --gateway-url http://…/v1/chat/completions]`
//!
//! With `--gateway-url` the function is not started here: the URL is a gateway
//! already running against the simulator at `--sim-addr` (`scripts/bench.sh
//! lambda` runs the function under `cargo lambda watch` that way).
//!
//! Streams answers from the simulator (in this process) two ways: straight
//! through the upstream client (the baseline: one loopback hop plus decoding),
//! and through the chat function running as its own process. The simulator
//! records when it sent each event; for every chunk a client receives, the
//! latency is the time since the upstream made that text available. What the
//! function adds is the difference. The same answers are also streamed with
//! `tools` in the request (a plain-text answer read through the tool-call
//! scanner) to show what tool support costs answers that call nothing. It also
//! reports time to first byte and the function's peak RSS (VmHWM) while
//! streaming.

use chat_bench::{status_kib, summarize, Run, Started};
use std::time::Instant;

use futures_util::StreamExt;
use hailuo_gateway::settings::Lookup;
use hailuo_gateway::upstream::hailuo::{HailuoClient, HailuoConfig};
use hailuo_gateway::upstream::{ChatTurn, Turn, Upstream};
use hailuo_simulator::state::Settings;
use hailuo_simulator::Shared;

fn latencies_for(sim: &Shared, chat_id: &str, received: &[(Instant, usize)]) -> Vec<f64> {
    let s = sim.lock().unwrap();
    let conv = s.conversation(chat_id).expect("conversation recorded");
    chat_bench::latencies(&conv.sent, received)
}

async fn direct_run(sim: &Shared, client: &HailuoClient, prompt: &str) -> Run {
    let start = Instant::now();
    let turn = ChatTurn {
        prompt: prompt.into(),
        ..ChatTurn::default()
    };
    let events = client
        .chat("bench-direct", &Turn::Text(&turn))
        .await
        .expect("chat");
    let (chat_id, received) = chat_bench::read_upstream(events).await.expect("events");
    client
        .delete_conversation("bench-direct", &chat_id)
        .await
        .expect("delete");
    let ttfb = received[0].0.duration_since(start).as_secs_f64();
    Run {
        latencies: latencies_for(sim, &chat_id, &received),
        ttfb,
    }
}

/// A tool offered with every `with_tools` request: the answer is plain text
/// all the same, read through the tool-call scanner.
fn bench_tools() -> serde_json::Value {
    serde_json::json!([{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

async fn gateway_run(
    sim: &Shared,
    http: &reqwest::Client,
    url: &str,
    prompt: &str,
    with_tools: bool,
) -> Run {
    let mut body = serde_json::json!({"model": "hailuo", "stream": true, "messages": [{"role": "user", "content": prompt}]});
    if with_tools {
        body["tools"] = bench_tools();
    }
    let start = Instant::now();
    let response = http
        .post(url)
        .bearer_auth("bench-gateway")
        .json(&body)
        .send()
        .await
        .expect("request");
    let (chat_id, received) = chat_bench::read_chat_stream(response)
        .await
        .expect("a whole answer");
    let ttfb = received[0].0.duration_since(start).as_secs_f64();
    Run {
        latencies: latencies_for(sim, &chat_id, &received),
        ttfb,
    }
}

/// A 20 MB PDF served from loopback, fetched, uploaded to the simulator's
/// OSS and chatted about: wall time to the first answer chunk and to the end,
/// and the function's peak RSS growth (VmHWM reset before each request).
async fn file_bench(http: &reqwest::Client, url: &str, pid: u32, runs: usize) {
    const SIZE: usize = 20 * 1024 * 1024;
    let mut pdf = b"%PDF-1.7\n".to_vec();
    let mut x: u32 = 1;
    while pdf.len() < SIZE {
        // Incompressible filler, as real PDFs are.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        pdf.extend_from_slice(&x.to_le_bytes());
    }
    pdf.truncate(SIZE);
    let pdf = axum::body::Bytes::from(pdf);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let file_url = format!("http://{}/report.pdf", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/report.pdf",
        axum::routing::get(move || {
            let pdf = pdf.clone();
            async move { ([("content-type", "application/pdf")], pdf) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let body = serde_json::json!({"model": "hailuo", "stream": true, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "summarize"}, {"type": "file", "file_url": {"url": file_url}}]}]});
    let (mut first, mut whole, mut growth) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let before = status_kib(pid, "VmRSS:");
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        let start = Instant::now();
        let response = http
            .post(url)
            .bearer_auth("bench-files")
            .json(&body)
            .send()
            .await
            .expect("request");
        assert!(response.status().is_success(), "{}", response.status());
        let mut stream = response.bytes_stream();
        let (mut got_first, mut buffer, mut content) = (None, String::new(), String::new());
        while let Some(piece) = stream.next().await {
            buffer.push_str(&String::from_utf8_lossy(&piece.expect("body")));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                let Some(data) = frame.trim().strip_prefix("data: ") else {
                    continue;
                };
                let chunk: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
                if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str() {
                    if !text.is_empty() && got_first.is_none() {
                        got_first = Some(start.elapsed());
                    }
                    content.push_str(text);
                }
            }
        }
        assert!(
            content.contains(&format!("{SIZE} bytes sha256=")),
            "the simulator did not see the file: {content:?}"
        );
        first.push(got_first.unwrap_or_default().as_secs_f64());
        whole.push(start.elapsed().as_secs_f64());
        growth.push(status_kib(pid, "VmHWM:").saturating_sub(before) as f64 / 1024.0);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("\nA 20 MB PDF by URL from loopback ({runs} runs, medians): fetch, upload to the simulator's OSS, chat:\n");
    // The first request's growth is the honest one: later requests reuse
    // memory the allocator kept from earlier ones.
    let first_growth = growth[0];
    println!(
        "| first answer chunk | whole answer | peak RSS growth, first request | largest | target |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {:.0} ms | {:.0} ms | {first_growth:.1} MB | {:.1} MB | < 80 MB (3 × 20 MB + 20 MB) |",
        median(&mut first) * 1000.0,
        median(&mut whole) * 1000.0,
        growth.iter().copied().fold(0.0, f64::max)
    );
}

#[tokio::main]
async fn main() {
    let mut gateway_bin = "target/release/chat-completions".to_string();
    let mut runs = 20usize;
    let mut answer_bytes = 102_400usize;
    let mut sim_addr = "127.0.0.1:0".to_string();
    let mut gateway_url: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--gateway-bin" => gateway_bin = args.next().unwrap(),
            "--sim-addr" => sim_addr = args.next().unwrap(),
            "--gateway-url" => gateway_url = args.next(),
            "--runs" => runs = args.next().unwrap().parse().unwrap(),
            "--answer-bytes" => answer_bytes = args.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }

    let (sim, sim_url) = chat_bench::start_simulator(
        &sim_addr,
        Settings {
            pace_ms: 1,
            chunk_bytes: 100,
            heartbeat_every: 20,
            ..Settings::default()
        },
    )
    .await;

    let (url, gateway) = match gateway_url {
        Some(url) => (url, None),
        None => {
            // The file benchmark serves its PDF from loopback.
            let started = Started::gateway(
                &gateway_bin,
                &sim_url,
                &[("FILE_URL_ALLOW_PRIVATE", "true")],
            )
            .wait_until_up();
            let url = format!("http://127.0.0.1:{}/v1/chat/completions", started.port);
            (url, Some(started))
        }
    };
    let pid = gateway.as_ref().map(Started::pid);
    let http = reqwest::Client::new();
    let idle_rss = pid.map(|pid| status_kib(pid, "VmRSS:"));

    let sim_base = sim_url.clone();
    let config = HailuoConfig::from_lookup(&Lookup::new(&move |k| {
        (k == "HAILUO_BASE_URL").then(|| sim_base.clone())
    }));
    let direct = HailuoClient::new(config).unwrap();
    let prompt = format!("benchmark [sim:len={answer_bytes}]");

    // Warm up both paths (device registration, connection pools).
    direct_run(&sim, &direct, "warm up").await;
    gateway_run(&sim, &http, &url, "warm up", false).await;
    gateway_run(&sim, &http, &url, "warm up", true).await;

    let mut direct_runs = Vec::new();
    let mut gateway_runs = Vec::new();
    let mut tools_runs = Vec::new();
    for _ in 0..runs {
        direct_runs.push(direct_run(&sim, &direct, &prompt).await);
        gateway_runs.push(gateway_run(&sim, &http, &url, &prompt, false).await);
        tools_runs.push(gateway_run(&sim, &http, &url, &prompt, true).await);
    }
    // Time to first byte on short answers, where it dominates.
    let mut direct_short = Vec::new();
    let mut gateway_short = Vec::new();
    for _ in 0..runs {
        direct_short.push(direct_run(&sim, &direct, "short").await);
        gateway_short.push(gateway_run(&sim, &http, &url, "short", false).await);
    }
    let peak_rss = pid.map(|pid| status_kib(pid, "VmHWM:"));

    let (d50, d99, _, dn) = summarize(&direct_runs);
    let (g50, g99, _, gn) = summarize(&gateway_runs);
    let (t50, t99, _, tn) = summarize(&tools_runs);
    let (_, _, dttfb, _) = summarize(&direct_short);
    let (_, _, gttfb, _) = summarize(&gateway_short);
    let ms = |s: f64| format!("{:.3} ms", s * 1000.0);
    println!("chat-bench: {runs} streamed answers of {answer_bytes} bytes each way, simulator on loopback\n");
    println!(
        "| measure | upstream client alone | through the chat function | added by the function |"
    );
    println!("|---|---|---|---|");
    println!(
        "| per-chunk latency p50 ({dn} / {gn} chunks) | {} | {} | {} |",
        ms(d50),
        ms(g50),
        ms(g50 - d50)
    );
    println!(
        "| per-chunk latency p99 | {} | {} | {} |",
        ms(d99),
        ms(g99),
        ms(g99 - d99)
    );
    println!(
        "| time to first byte p50 (short answers) | {} | {} | {} |",
        ms(dttfb),
        ms(gttfb),
        ms(gttfb - dttfb)
    );
    println!("\nThe same answers with `tools` in the request (plain text, read through the tool-call scanner):\n");
    println!("| measure | without tools | with tools | added by tools |");
    println!("|---|---|---|---|");
    println!(
        "| per-chunk latency p50 ({gn} / {tn} chunks) | {} | {} | {} |",
        ms(g50),
        ms(t50),
        ms(t50 - g50)
    );
    println!(
        "| per-chunk latency p99 | {} | {} | {} |",
        ms(g99),
        ms(t99),
        ms(t99 - g99)
    );
    if let Some(pid) = pid {
        file_bench(&http, &url, pid, runs.clamp(1, 5)).await;
    }
    if let (Some(idle), Some(peak)) = (idle_rss, peak_rss) {
        println!(
            "\nchat function RSS: {:.1} MB idle, {:.1} MB peak (VmHWM) after streaming",
            idle as f64 / 1024.0,
            peak as f64 / 1024.0
        );
    }
}
