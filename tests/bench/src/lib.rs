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

/// A gateway process started for a benchmark, killed when dropped.
pub struct Started {
    pub child: std::process::Child,
    pub port: u16,
}

impl Started {
    /// `bin` in local-server mode on a free loopback port, against the
    /// simulator at `sim_url`, logging warnings only; `env` is added.
    pub fn gateway(bin: &str, sim_url: &str, env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = std::process::Command::new(bin);
        command
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

/// The Hailuo simulator on a free loopback port in this process: its state
/// (settings, and what it sent when) and its base URL.
pub async fn start_simulator(
    settings: hailuo_simulator::state::Settings,
) -> (hailuo_simulator::Shared, String) {
    let mut state = hailuo_simulator::state::State::default();
    state.settings = settings;
    let sim: hailuo_simulator::Shared = std::sync::Arc::new(std::sync::Mutex::new(state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(hailuo_simulator::serve(
        listener,
        sim.clone(),
        hailuo_simulator::Protocol::Hailuo,
    ));
    (sim, url)
}
