//! `code-bench [--gateway-bin target/release/chat-completions] [--runs 20] [--answer-bytes 102400]`
//!
//! The MiniMax Code path, measured as `chat-bench` measures the Hailuo one:
//! answers streamed from the simulator of MiniMax Code's gateway (in this
//! process) two ways, straight through the adapter (`CodeClient`: Anthropic
//! SSE decoded into events, one loopback hop) and through the chat function
//! as its own process (Anthropic SSE in, OpenAI chunks out). The simulator
//! records when it sent each piece of text; for every chunk a client
//! receives, the latency is the time since the upstream made that text
//! available. What the function adds is the difference. Also time to first
//! byte on short answers and the function's peak RSS (VmHWM) while streaming.

use std::time::Instant;

use chat_bench::{status_kib, summarize, Run, Started};
use hailuo_gateway::conversation::{
    Conversation, Message, ResponseFormat, Role, ThinkingWanted, ToolChoice,
};
use hailuo_gateway::settings::Lookup;
use hailuo_gateway::upstream::code::{CodeClient, CodeConfig};
use hailuo_gateway::upstream::{Turn, Upstream};
use hailuo_simulator::code::{CodeState, Script, SharedCode};

/// Latencies of the newest answer the simulator sent.
fn latencies_for(sim: &SharedCode, received: &[(Instant, usize)]) -> Vec<f64> {
    let sent = sim.lock().unwrap().answers_sent.last().cloned();
    let sent = sent.expect("an answer was sent");
    let sent = sent.lock().unwrap();
    chat_bench::latencies(&sent, received)
}

fn script(sim: &SharedCode, bytes: usize) {
    const FILLER: &str = "The quick brown fox jumps over the lazy dog. 敏捷的棕色狐狸跳过了懒狗。";
    let mut text = String::new();
    while text.len() < bytes {
        text.push_str(FILLER);
    }
    sim.lock().unwrap().script(Script {
        account: None,
        model: None,
        blocks: vec![serde_json::json!({"type": "text", "text": text})],
        stop_reason: None,
    });
}

fn conversation(text: &str) -> Conversation {
    Conversation {
        model: "MiniMax-M3".into(),
        messages: vec![Message {
            role: Role::User,
            text: text.into(),
            ..Message::default()
        }],
        tools: vec![],
        tool_choice: ToolChoice::None,
        parallel_tool_calls: true,
        response_format: ResponseFormat::Text,
        thinking: ThinkingWanted::Default,
        max_tokens: None,
        sampling: Default::default(),
        keep_conversation: false,
        conversation_id: None,
    }
}

async fn direct_run(sim: &SharedCode, client: &CodeClient, token: &str, bytes: usize) -> Run {
    script(sim, bytes);
    let c = conversation("benchmark");
    let start = Instant::now();
    let events = client
        .chat(
            token,
            &Turn::Conversation {
                conversation: &c,
                files: &[],
            },
        )
        .await
        .expect("chat");
    let (_, received) = chat_bench::read_upstream(events).await.expect("events");
    Run {
        ttfb: received[0].0.duration_since(start).as_secs_f64(),
        latencies: latencies_for(sim, &received),
    }
}

async fn gateway_run(
    sim: &SharedCode,
    http: &reqwest::Client,
    url: &str,
    token: &str,
    bytes: usize,
) -> Run {
    script(sim, bytes);
    let body = serde_json::json!({"model": "MiniMax-M3", "stream": true,
        "messages": [{"role": "user", "content": "benchmark"}]});
    let start = Instant::now();
    let response = http
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let (_, received) = chat_bench::read_chat_stream(response)
        .await
        .expect("a whole answer");
    Run {
        ttfb: received[0].0.duration_since(start).as_secs_f64(),
        latencies: latencies_for(sim, &received),
    }
}

#[tokio::main]
async fn main() {
    let mut gateway_bin = "target/release/chat-completions".to_string();
    let mut runs = 20usize;
    let mut answer_bytes = 102_400usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--gateway-bin" => gateway_bin = args.next().unwrap(),
            "--runs" => runs = args.next().unwrap().parse().unwrap(),
            "--answer-bytes" => answer_bytes = args.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    // The same pacing as chat-bench's Hailuo simulator: 100-character
    // deltas 1 ms apart.
    let mut state = CodeState::with_region("en");
    state.settings.pace_ms = 1;
    state.settings.chunk_chars = 100;
    let (sim, sim_url) = chat_bench::start_code_simulator(state).await;

    let http = reqwest::Client::new();
    let token = chat_bench::code_login(&http, &sim_url).await;
    let env = [
        ("UPSTREAM", "minimax-code"),
        ("MINIMAX_CODE_BASE_URL", sim_url.as_str()),
        ("MINIMAX_CODE_ACCOUNT_URL", sim_url.as_str()),
        ("MINIMAX_CODE_PLATFORM_URL", sim_url.as_str()),
    ];
    let gateway = Started::gateway(&gateway_bin, &sim_url, &env).wait_until_up();
    let url = format!("http://127.0.0.1:{}/v1/chat/completions", gateway.port);
    let pid = gateway.pid();
    let idle_rss = status_kib(pid, "VmRSS:");
    let config = CodeConfig::from_lookup(&Lookup::new(&|k| {
        env.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.to_string())
    }));
    let direct = CodeClient::new(config).unwrap();

    direct_run(&sim, &direct, &token, 1000).await;
    gateway_run(&sim, &http, &url, &token, 1000).await;
    let (mut direct_runs, mut gateway_runs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        direct_runs.push(direct_run(&sim, &direct, &token, answer_bytes).await);
        gateway_runs.push(gateway_run(&sim, &http, &url, &token, answer_bytes).await);
    }
    let (mut direct_short, mut gateway_short) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        direct_short.push(direct_run(&sim, &direct, &token, 20).await);
        gateway_short.push(gateway_run(&sim, &http, &url, &token, 20).await);
    }
    let peak_rss = status_kib(pid, "VmHWM:");
    let (d50, d99, _, dn) = summarize(&direct_runs);
    let (g50, g99, _, gn) = summarize(&gateway_runs);
    let (_, _, dttfb, _) = summarize(&direct_short);
    let (_, _, gttfb, _) = summarize(&gateway_short);
    let ms = |s: f64| format!("{:.3} ms", s * 1000.0);
    println!(
        "code-bench: {runs} streamed answers of {answer_bytes} bytes each way, MiniMax Code simulator on loopback\n"
    );
    println!("| measure | the adapter alone | through the chat function | added by the function |");
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
    println!(
        "\nchat function RSS: {:.1} MB idle, {:.1} MB peak (VmHWM) after streaming",
        idle_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
}
