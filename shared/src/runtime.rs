//! Running a route: on Lambda (buffered or streamed), or as a plain local
//! server with a graceful shutdown (the functions outside Lambda, and the
//! self-hosted `server` with every route).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::settings::Lookup;

/// JSON logs to stdout (CloudWatch), filtered by `RUST_LOG` (default `info`).
///
/// `RUST_LOG` takes levels and targets (`info`, `warn,hailuo_gateway=debug`),
/// read by `Targets` rather than `EnvFilter`: span and field filters are not
/// worth the regex engine they would link into every bootstrap. A value that
/// does not parse leaves the default.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(false)
        .with_ansi(false)
        .with_target(false)
        .finish()
        .with(log_filter(Lookup::env().value("RUST_LOG")))
        .try_init();
    log_panics();
}

/// A panic is logged like everything else: one JSON event at `error`, in the
/// request's span (on Lambda, the runtime's, with the request id), where the
/// default hook printed plain text to stderr that no level filter or query
/// on the JSON logs finds. On Lambda, where panics abort, it is the
/// function's last line; in the server the request gets its 500 after it.
/// The backtrace is there when `RUST_BACKTRACE` asks for it, as before.
fn log_panics() {
    std::panic::set_hook(Box::new(|panic| {
        let message = panic_message(panic.payload()).unwrap_or("(no message)");
        let location = panic
            .location()
            .map(ToString::to_string)
            .unwrap_or_default();
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(%location, %backtrace, "panicked: {message}");
        } else {
            tracing::error!(%location, "panicked: {message}");
        }
    }));
}

/// What a panic said, when it said it in words (`panic!` with a message
/// gives a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    (payload.downcast_ref::<&str>().copied())
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

/// `RUST_LOG` as `Lookup` reads it (trimmed, blank is unset).
fn log_filter(setting: Option<String>) -> tracing_subscriber::filter::Targets {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    setting
        .and_then(|s| s.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Lambda response streaming (chat).
    Streamed,
    /// A buffered Lambda response.
    Buffered,
}

/// How many times in a row the runtime loop may stop without serving a
/// single invocation in between before the process gives up (the Runtime API
/// itself is gone, not one response).
const RESTARTS_WITHOUT_PROGRESS: u32 = 5;

/// Inside Lambda (`AWS_LAMBDA_RUNTIME_API` is set) run the runtime loop;
/// elsewhere serve the router as a local server (`serve`).
pub async fn run(router: Router, delivery: Delivery) -> Result<(), lambda_http::Error> {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return run_on_lambda(router, delivery).await;
    }
    serve(router).await
}

/// Where a local server listens: `LISTEN_ADDR`, else `0.0.0.0:$PORT` (the
/// PaaS convention: Render, Railway, Fly, Heroku set `PORT`), else
/// `127.0.0.1:8080`.
fn listen_addr(env: &Lookup) -> String {
    match (env.value("LISTEN_ADDR"), env.value("PORT")) {
        (Some(addr), _) => addr,
        (None, Some(port)) => format!("0.0.0.0:{port}"),
        (None, None) => "127.0.0.1:8080".into(),
    }
}

/// SIGTERM (docker stop, systemd, a PaaS) or Ctrl-C.
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Serve the router on `listen_addr()` until SIGTERM or Ctrl-C, then shut
/// down gracefully: stop accepting, let every response in flight finish
/// (streams run to their end), and wait for the requests' own tasks, which
/// delete upstream conversations even for callers that went away; all
/// within `SHUTDOWN_TIMEOUT_SECONDS`.
pub async fn serve(router: Router) -> Result<(), lambda_http::Error> {
    serve_until(router, stop_signal()).await
}

pub(crate) async fn serve_until(
    router: Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), lambda_http::Error> {
    if cfg!(panic = "abort") {
        tracing::warn!(
            "built with panic = \"abort\" (the release profile, made for Lambda): a bug that \
             panics here ends every request in flight; build with `--profile server`"
        );
    }
    let settings = ServerSettings::from_lookup(&Lookup::env());
    let addr = settings.addr;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    serve_on(listener, router, stop, settings.idle, settings.shutdown).await
}

/// What a local server reads of the environment.
pub(crate) struct ServerSettings {
    pub addr: String,
    /// The longest a shutdown waits for requests in flight.
    pub shutdown: Duration,
    pub idle: Duration,
}

impl ServerSettings {
    pub(crate) fn from_lookup(env: &Lookup) -> Self {
        Self {
            addr: listen_addr(env),
            shutdown: Duration::from_secs(env.number("SHUTDOWN_TIMEOUT_SECONDS", 120)),
            idle: Duration::from_secs(env.number(
                "CONNECTION_IDLE_TIMEOUT_SECONDS",
                CONNECTION_IDLE_TIMEOUT.as_secs(),
            )),
        }
    }
}

/// The default of `CONNECTION_IDLE_TIMEOUT_SECONDS`: how long a connection
/// may wait for a request, counted from the moment it is ready for one, and
/// so how long a caller may take to send a request's headers too (hyper's
/// header read timeout, which covers both). Without it (`axum::serve` gives
/// hyper no timer, so none applies) a connection that sent half a request
/// line, or whose peer vanished without a FIN, was held forever: 3,000 of
/// them held 44 MB here. 95 s is above the idle timeout of the proxies that
/// keep connections to the server open (Heroku's router 90 s, AWS ALB and
/// nginx 60 s), so that it is they who close an idle connection: closed
/// from this end, a request the proxy sends at that instant would fail.
const CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_secs(95);

async fn serve_on(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    idle: Duration,
    timeout: Duration,
) -> Result<(), lambda_http::Error> {
    use axum::serve::{Listener as _, ListenerExt as _};
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

    tracing::info!(addr = %listener.local_addr()?, "serving locally");
    // Small SSE writes must not wait for delayed ACKs (Nagle): no delay.
    // axum's listener also rides out accept errors (EMFILE: log, wait 1 s).
    let mut listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // HTTP/1.1 only. Every caller speaks it to a plain-HTTP server (TLS and
    // HTTP/2 are a front's: nginx, a PaaS router), and hyper has no timeout
    // for the rest: a connection that sent "PRI * HT" (half of HTTP/2's
    // preface) was held forever while the version was being detected.
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle);
    // The same patience between two pieces of a request's body, which hyper
    // does not time: a caller that stopped mid-body held its request (and
    // connection) forever. It gets a 408 (`routes::stalled`).
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(idle));
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        // The router is built once; a connection holds a handle to it.
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let connection = http
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            // A caller that went away, or sent no request in time.
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed");
            }
        });
    }
    drop(listener);
    tracing::info!(
        in_flight = crate::routes::tasks_running(),
        "stopping: no new connections; waiting for the requests in flight"
    );
    // Each connection finishes its response in flight and closes; the tasks
    // of callers that went away may still be cleaning up upstream: both
    // within one `timeout` from the signal.
    let served_and_drained = async {
        connections.shutdown().await;
        crate::routes::drain().await;
    };
    tokio::select! {
        () = served_and_drained => {}
        () = tokio::time::sleep(timeout) => {
            tracing::warn!(
                in_flight = crate::routes::tasks_running(),
                "shutdown timeout: requests still in flight are cut"
            );
            return Ok(());
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// The runtime loop, restarted when it stops on an error.
///
/// `lambda_runtime` ends its loop on any error while handing a response to the
/// Runtime API, and a response whose caller went away is such an error (the
/// emulator answers 500 and closes the connection; on AWS a broken connection
/// does the same). Ending the process there would cost a cold start and fail
/// the next request routed to this environment, so the loop is started again:
/// the next `/next` call picks up the next invocation. Only when the loop keeps
/// stopping without serving anything in between is the Runtime API itself
/// unusable, and the process exits.
async fn run_on_lambda(router: Router, delivery: Delivery) -> Result<(), lambda_http::Error> {
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    // `with_state(())` turns every route into its final service once, not
    // in each invocation.
    let router = router
        .layer(axum::middleware::map_request(move |request: Request| {
            counter.fetch_add(1, Ordering::Relaxed);
            std::future::ready(request)
        }))
        .with_state(());
    let mut idle_restarts = 0u32;
    loop {
        let before = served.load(Ordering::Relaxed);
        let stopped = match delivery {
            Delivery::Streamed => lambda_http::run_with_streaming_response(router.clone()).await,
            Delivery::Buffered => lambda_http::run(router.clone()).await,
        };
        let Err(error) = stopped else {
            return Ok(());
        };
        if served.load(Ordering::Relaxed) == before {
            idle_restarts += 1;
        } else {
            idle_restarts = 0;
        }
        if idle_restarts >= RESTARTS_WITHOUT_PROGRESS {
            tracing::error!(error = %error, "the Lambda Runtime API keeps failing; exiting");
            return Err(error);
        }
        tracing::warn!(
            error = %error,
            "a response could not be delivered to the Lambda Runtime API; serving the next invocation"
        );
        tokio::time::sleep(Duration::from_millis(20) * 2u32.pow(idle_restarts)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{capture_logs, state, streamed_content, FakeUpstream, Script};

    #[test]
    fn a_panic_is_logged_as_an_error_event() {
        let default_hook = std::panic::take_hook();
        log_panics();
        let (logs, guard) = capture_logs();
        let caught = std::panic::catch_unwind(|| panic!("a bug at step {}", 42));
        drop(guard);
        std::panic::set_hook(default_hook);
        assert!(caught.is_err());
        let text = logs.text();
        let line = text.lines().find(|l| l.contains("panicked")).unwrap_or("");
        assert!(
            line.contains("ERROR")
                && line.contains("panicked: a bug at step 42")
                && line.contains("location=shared/src/runtime.rs:"),
            "{text}"
        );
    }

    /// Every route on a free port, served until the sender is used or
    /// dropped, with a 30 s shutdown timeout.
    async fn serving(
        fake: &FakeUpstream,
        idle: Duration,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), lambda_http::Error>>,
    ) {
        let app = crate::routes::all(state(fake, crate::Config::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let stop = async move {
            let _ = stop_rx.await;
        };
        let server = tokio::spawn(serve_on(listener, app, stop, idle, Duration::from_secs(30)));
        (addr, stop_tx, server)
    }

    /// SIGTERM while two answers stream: the one whose caller stays gets its
    /// whole answer, the one whose caller left is still deleted upstream, and
    /// the server returns only after both.
    #[tokio::test]
    async fn a_shutdown_lets_streams_finish_and_cleans_up_for_callers_gone() {
        let fake = FakeUpstream::answering("unused", Duration::ZERO)
            .with_delete_taking(Duration::from_millis(300));
        let pace = Duration::from_millis(40);
        // The caller who stays gets a short answer; the one who leaves, a
        // long one, still being produced when the server has no connection left.
        fake.script(Script::answer(
            "c-stays",
            "one two three four five six",
            6,
            pace,
        ));
        fake.script(Script::answer("c-leaves", &"word ".repeat(30), 30, pace));
        let (addr, stop_tx, server) = serving(&fake, CONNECTION_IDLE_TIMEOUT).await;
        let base = format!("http://{addr}");
        let client = reqwest::Client::new();
        let ask = |token: &str| {
            client
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(token)
                .json(&serde_json::json!({"model": "hailuo", "stream": true,
                    "messages": [{"role": "user", "content": "hi"}]}))
                .send()
        };
        let mut staying = ask("tok-stays").await.unwrap();
        let mut leaving = ask("tok-leaves").await.unwrap();
        let first = staying.chunk().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).starts_with("data: "));
        leaving.chunk().await.unwrap().unwrap();
        stop_tx.send(()).unwrap();

        let mut body = String::from_utf8_lossy(&first).to_string();
        while let Some(chunk) = staying.chunk().await.unwrap() {
            body.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
        assert_eq!(streamed_content(&body), "one two three four five six");
        // The other caller goes only now: its connection is the last one, and
        // its conversation's deletion (300 ms) outlasts it.
        drop(leaving);

        tokio::time::timeout(Duration::from_secs(20), server)
            .await
            .expect("the server stops once the requests are done")
            .unwrap()
            .unwrap();
        let (opened, deleted) = fake.record(|r| (r.chats.len(), r.deleted.len()));
        assert_eq!(
            (opened, deleted),
            (2, 2),
            "both conversations deleted before the server returned"
        );
        // New connections are refused once it has stopped.
        assert!(ask("tok-late").await.is_err());
    }

    /// A connection that never finishes its request's headers is closed
    /// after the idle timeout, and so is a kept-alive one left idle; a body
    /// that stops arriving gets a 408 then; a stream that lasts longer than
    /// that is not cut. (Paused clock: the timeout and the
    /// stream's pace are virtual time.)
    #[tokio::test(start_paused = true)]
    async fn a_caller_gone_quiet_is_let_go_and_a_long_stream_is_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const IDLE: Duration = Duration::from_secs(30);
        let fake = FakeUpstream::answering("unused", Duration::ZERO);
        let pace = Duration::from_secs(8);
        fake.script(Script::answer("c-long", "one two three four five", 5, pace));
        let (addr, _stop, _) = serving(&fake, IDLE).await;

        let start = tokio::time::Instant::now();
        let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
        half.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // Half of HTTP/2's preface: as long, since HTTP/1.1 is all that is
        // spoken (the version's detection had no timeout).
        let mut h2 = tokio::net::TcpStream::connect(addr).await.unwrap();
        h2.write_all(b"PRI * HT").await.unwrap();
        // A POST on its own connection, `length` its stated body length and
        // `sent` what of the body is sent.
        let post = |path: &'static str,
                    content_type: &'static str,
                    length: usize,
                    sent: &'static str| async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(
                format!(
                    "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-a\r\n\
                     Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n{sent}"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            c
        };
        // Bodies that stop arriving, one read whole and one as a form.
        let stalled = [
            post("/v1/chat/completions", "application/json", 1000, r#"{"model""#).await,
            post(
                "/v1/audio/transcriptions",
                "multipart/form-data; boundary=b",
                1000,
                "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF",
            )
            .await,
        ];
        let body =
            r#"{"model":"hailuo","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let mut streamed = post("/v1/chat/completions", "application/json", body.len(), body).await;

        // The half request: closed, with nothing sent, once the timeout is up.
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(IDLE * 3, half.read(&mut buf)).await;
        assert_eq!(read.expect("the half request is never closed").unwrap(), 0);
        let closed_after = start.elapsed();
        assert!(
            (IDLE..IDLE + Duration::from_secs(1)).contains(&closed_after),
            "{closed_after:?}"
        );

        let read = tokio::time::timeout(Duration::from_secs(1), h2.read(&mut buf)).await;
        assert_eq!(read.expect("half an HTTP/2 preface is held").unwrap(), 0);
        for mut c in stalled {
            let mut answer = Vec::new();
            tokio::time::timeout(Duration::from_secs(1), c.read_to_end(&mut answer))
                .await
                .expect("a stalled body is waited for")
                .unwrap();
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
            assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
        }

        // The stream (40 s of virtual time) runs to its end on its connection.
        let mut answer = Vec::new();
        while !answer.ends_with(b"data: [DONE]\n\n\r\n0\r\n\r\n") {
            let n = streamed.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "cut after {:?}: {}",
                start.elapsed(),
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&buf[..n]);
        }
        let done_after = start.elapsed();
        assert!(done_after > pace * 4, "{done_after:?}");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert_eq!(streamed_content(&text), "one two three four five");

        // Kept alive after the answer, then idle: closed once the timeout is up.
        let mut rest = Vec::new();
        tokio::time::timeout(IDLE * 3, streamed.read_to_end(&mut rest))
            .await
            .expect("the idle connection is never closed")
            .unwrap();
        let idle = start.elapsed() - done_after;
        assert!(rest.is_empty(), "{rest:?}");
        assert!(
            (IDLE..IDLE + Duration::from_secs(1)).contains(&idle),
            "{idle:?}"
        );
    }

    #[test]
    fn listen_addr_prefers_listen_addr_then_port() {
        let from = |pairs: &'static [(&'static str, &'static str)]| {
            let get = move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            };
            listen_addr(&Lookup::new(&get))
        };
        assert_eq!(from(&[]), "127.0.0.1:8080");
        assert_eq!(from(&[("PORT", "10000")]), "0.0.0.0:10000");
        assert_eq!(
            from(&[("PORT", "10000"), ("LISTEN_ADDR", "127.0.0.1:9")]),
            "127.0.0.1:9"
        );
        assert_eq!(
            from(&[("PORT", " "), ("LISTEN_ADDR", "")]),
            "127.0.0.1:8080"
        );
    }

    #[test]
    fn rust_log_takes_levels_and_targets_and_falls_back_to_info() {
        use tracing::Level;
        let info = log_filter(None);
        assert!(info.would_enable("hailuo_gateway", &Level::INFO));
        assert!(!info.would_enable("hailuo_gateway", &Level::DEBUG));
        let mixed = log_filter(Some("warn,hailuo_gateway::answer=debug".into()));
        assert!(mixed.would_enable("hailuo_gateway::answer", &Level::DEBUG));
        assert!(!mixed.would_enable("hailuo_gateway::routes", &Level::INFO));
        assert!(mixed.would_enable("hailuo_gateway::routes", &Level::WARN));
        let broken = log_filter(Some("=garbage=[{".into()));
        assert!(broken.would_enable("x", &Level::INFO) && !broken.would_enable("x", &Level::DEBUG));
    }
}
