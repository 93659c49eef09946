//! One module per OpenAI route; each builds its `Router`.

pub mod admin;
pub mod chat;
mod measure;
pub mod messages;
pub mod models;
pub(crate) mod prometheus;
pub mod responses;
pub mod speech;
mod stream;
pub mod token_check;
pub mod transcription;

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::Router;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::config::Config;
use crate::credentials::Credentials;
use crate::error::ApiError;
use crate::upstream::{Upstream, Voice};

/// What every handler borrows: built once per execution environment.
#[derive(Clone)]
pub struct AppState {
    pub(crate) config: Arc<Config>,
    /// The chat upstreams, in the order a request tries them (`UPSTREAM`):
    /// the next serves when every account of one cannot answer now.
    pub(crate) upstreams: Arc<[Arc<dyn Upstream>]>,
    /// The first upstream's speech: in the functions that speak, on an upstream
    /// that has it (`voice_state_from_env`); `None` elsewhere.
    pub(crate) voice: Option<Arc<dyn Voice>>,
    /// MiniMax's paid platform's speech and recognition, in the functions
    /// that speak (`voice_state_from_env`): used for a request that has a
    /// platform key, on any chat upstream.
    pub(crate) platform: Option<Arc<crate::upstream::api::ApiClient>>,
    pub(crate) credentials: Arc<Credentials>,
    /// Downloads of the files messages bring by URL.
    pub(crate) fetcher: crate::files::fetch::Fetcher,
}

impl AppState {
    /// The first upstream of the chain: the one the token routes check, and
    /// the one whose voice speaks.
    pub(crate) fn upstream(&self) -> &Arc<dyn Upstream> {
        &self.upstreams[0]
    }

    /// What the conversation layer needs of this deployment.
    pub(crate) fn deployment(&self) -> crate::reply::Deployment<'_> {
        crate::reply::Deployment {
            upstreams: &self.upstreams,
            config: &self.config,
            credentials: &self.credentials,
            fetcher: &self.fetcher,
        }
    }
}

/// The response of an answer, saying which upstream of the chain served it.
pub(crate) fn served_by(mut response: Response, upstream: &'static str) -> Response {
    response.headers_mut().insert(
        "x-gateway-upstream",
        axum::http::HeaderValue::from_static(upstream),
    );
    response
}

/// Route layer for routes that use no token: in secret mode the caller still
/// needs a valid API key.
pub(crate) async fn require_caller(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    state.credentials.authorize(request.headers()).await?;
    Ok(next.run(request).await)
}

/// Every task a request spawns (its handler, the producer of its stream),
/// so that the server's shutdown can wait until each has finished and
/// cleaned up upstream, whether or not its caller is still there.
static REQUEST_TASKS: std::sync::LazyLock<tokio_util::task::TaskTracker> =
    std::sync::LazyLock::new(tokio_util::task::TaskTracker::new);

/// Spawn a request's work, carrying the invocation's span (the Lambda
/// request id) into its logs, tracked for `drain`.
pub(crate) fn spawn<F>(work: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use tracing::Instrument;
    REQUEST_TASKS.spawn(work.in_current_span())
}

/// Wait until every request task has finished (new ones may still start
/// while waiting: the caller stops accepting requests first).
pub(crate) async fn drain() {
    REQUEST_TASKS.close();
    REQUEST_TASKS.wait().await;
}

/// How many request tasks are running.
pub(crate) fn tasks_running() -> usize {
    REQUEST_TASKS.len()
}

/// How long a stream waits for its caller to take the next piece, when the
/// pieces before it are all still unread: the channel's queue, the
/// server's write buffer and the connection's socket buffers (hundreds of
/// KB) full. A caller who reads at all, however slowly, never waits this
/// long. One who keeps the connection open and stops reading would
/// otherwise hold the answer's task, its account and its upstream
/// conversation for as long as the connection lives (on Lambda, until the
/// function's timeout, which then skips the deletion).
pub(crate) const CALLER_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The producing half of a streamed response body (chat's SSE, speech's
/// audio), held by the request's own task.
///
/// A body ends in one of two ways. The task called `finish` (the stream is
/// whole: `[DONE]`, or the last audio part): it ends as any body does. Or
/// the task stopped without it (the upstream failed mid-audio, the caller
/// stalled, a bug): the body ends in an error. The server's HTTP layer
/// turns that into a cut connection (no chunked terminator), so the
/// caller's client raises an error instead of taking a short answer for a
/// whole one; `lambda_runtime` reports it to the Runtime API in the error
/// trailers (which `cargo lambda watch` does not read: it passes them on as
/// body bytes and ends the response as whole).
pub(crate) struct Outgoing {
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    whole: Arc<std::sync::atomic::AtomicBool>,
}

impl Outgoing {
    /// The sender, and the body that carries what it sends; `queue` pieces
    /// wait in between.
    pub(crate) fn new(queue: usize) -> (Self, axum::body::Body) {
        use futures_util::StreamExt;
        use std::sync::atomic::Ordering;
        let (tx, rx) = tokio::sync::mpsc::channel(queue);
        let whole = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = whole.clone();
        // Read once every sender is gone, that is, once the task is done.
        let end = futures_util::stream::once(async move {
            (!seen.load(Ordering::Acquire)).then(|| {
                Err(std::io::Error::other(
                    "the stream ended before it was whole",
                ))
            })
        })
        .filter_map(std::future::ready);
        let body = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(Ok)
            .chain(end);
        (Self { tx, whole }, axum::body::Body::from_stream(body))
    }

    /// Hand `piece` to the caller: false once the caller has gone, or has
    /// taken nothing for `CALLER_STALL_TIMEOUT` (then treated as gone).
    pub(crate) async fn deliver(&self, piece: bytes::Bytes) -> bool {
        match tokio::time::timeout(CALLER_STALL_TIMEOUT, self.tx.send(piece)).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                tracing::info!(
                    stalled_seconds = CALLER_STALL_TIMEOUT.as_secs(),
                    "the caller stopped reading the stream: treated as gone"
                );
                false
            }
        }
    }

    /// Resolves when the caller has gone (the body was dropped).
    pub(crate) async fn caller_gone(&self) {
        self.tx.closed().await
    }

    /// Everything is sent: the body ends whole once this sender is dropped.
    pub(crate) fn finish(&self) {
        self.whole.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// A streamed response's head: SSE, never cached, never buffered by a
/// proxy (nginx's `X-Accel-Buffering`).
pub(crate) fn event_stream(body: axum::body::Body) -> Response {
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Run a request's work in its own task: if the caller's connection drops
/// (a local server cancels the handler then), the task still finishes and
/// cleans up upstream (deletes the conversation, gives the account back).
/// Until it has an account, though, a request whose caller has gone stops
/// (`caller.rs`): the handler being dropped cancels the token.
///
/// A bug that panics in the work (where panics unwind: the server, tests)
/// costs this request a 500 (`ApiError::bug`) and nothing else.
pub(crate) async fn in_own_task(
    work: impl std::future::Future<Output = Result<Response, ApiError>> + Send + 'static,
) -> Result<Response, ApiError> {
    let gone = tokio_util::sync::CancellationToken::new();
    let _cancel_when_dropped = gone.clone().drop_guard();
    spawn(crate::caller::scope(gone, work)).await.map_err(|e| {
        tracing::error!(error = %e, "the request handler failed");
        ApiError::bug()
    })?
}

/// Every route on one router: the self-hosted server. Each route keeps the
/// body limit its own function has.
pub fn all(state: AppState) -> Router {
    let config = state.config.clone();
    let router = chat::routes(state.clone())
        .merge(messages::routes(state.clone()))
        .merge(responses::routes(state.clone()))
        .merge(token_check::routes(state.clone()))
        .merge(admin::routes(state.clone()))
        .merge(prometheus::routes(state.clone()))
        .merge(speech::routes(state.clone()))
        .merge(transcription::routes(state));
    finish(catch_panics(router), &config)
}

/// Where panics unwind (the server): a handler that panics outside
/// `in_own_task` (models, token check) answers its request with
/// `ApiError::bug`'s 500, as the others do, where its connection was closed
/// with no answer. Inside CORS, so that a browser can read that 500. The
/// panic hook has logged what the panic said.
fn catch_panics(router: Router) -> Router {
    use axum::response::IntoResponse;
    router.layer(tower_http::catch_panic::CatchPanicLayer::custom(
        |_: Box<dyn std::any::Any + Send>| ApiError::bug().into_response(),
    ))
}

/// A route set's body limit (applied to the routes it has so far).
pub(crate) fn limited(router: Router, max_body: usize) -> Router {
    router.layer(axum::extract::DefaultBodyLimit::max(max_body))
}

/// The fallbacks and CORS every router shares.
pub(crate) fn finish(router: Router, config: &Config) -> Router {
    let router = router
        .fallback(|method: Method, uri: Uri| async move {
            in_door_shape(&uri, not_found(&method, &uri))
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            in_door_shape(
                &uri,
                ApiError::MethodNotAllowed(format!("{method} is not allowed on {}.", uri.path())),
            )
        })
        .layer(axum::middleware::from_fn(measure::measure));
    match cors(&config.cors_allow_origins) {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// CORS for browser clients (LobeChat, NextChat, Cherry Studio, Open WebUI
/// in direct mode), on every response, errors included; preflights are
/// answered for every path. Request headers are mirrored: the SDKs send a
/// changing set of `x-stainless-*` headers besides `Authorization`,
/// `Content-Type` and `x-api-key`, and no cookie is ever read (the bearer is
/// the only credential), so mirroring gives a browser nothing it could not
/// send with curl. `CORS_ALLOW_ORIGINS`: `*` (default), a comma-separated
/// list of origins, or `none` when something in front answers CORS instead
/// (two `Access-Control-Allow-Origin` headers break browsers).
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origin = match origins {
        [] => return None,
        [any] if any == "*" => AllowOrigin::any(),
        list => AllowOrigin::list(
            list.iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        ),
    };
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers([
                header::RETRY_AFTER,
                header::HeaderName::from_static("x-gateway-upstream"),
            ])
            .max_age(Duration::from_secs(86_400)),
    )
}

fn not_found(method: &Method, uri: &Uri) -> ApiError {
    ApiError::NotFound(format!(
        "Unknown request URL: {method} {}. This service serves POST /v1/chat/completions, POST /v1/responses, POST /v1/messages, POST /v1/messages/count_tokens, GET /v1/models, POST /v1/audio/speech, POST /v1/audio/transcriptions and POST /token/check.",
        uri.path()
    ))
}

/// A fallback's error in the shape of the door its path belongs to:
/// Anthropic's under `/v1/messages`, OpenAI's elsewhere.
fn in_door_shape(uri: &Uri, e: ApiError) -> Response {
    use axum::response::IntoResponse;
    let path = uri.path();
    if path.starts_with("/v1/messages") || path.starts_with("/messages") {
        let id = crate::anthropic::error::request_id();
        crate::anthropic::error::with_request_id(crate::anthropic::error::response(e, &id), &id)
    } else {
        e.into_response()
    }
}

/// JSON bodies must say so, as OpenAI requires: `Content-Type:
/// application/json` (any `+json` type, any parameters), or no content type
/// at all (as some scripts send). `text/plain` and form encodings are refused:
/// they are what a browser sends to skip the CORS preflight, and what `curl
/// -d` sends when the header was forgotten.
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        return Ok(());
    }
    Err(ApiError::UnsupportedMediaType(format!(
        "Unsupported Content-Type {:?}: this endpoint takes a JSON body. Send `Content-Type: application/json`.",
        shown(value)
    )))
}

/// A header's value as an error message may quote it: text, clipped.
pub(crate) fn shown(value: &HeaderValue) -> String {
    crate::text::clip(value.to_str().unwrap_or("(not text)"), 100)
}

/// A body that could not be read: too large (413), stalled (408) or broken
/// (400).
pub(crate) fn body_error(rejection: BytesRejection, max_body: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!("The request body is larger than {max_body} bytes."))
    } else if let Some(stalled) = stalled(&rejection) {
        stalled
    } else {
        ApiError::bad_body(format!("The request body could not be read: {rejection}."))
    }
}

/// The 408 for a body that stopped arriving, when that is why `e` (or an
/// error it wraps) failed: the server gives a caller
/// `CONNECTION_IDLE_TIMEOUT_SECONDS` between two pieces of a body
/// (`runtime::serve_on`), where it had waited forever. On Lambda the body
/// arrives whole and this never happens.
pub(crate) fn stalled(e: &(dyn std::error::Error + 'static)) -> Option<ApiError> {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return Some(ApiError::RequestTimeout(
                "The request body stopped arriving before it was complete; send it again.".into(),
            ));
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::{catch_panics, finish, in_own_task};
    use crate::testing::json;

    fn buggy() -> axum::response::Response {
        panic!("a bug that quotes tok-not-for-callers")
    }

    /// Where panics unwind (the server's profile, tests), a bug costs its
    /// own request a 500 with an OpenAI error that does not repeat the
    /// panic's words (CORS headers included, so that a browser can read it),
    /// and the router goes on serving: in a request's own task (chat,
    /// speech, transcription) and, in the server, on the routes without one
    /// (models, token check).
    #[tokio::test]
    async fn a_handler_that_panics_costs_its_request_a_500_and_nothing_else() {
        let config = crate::config::Config::default();
        let router = finish(
            catch_panics(
                Router::new()
                    .route("/boom", get(|| async { buggy() }))
                    .route("/boom-in-task", get(|| in_own_task(async { Ok(buggy()) })))
                    .route("/fine", get(|| async { "fine" })),
            ),
            &config,
        );
        let get_ = |path: &str| {
            Request::get(path)
                .header("origin", "https://chat.example")
                .body(Body::empty())
                .unwrap()
        };

        for path in ["/boom", "/boom-in-task"] {
            let response = router.clone().oneshot(get_(path)).await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{path}"
            );
            assert_eq!(response.headers()["access-control-allow-origin"], "*");
            let body = json(response).await;
            assert_eq!(body["error"]["type"], "server_error");
            assert_eq!(body["error"]["code"], "internal_error");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("a bug"), "{path}: {message}");
            assert!(
                !message.contains("tok-not-for-callers"),
                "{path}: {message}"
            );
        }

        let response = router.oneshot(get_("/fine")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
