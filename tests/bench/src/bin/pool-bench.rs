//! `pool-bench [--gateway-bin target/release/chat-completions] [--runs 200]
//!             [--python .venv/bin/python]`
//!
//! What the shared pool (`ACCOUNTS_TABLE`) costs a request: the same short
//! streamed chat through two chat functions in local-server mode, one with
//! the in-process pool alone and one with the accounts table, against the
//! MiniMax Code simulator in this process and moto's DynamoDB on loopback
//! (`tests/e2e/aws/serial_moto.py`, the tests' engine). The requests
//! alternate between the two, one at a time, so both see the same machine.
//!
//! The table's calls are counted by operation (`X-Amz-Target`) by a proxy in
//! this process in front of moto, where the function's `AWS_ENDPOINT_URL`
//! points. Time is the client's: to the first byte of the answer and to its
//! `[DONE]`. moto is a Python server and much slower than DynamoDB, so the
//! milliseconds are an upper bound for loopback, not DynamoDB's; the calls
//! are what a request costs anywhere.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat_bench::{code_login, free_port, percentile, Started};
use futures_util::StreamExt;
use hailuo_simulator::code::{CodeState, Script};

type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

/// Forwards every request to moto, counting it by operation.
async fn proxy(
    axum::extract::State((http, moto, counts)): axum::extract::State<(
        reqwest::Client,
        String,
        Counts,
    )>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let operation = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.rsplit('.').next().unwrap_or(v).to_string())
        .unwrap_or_else(|| "other".into());
    *counts.lock().unwrap().entry(operation).or_default() += 1;
    let body = axum::body::to_bytes(body, 8 << 20)
        .await
        .unwrap_or_default();
    let mut out = http.request(parts.method, format!("{moto}{}", parts.uri));
    for (name, value) in &parts.headers {
        if name != "host" {
            out = out.header(name, value);
        }
    }
    match out.body(body).send().await {
        Ok(answer) => {
            let mut response = axum::http::Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                response = response.header(name, value);
            }
            let bytes = answer.bytes().await.unwrap_or_default();
            response.body(axum::body::Body::from(bytes)).unwrap()
        }
        Err(e) => axum::http::Response::builder()
            .status(502)
            .body(axum::body::Body::from(e.to_string()))
            .unwrap(),
    }
}

/// One short streamed chat: (time to first byte, time to `[DONE]`).
async fn chat(http: &reqwest::Client, url: &str, token: &str) -> (f64, f64) {
    let started = Instant::now();
    let response = http
        .post(url)
        .bearer_auth(token)
        .json(&serde_json::json!({"model": "MiniMax-M3", "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("the function answers");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let mut body = response.bytes_stream();
    let mut first = None;
    let mut text = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("the stream reads");
        first.get_or_insert_with(|| started.elapsed().as_secs_f64());
        text.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("[DONE]") && !text.contains("\"error\""),
        "{text}"
    );
    (first.unwrap_or_default(), started.elapsed().as_secs_f64())
}

fn wait_port(port: u16) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "moto did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::main]
async fn main() {
    let mut gateway_bin = "target/release/chat-completions".to_string();
    let mut python = ".venv/bin/python".to_string();
    let mut runs = 200usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--gateway-bin" => gateway_bin = args.next().unwrap(),
            "--python" => python = args.next().unwrap(),
            "--runs" => runs = args.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }

    let mut state = CodeState::with_region("en");
    state.settings.pace_ms = 1;
    let (sim, sim_url) = chat_bench::start_code_simulator(state).await;
    let http = reqwest::Client::new();
    let token = code_login(&http, &sim_url).await;

    let moto_port = free_port();
    let mut moto = std::process::Command::new(&python)
        .args(["tests/e2e/aws/serial_moto.py", "-p", &moto_port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("moto starts (scripts/setup.sh makes the venv)");
    wait_port(moto_port);
    let moto_url = format!("http://127.0.0.1:{moto_port}");
    let aws = [
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let made = std::process::Command::new(&python)
        .args(["tests/e2e/aws/table.py", "bench-accounts"])
        .env("MOTO_URL", &moto_url)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .envs(aws)
        .status()
        .expect("the table is made");
    assert!(made.success());

    let counts: Counts = Arc::default();
    let proxy_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy_listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(proxy).with_state((
        reqwest::Client::new(),
        moto_url.clone(),
        counts.clone(),
    ));
    tokio::spawn(async move { axum::serve(proxy_listener, app).await });

    let code = [
        ("UPSTREAM", "minimax-code"),
        ("MINIMAX_CODE_BASE_URL", sim_url.as_str()),
        ("MINIMAX_CODE_ACCOUNT_URL", sim_url.as_str()),
        ("MINIMAX_CODE_PLATFORM_URL", sim_url.as_str()),
    ];
    let local = Started::gateway(&gateway_bin, &sim_url, &code).wait_until_up();
    let mut shared_env: Vec<(&str, &str)> = code.to_vec();
    shared_env.extend(aws);
    shared_env.extend([
        ("ACCOUNTS_TABLE", "bench-accounts"),
        ("AWS_ENDPOINT_URL", proxy_url.as_str()),
    ]);
    let shared = Started::gateway(&gateway_bin, &sim_url, &shared_env).wait_until_up();
    let url = |g: &Started| format!("http://127.0.0.1:{}/v1/chat/completions", g.port);
    let (local_url, shared_url) = (url(&local), url(&shared));

    let script = || {
        sim.lock().unwrap().script(Script {
            account: None,
            model: None,
            blocks: vec![serde_json::json!({"type": "text", "text": "Hello there."})],
            stop_reason: None,
        })
    };
    for _ in 0..5 {
        script();
        chat(&http, &local_url, &token).await;
        script();
        chat(&http, &shared_url, &token).await;
    }
    counts.lock().unwrap().clear();
    let (mut local_runs, mut shared_runs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        script();
        local_runs.push(chat(&http, &local_url, &token).await);
        script();
        shared_runs.push(chat(&http, &shared_url, &token).await);
    }
    let calls = counts.lock().unwrap().clone();
    let _ = moto.kill();
    let _ = moto.wait();

    let stats = |runs: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(pick).collect();
        v.sort_by(f64::total_cmp);
        (percentile(&v, 0.5) * 1000.0, percentile(&v, 0.9) * 1000.0)
    };
    println!(
        "pool-bench: {runs} short streamed chats each way, one at a time, MiniMax Code simulator and moto's DynamoDB on loopback\n"
    );
    println!("| measure | in-process pool | with ACCOUNTS_TABLE | added |");
    println!("|---|---|---|---|");
    for (name, pick) in [
        (
            "time to first byte",
            (|r: &(f64, f64)| r.0) as fn(&(f64, f64)) -> f64,
        ),
        ("time to [DONE]", |r: &(f64, f64)| r.1),
    ] {
        let (l50, l90) = stats(&local_runs, pick);
        let (s50, s90) = stats(&shared_runs, pick);
        println!(
            "| {name}, median / p90 | {l50:.2} / {l90:.2} ms | {s50:.2} / {s90:.2} ms | {:.2} / {:.2} ms |",
            s50 - l50,
            s90 - l90
        );
    }
    let total: u64 = calls.values().sum();
    let per: Vec<String> = calls
        .iter()
        .map(|(op, n)| format!("{op} {:.2}", *n as f64 / runs as f64))
        .collect();
    println!(
        "\nDynamoDB calls per request: {:.2} ({})",
        total as f64 / runs as f64,
        per.join(", ")
    );
}
