//! What the benchmarks share: reading a process's memory from `/proc`.

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), 0 if absent.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A gateway process started for a benchmark, killed when dropped.
pub struct Started {
    pub child: std::process::Child,
    pub port: u16,
}

impl Started {
    /// `bin` in local-server mode on a free loopback port, against the
    /// simulator at `sim_url`, logging warnings only; `env` is added.
    pub fn gateway(bin: &str, sim_url: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut command = std::process::Command::new(bin);
        command
            .env("UPSTREAM", "hailuo")
            .env("HAILUO_BASE_URL", sim_url)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .env_remove("MAX_REQUEST_BYTES")
            .env_remove("TOKENS_FILE")
            .env_remove("TOKENS_SECRET_ID")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null());
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e} (cargo build --release)"));
        Self { child, port }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Once its port accepts connections (30 s at most).
    pub fn wait_until_up(self) -> Self {
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "the gateway did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An upstream answer read to its end: the conversation, and when each piece
/// of text arrived with the answer's length so far.
pub async fn read_upstream(
    mut events: hailuo_gateway::upstream::EventStream,
) -> Result<(String, Vec<(std::time::Instant, usize)>), String> {
    use futures_util::StreamExt;
    use hailuo_gateway::upstream::UpstreamEvent;
    let mut received = Vec::new();
    let mut have = 0;
    let mut chat_id = String::new();
    while let Some(event) = events.next().await {
        match event.map_err(|e| e.to_string())? {
            UpstreamEvent::Conversation { chat_id: id, .. } => chat_id = id,
            UpstreamEvent::Delta(d) => {
                have += d.len();
                received.push((std::time::Instant::now(), have));
            }
            UpstreamEvent::End => break,
            _ => {}
        }
    }
    Ok((chat_id, received))
}

/// The Hailuo simulator in this process on `addr` (`127.0.0.1:0`: a free
/// port): its state (settings, and what it sent when) and its base URL.
pub async fn start_simulator(
    addr: &str,
    settings: hailuo_simulator::state::Settings,
) -> (hailuo_simulator::Shared, String) {
    let mut state = hailuo_simulator::state::State::default();
    state.settings = settings;
    let sim: hailuo_simulator::Shared = std::sync::Arc::new(std::sync::Mutex::new(state));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(hailuo_simulator::serve(
        listener,
        sim.clone(),
        hailuo_simulator::Protocol::Hailuo,
    ));
    (sim, url)
}

/// The MiniMax Code simulator in this process on a free loopback port, in
/// `state`: its shared state and its base URL.
pub async fn start_code_simulator(
    state: hailuo_simulator::code::CodeState,
) -> (hailuo_simulator::code::SharedCode, String) {
    let sim: hailuo_simulator::code::SharedCode = std::sync::Arc::new(std::sync::Mutex::new(state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(hailuo_simulator::code::serve(listener, sim.clone()));
    (sim, url)
}

/// One streamed answer as a client saw it.
pub struct Run {
    /// Seconds from the upstream sending text to the client holding it, per chunk.
    pub latencies: Vec<f64>,
    pub ttfb: f64,
}

/// Per-chunk latency p50 and p99 over all runs, time to first byte p50,
/// and how many chunks there were.
pub fn summarize(runs: &[Run]) -> (f64, f64, f64, usize) {
    let mut all: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.latencies.iter().copied())
        .collect();
    all.sort_by(f64::total_cmp);
    let mut ttfb: Vec<f64> = runs.iter().map(|r| r.ttfb).collect();
    ttfb.sort_by(f64::total_cmp);
    (
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        percentile(&ttfb, 0.5),
        all.len(),
    )
}

/// The `p` quantile of sorted values (NaN when there are none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Seconds from the simulator sending text (`sent`: when, and the answer's
/// length then) to the client holding it, for each received piece.
pub fn latencies(
    sent: &[(std::time::Instant, usize)],
    received: &[(std::time::Instant, usize)],
) -> Vec<f64> {
    received
        .iter()
        .map(|(at, have)| {
            let (sent, _) = sent
                .iter()
                .find(|(_, whole)| whole >= have)
                .expect("sent event");
            at.saturating_duration_since(*sent).as_secs_f64()
        })
        .collect()
}

/// A streamed chat answer read to `[DONE]`: the conversation (from the chunk
/// id) and when each piece of content arrived with the answer's length so
/// far. An error chunk, a chunk that is not JSON, or an end without `[DONE]`
/// is an error.
pub async fn read_chat_stream(
    response: reqwest::Response,
) -> Result<(String, Vec<(std::time::Instant, usize)>), String> {
    use futures_util::StreamExt;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let mut bytes = response.bytes_stream();
    let mut buffer = Vec::new();
    let mut received = Vec::new();
    let mut have = 0;
    let mut chat_id = String::new();
    while let Some(piece) = bytes.next().await {
        let now = std::time::Instant::now();
        buffer.extend_from_slice(&piece.map_err(|e| format!("body: {e}"))?);
        while let Some(pos) = buffer.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = buffer.drain(..pos + 2).collect();
            let data = std::str::from_utf8(&frame)
                .map_err(|_| "frame is not UTF-8".to_string())?
                .trim()
                .trim_start_matches("data: ");
            if data == "[DONE]" {
                return Ok((chat_id, received));
            }
            let chunk: serde_json::Value =
                serde_json::from_str(data).map_err(|e| format!("chunk: {e}"))?;
            if chunk.get("error").is_some() {
                return Err(format!("error chunk: {}", chunk["error"]["message"]));
            }
            if chat_id.is_empty() {
                if let Some(id) = chunk["id"].as_str() {
                    chat_id = id.trim_start_matches("chatcmpl-").to_string();
                }
            }
            if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str() {
                if !text.is_empty() {
                    have += text.len();
                    received.push((now, have));
                }
            }
        }
    }
    Err(format!("stream ended without [DONE] after {have} bytes"))
}

/// An access token, by the device flow against the MiniMax Code simulator (its clock
/// moved past the poll interval rather than waited for).
pub async fn code_login(http: &reqwest::Client, sim_url: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    // A fixed verifier: PKCE only binds the poll to its start here.
    let verifier = b64.encode([7u8; 32]);
    let challenge = b64.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let start: serde_json::Value = http
        .post(format!("{sim_url}/oauth2/device/code"))
        .form(&[
            ("client_id", "mcode-public"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let control = |path: &str, body: serde_json::Value| {
        http.post(format!("{sim_url}{path}")).json(&body).send()
    };
    control(
        "/_sim/device/approve",
        serde_json::json!({"user_code": start["user_code"], "account": "bench"}),
    )
    .await
    .unwrap();
    control(
        "/_sim/clock",
        serde_json::json!({"advance_s": start["interval"]}),
    )
    .await
    .unwrap();
    let grant: serde_json::Value = http
        .post(format!("{sim_url}/oauth2/token"))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", start["device_code"].as_str().unwrap()),
            ("client_id", "mcode-public"),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    grant["access_token"]
        .as_str()
        .expect("an access token")
        .to_string()
}
