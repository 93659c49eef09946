//! `request-memory [--gateway-bin target/release/chat-completions] [--door chat|messages|responses]`
//!
//! What one request costs a door's function in memory (chat completions by
//! default; `--door messages` with the messages function's binary, `--door
//! responses` with the responses function's: the same bodies in each door's
//! dialect). The release-built
//! function runs as its own process (local-server mode, the same router Lambda
//! runs, with the default body limit), a fresh process for each body below
//! (freed memory kept by the allocator would hide the next body's cost): after
//! a warm-up request its peak RSS is reset (`/proc/<pid>/clear_refs`, 5), the
//! body is sent, and the peak (`VmHWM`) is read once the answer is in, as
//! growth over the RSS before the request. The upstream is a closed port, so valid requests end in
//! a 502 after the same parsing, flattening and upload form a real answer
//! needs. The bound checked is growth < 3 × body + 20 MB.

use chat_bench::{status_kib, Started};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const LIMIT: usize = 6 * 1024 * 1024;

/// Which door the bodies are written for, and posted to.
#[derive(Clone, Copy, PartialEq)]
enum Door {
    Chat,
    Messages,
    Responses,
}

impl Door {
    fn path(self) -> &'static str {
        match self {
            Door::Chat => "/v1/chat/completions",
            Door::Messages => "/v1/messages",
            Door::Responses => "/v1/responses",
        }
    }

    /// The body's opening: the model, what the door requires, and the
    /// name of its list of turns.
    fn head(self) -> &'static str {
        match self {
            Door::Chat => r#"{"model":"m","messages":["#,
            Door::Messages => r#"{"model":"m","max_tokens":16,"messages":["#,
            Door::Responses => r#"{"model":"m","input":["#,
        }
    }

    /// A tool taking objects of these `properties`.
    fn tool(self, i: usize, properties: &str) -> String {
        let schema = format!(r#"{{"type":"object","properties":{{{properties}}}}}"#);
        match self {
            Door::Chat => format!(
                r#"{{"type":"function","function":{{"name":"t{i}","parameters":{schema}}}}}"#
            ),
            Door::Messages => format!(r#"{{"name":"t{i}","input_schema":{schema}}}"#),
            Door::Responses => {
                format!(r#"{{"type":"function","name":"t{i}","parameters":{schema}}}"#)
            }
        }
    }

    /// An earlier assistant turn calling `f` with this JSON object as its
    /// arguments.
    fn call(self, arguments: &str) -> String {
        let text = serde_json::to_string(arguments).unwrap();
        match self {
            Door::Chat => format!(
                r#"{{"role":"assistant","content":null,"tool_calls":[{{"id":"c","type":"function","function":{{"name":"f","arguments":{text}}}}}]}}"#
            ),
            Door::Messages => format!(
                r#"{{"role":"assistant","content":[{{"type":"tool_use","id":"c","name":"f","input":{arguments}}}]}}"#
            ),
            Door::Responses => {
                format!(r#"{{"type":"function_call","call_id":"c","name":"f","arguments":{text}}}"#)
            }
        }
    }
}

static DOOR: std::sync::OnceLock<Door> = std::sync::OnceLock::new();

fn door() -> Door {
    *DOOR.get().unwrap_or(&Door::Chat)
}

/// One HTTP/1.1 POST; the status code of the answer.
fn post(port: u16, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer tok-bench\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        door().path(),
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // A server may answer (413, 400) before the whole body is in.
    let _ = s.write_all(body);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn message(content: &str) -> String {
    format!(
        r#"{{"role":"user","content":{}}}"#,
        serde_json::to_string(content).unwrap()
    )
}

/// A request whose tools `t0`, `t1`, … take objects of these `properties`
/// (the JSON text inside the braces).
fn tools_body(properties: impl Iterator<Item = String>) -> Vec<u8> {
    let tools: Vec<String> = properties
        .enumerate()
        .map(|(i, properties)| door().tool(i, &properties))
        .collect();
    format!(
        r#"{}{}],"tools":[{}]}}"#,
        door().head(),
        message("x"),
        tools.join(",")
    )
    .into_bytes()
}

/// `tools` as large as accepted (512 KiB), of the costliest JSON per byte:
/// enums of one-digit numbers (a JSON tree node, and validator entries, each).
fn tools_request() -> Vec<u8> {
    let per_tool = (512 << 10) / 128 - 120;
    tools_body((0..128).map(|_| format!(r#""x":{{"enum":[{}0]}}"#, "0,".repeat(per_tool / 2))))
}

/// Tools whose `pattern`s are short to write and costly to compile: a
/// bounded repeat of a large Unicode class is about 8 MB of regex program
/// each, so 64 tools of 4 such properties, 22 KB of JSON, ask for 2 GB; the
/// request's pattern budget (24 MiB) holds one.
fn pattern_tools_request(tools: usize, per_tool: usize) -> Vec<u8> {
    tools_body((0..tools).map(|i| {
        let properties: Vec<String> = (0..per_tool)
            .map(|j| {
                format!(
                    r#""p{j}":{{"type":"string","pattern":"[\\w\\p{{L}}]{{{}}}x"}}"#,
                    150 + (i * per_tool + j) % 40
                )
            })
            .collect();
        properties.join(",")
    }))
}

/// `{"model":"m","messages":[...],"padding":[...]}` (in the door's
/// dialect), padded near `size`.
fn request(messages: &[String], padding_item: &str, size: usize) -> Vec<u8> {
    let mut body = format!("{}{}]", door().head(), messages.join(","));
    if !padding_item.is_empty() {
        body.push_str(r#","padding":["#);
        while body.len() + padding_item.len() + 3 < size {
            body.push_str(padding_item);
            body.push(',');
        }
        body.pop();
        body.push(']');
    }
    body.push('}');
    body.into_bytes()
}

/// The function on a free port, its upstream a closed port, warmed up.
fn start(bin: &str) -> Started {
    let closed = chat_bench::free_port();
    let gateway = Started::gateway(
        bin,
        &format!("http://127.0.0.1:{closed}"),
        &[("UPSTREAM_RETRY_BACKOFF_MS", "1"), ("RUST_LOG", "error")],
    )
    .wait_until_up();
    // The first request builds the HTTP client's pools and the like.
    post(gateway.port, &request(&[message("warm")], "", 0));
    gateway
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut gateway_bin = "target/release/chat-completions".to_string();
    while let Some(a) = args.next() {
        if a == "--gateway-bin" {
            gateway_bin = args.next().expect("--gateway-bin PATH");
        } else if a == "--door" {
            let chosen = match args.next().as_deref() {
                Some("chat") => Door::Chat,
                Some("messages") => Door::Messages,
                Some("responses") => Door::Responses,
                other => panic!("--door chat|messages|responses, not {other:?}"),
            };
            DOOR.set(chosen).ok();
        }
    }
    let tiny = [message("x")];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "padding: [{\"a\":0}, …] to the limit",
            request(&tiny, r#"{"a":0}"#, LIMIT - 64),
        ),
        (
            "209,705 tiny messages",
            request(&vec![tiny[0].clone(); 209_705], "", 0),
        ),
        (
            "4,096 messages of 1.5 KB (the most accepted)",
            request(&vec![message(&"字".repeat(500)); 4096], "", 0),
        ),
        (
            "one message of 6 MB",
            request(&[message(&"a".repeat(LIMIT - 100))], "", 0),
        ),
        (
            "6 MB of CJK in one message",
            request(&[message(&"海".repeat((LIMIT - 100) / 3))], "", 0),
        ),
        (
            // Each rewritten to `\ufffd` in a copy of the body (openai/body.rs).
            "6 MB of lone surrogate escapes (\\ud83d) in one message",
            request(
                &[format!(
                    r#"{{"role":"user","content":"{}"}}"#,
                    r"\ud83d".repeat((LIMIT - 100) / 6)
                )],
                "",
                0,
            ),
        ),
        (
            "padding: nested arrays",
            request(&tiny, "[[[[[[[[1]]]]]]]]", LIMIT - 64),
        ),
        (
            "padding: long strings",
            request(&tiny, &format!("\"{}\"", "p".repeat(4096)), LIMIT - 64),
        ),
        (
            "128 tools, 512 KiB of schemas of tiny enums (the most accepted)",
            tools_request(),
        ),
        (
            "tools: one with a costly pattern (the most accepted)",
            pattern_tools_request(1, 1),
        ),
        (
            "tools: 64 with 256 costly patterns (22 KB)",
            pattern_tools_request(64, 4),
        ),
        (
            "one assistant tool call with 6 MB of arguments",
            request(
                &[
                    door().call(&format!(
                        r#"{{"a":[{}0]}}"#,
                        "0,".repeat((LIMIT - 400) / 2 - 8)
                    )),
                    message("x"),
                ],
                "",
                0,
            ),
        ),
        (
            // Each part a struct of a few hundred bytes built from 3 of JSON:
            // the chat door caps parts per message, the typed doors count
            // every element against the request's budget (wire.rs).
            "one message of empty content parts [{}, …] to the limit",
            request(
                &[format!(
                    r#"{{"role":"user","content":[{}{{}}]}}"#,
                    "{},".repeat((LIMIT - 200) / 3)
                )],
                "",
                0,
            ),
        ),
        (
            "over the limit (7 MB)",
            request(&tiny, r#"{"a":0}"#, 7 * 1024 * 1024),
        ),
    ];
    println!(
        "request-memory: one fresh {} process per body ({})\n",
        gateway_bin.rsplit('/').next().unwrap_or_default(),
        door().path()
    );
    println!("| body | size | status | RSS before | peak growth | bound (3 × body + 20 MB; tools: 32 MB) | RSS after | within |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut all_within = true;
    for (name, body) in &cases {
        let gateway = start(&gateway_bin);
        let pid = gateway.pid();
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
        let before = status_kib(pid, "VmRSS:");
        let status = post(gateway.port, body);
        let peak = status_kib(pid, "VmHWM:").saturating_sub(before) as f64 / 1024.0;
        let after = status_kib(pid, "VmRSS:") as f64 / 1024.0;
        let mb = body.len() as f64 / 1_048_576.0;
        // Tool schemas become validators (and, while compiled, JSON trees):
        // dozens of times their text, so their own cap keeps them to a quarter
        // of the function's 128 MB.
        let bound = if name.contains("tools") {
            32.0
        } else {
            3.0 * mb.min(LIMIT as f64 / 1_048_576.0) + 20.0
        };
        let within = peak < bound;
        all_within &= within;
        println!(
            "| {name} | {mb:.2} MB | {status} | {:.1} MB | {peak:.1} MB | {bound:.1} MB | {after:.1} MB | {} |",
            before as f64 / 1024.0,
            if within { "yes" } else { "**no**" }
        );
    }
    if !all_within {
        std::process::exit(1);
    }
}
