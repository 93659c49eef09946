//! `hailuo-simulator [--protocol hailuo|agent|minimax-code|minimax-api] [--region intl|cn]
//! [--addr 127.0.0.1:18080] [--pace-ms 15]`: the simulator as a process, for
//! end-to-end tests and for trying the service offline.

use std::sync::{Arc, Mutex};

use hailuo_simulator::state::State;
use hailuo_simulator::Protocol;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut addr = "127.0.0.1:18080".to_string();
    let mut state = State::default();
    let mut protocol = Protocol::Hailuo;
    let mut code = false;
    let mut api = false;
    let mut pace_ms = None;
    let mut region = "en".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().expect("--addr needs a value"),
            "--protocol" => {
                protocol = match args.next().as_deref() {
                    Some("hailuo") => Protocol::Hailuo,
                    Some("agent") | Some("minimax-agent") => Protocol::Agent,
                    Some("minimax-code") | Some("code") => {
                        code = true;
                        Protocol::Hailuo
                    }
                    Some("minimax-api") | Some("api") => {
                        api = true;
                        Protocol::Hailuo
                    }
                    other => panic!(
                        "--protocol is hailuo, agent, minimax-code or minimax-api, not {other:?}"
                    ),
                }
            }
            "--pace-ms" => {
                let pace = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--pace-ms needs a number");
                state.settings.pace_ms = pace;
                pace_ms = Some(pace);
            }
            "--region" => {
                region = match args.next().as_deref() {
                    Some("cn") => "cn".into(),
                    Some("intl") | Some("en") => "en".into(),
                    other => panic!("--region is intl or cn, not {other:?}"),
                }
            }
            "--help" | "-h" => {
                println!(
                    "hailuo-simulator [--protocol hailuo|agent|minimax-code|minimax-api] [--region intl|cn] [--addr HOST:PORT] [--pace-ms N]"
                );
                return Ok(());
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    if api {
        let region = if region == "cn" { "cn" } else { "intl" };
        println!(
            "hailuo-simulator (MiniMax API protocol, region {region}) listening on http://{}",
            listener.local_addr()?
        );
        let mut state = hailuo_simulator::api::ApiState::with_region(region);
        state.settings.pace_ms = pace_ms.unwrap_or(state.settings.pace_ms);
        return hailuo_simulator::api::serve(listener, Arc::new(Mutex::new(state))).await;
    }
    if code {
        println!(
            "hailuo-simulator (MiniMax Code protocol, region {region}) listening on http://{}",
            listener.local_addr()?
        );
        let mut state = hailuo_simulator::code::CodeState::with_region(&region);
        state.settings.pace_ms = pace_ms.unwrap_or(state.settings.pace_ms);
        return hailuo_simulator::code::serve(listener, Arc::new(Mutex::new(state))).await;
    }
    println!(
        "hailuo-simulator ({protocol:?} protocol) listening on http://{}",
        listener.local_addr()?
    );
    hailuo_simulator::serve(listener, Arc::new(Mutex::new(state)), protocol).await
}
