//! `hailuo-simulator [--protocol hailuo|agent] [--addr 127.0.0.1:18080] [--pace-ms 15]`: the simulator
//! as a process, for end-to-end tests and for trying the service offline.

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
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().expect("--addr needs a value"),
            "--protocol" => {
                protocol = match args.next().as_deref() {
                    Some("hailuo") => Protocol::Hailuo,
                    Some("agent") | Some("minimax-agent") => Protocol::Agent,
                    other => panic!("--protocol is hailuo or agent, not {other:?}"),
                }
            }
            "--pace-ms" => {
                state.settings.pace_ms = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--pace-ms needs a number")
            }
            "--help" | "-h" => {
                println!(
                    "hailuo-simulator [--protocol hailuo|agent] [--addr HOST:PORT] [--pace-ms N]"
                );
                return Ok(());
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "hailuo-simulator ({protocol:?} protocol) listening on http://{}",
        listener.local_addr()?
    );
    hailuo_simulator::serve(listener, Arc::new(Mutex::new(state)), protocol).await
}
