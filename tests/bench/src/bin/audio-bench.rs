//! `audio-bench --clips DIR [--gateway-bin target/release/audio-transcriptions] [--runs 3] [--platform]`
//!
//! What transcoding costs the transcription function. For every clip in DIR
//! (60 s of speech in each accepted format, made by `scripts/bench.sh audio`)
//! the release-built function runs as its own process (local-server mode, the
//! router Lambda runs), a fresh one per run, against the simulator in this
//! process. After a warm-up transcription of a short clip, its peak RSS is
//! reset (`/proc/<pid>/clear_refs`, 5) and its CPU time read
//! (`/proc/<pid>/stat`, user + system); the clip is sent; the CPU time and the
//! peak RSS (`VmHWM`) are read once the transcript is in. The CPU time is the
//! whole request's (multipart parsing, decoding, encoding, the voice call to
//! the simulator): seconds of audio per CPU-second is the function's real-time
//! factor on one core (the transcoder runs on one thread).
//!
//! Targets: ≥ 50× real time; peak RSS < 64 MB.
//!
//! `--platform`: the same clips on MiniMax's paid platform's path (the
//! request carries a platform key; the platform simulator runs in this
//! process): the containers it takes go as they are, webm is transcoded to
//! mp3 first. The clips are 60 s each (`scripts/bench.sh audio` makes them
//! so), which is the audio length reported on this path.

use chat_bench::status_kib;
use std::path::PathBuf;

/// User + system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields count from after its ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Linux reports in USER_HZ, 100 on every mainstream configuration.
    ticks as f64 / 100.0
}

async fn transcribe(
    http: &reqwest::Client,
    url: &str,
    bearer: &str,
    name: &str,
    bytes: Vec<u8>,
) -> String {
    let form = reqwest::multipart::Form::new()
        .text("model", "whisper-1")
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
        );
    let response = http
        .post(url)
        .bearer_auth(bearer)
        .multipart(form)
        .send()
        .await
        .expect("the function answers");
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "{name}: {status} {body}");
    body
}

#[tokio::main]
async fn main() {
    let mut gateway_bin = "target/release/audio-transcriptions".to_string();
    let mut clips = PathBuf::from(".e2e/bench-audio");
    let mut runs = 3usize;
    let mut platform = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--gateway-bin" => gateway_bin = args.next().unwrap(),
            "--clips" => clips = args.next().unwrap().into(),
            "--runs" => runs = args.next().unwrap().parse().unwrap(),
            "--platform" => platform = true,
            other => panic!("unknown argument {other}"),
        }
    }
    let (sim, sim_url) = chat_bench::start_simulator("127.0.0.1:0", Default::default()).await;
    let api_sim = std::sync::Arc::new(std::sync::Mutex::new(
        hailuo_simulator::api::ApiState::with_region("intl"),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(hailuo_simulator::api::serve(listener, api_sim.clone()));
    let (bearer, env): (&str, Vec<(&str, &str)>) = if platform {
        (
            "sk-api-intl-bench",
            vec![("MINIMAX_API_BASE_URL", api_url.as_str())],
        )
    } else {
        ("tok-bench", Vec::new())
    };
    let warm = std::fs::read(clips.join("warm.wav")).expect("warm.wav in the clips directory");
    let mut names: Vec<String> = std::fs::read_dir(&clips)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("clip."))
        .collect();
    names.sort();
    let http = reqwest::Client::new();
    println!(
        "audio-bench: {runs} fresh transcription function processes per clip, on the {} path\n",
        if platform {
            "paid platform's"
        } else {
            "Hailuo voice call's"
        }
    );
    println!(
        "| input | file size | audio | CPU per request (median) | × real time | peak RSS (max) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut worst_speed = f64::MAX;
    let mut worst_rss = 0.0f64;
    for name in &names {
        let bytes = std::fs::read(clips.join(name)).unwrap();
        let (mut cpu, mut peak, mut audio) = (Vec::new(), 0.0f64, 0.0);
        for _ in 0..runs {
            let function =
                chat_bench::Started::gateway(&gateway_bin, &sim_url, &env).wait_until_up();
            let (pid, port) = (function.pid(), function.port);
            let url = format!("http://127.0.0.1:{port}/v1/audio/transcriptions");
            transcribe(&http, &url, bearer, "warm.wav", warm.clone()).await;
            std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
            let before = cpu_seconds(pid);
            transcribe(&http, &url, bearer, name, bytes.clone()).await;
            cpu.push(cpu_seconds(pid) - before);
            peak = peak.max(status_kib(pid, "VmHWM:") as f64 / 1024.0);
            audio = if platform {
                60.0
            } else {
                sim.lock()
                    .unwrap()
                    .voice
                    .transcriptions
                    .last()
                    .map_or(0.0, |t| t.seconds)
            };
            drop(function);
        }
        cpu.sort_by(f64::total_cmp);
        let median = cpu[cpu.len() / 2].max(0.01);
        let speed = audio / median;
        worst_speed = worst_speed.min(speed);
        worst_rss = worst_rss.max(peak);
        println!(
            "| {} | {:.0} kB | {audio:.1} s | {median:.2} s | {speed:.0}× | {peak:.1} MB |",
            name.trim_start_matches("clip."),
            bytes.len() as f64 / 1000.0
        );
    }
    println!("\nslowest: {worst_speed:.0}× real time (target ≥ 50×); largest peak RSS: {worst_rss:.1} MB (target < 64 MB)");
    if worst_speed < 50.0 || worst_rss >= 64.0 {
        std::process::exit(1);
    }
}
