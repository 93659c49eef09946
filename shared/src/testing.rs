//! A scripted upstream for in-process tests: the retry, failover, pool,
//! timeout and cleanup paths run against it with tokio's paused clock, so no
//! test sleeps for real and none depends on how busy the machine is.
//!
//! Like the real services, an account answers one chat at a time: a chat on
//! a token whose previous answer is still being generated is refused as busy
//! (and counted), until that answer's stream ends or is dropped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::config::Config;
use crate::credentials::Credentials;
use crate::redact::fingerprint;
use crate::routes::AppState;
use crate::upstream::{
    Capabilities, EventStream, Turn, Upstream, UpstreamError, UpstreamEvent, Voice,
};

/// One step of a scripted answer.
#[derive(Clone, Debug)]
pub enum Step {
    Event(UpstreamEvent),
    Fail(UpstreamError),
    Sleep(Duration),
    /// Never another event.
    Hang,
    /// A bug: the stream panics when it gets here.
    Panic,
    /// Answer text, `{nonce}` replaced by the prompt's nonce, then sent in
    /// `parts` deltas `pace` apart.
    Text {
        text: String,
        parts: usize,
        pace: Duration,
    },
}

impl Step {
    /// The upstream names the conversation: it has accepted the turn.
    pub fn conversation(chat_id: &str) -> Self {
        Step::Event(UpstreamEvent::Conversation {
            chat_id: chat_id.into(),
            message_id: None,
        })
    }
}

/// What one chat call does.
#[derive(Clone, Debug)]
pub struct Script {
    /// The chat call itself fails (before any stream).
    pub refuse: Option<UpstreamError>,
    pub steps: Vec<Step>,
}

impl Script {
    /// A whole answer: the conversation, `text` in `parts` deltas `pace` apart, the end.
    pub fn answer(chat_id: &str, text: &str, parts: usize, pace: Duration) -> Self {
        Self {
            refuse: None,
            steps: vec![
                Step::conversation(chat_id),
                Step::Text {
                    text: text.into(),
                    parts,
                    pace,
                },
                Step::Event(UpstreamEvent::End),
            ],
        }
    }

    pub fn refuse(error: UpstreamError) -> Self {
        Self {
            refuse: Some(error),
            steps: vec![],
        }
    }

    pub fn steps(steps: Vec<Step>) -> Self {
        Self {
            refuse: None,
            steps,
        }
    }
}

/// What the fake saw.
#[derive(Default, Debug)]
pub struct Record {
    /// Every chat call: (token fingerprint, prompt; for a native fake, the
    /// last message's text).
    pub chats: Vec<(String, String)>,
    /// What a native fake was sent, whole.
    pub conversations: Vec<crate::conversation::Conversation>,
    /// Chats refused because the account was answering another.
    pub refused_busy: usize,
    /// Deleted conversations, with when the deletion completed.
    pub deleted: Vec<(String, Instant)>,
    /// The files of every chat call: (mime, image, size).
    pub files: Vec<Vec<(String, bool, usize)>>,
    /// Every synthesis asked for: (token fingerprint, message id, voice).
    pub syntheses: Vec<(String, String, String)>,
    /// Every part downloaded, by URL.
    pub downloads: Vec<String>,
    /// Every voice call: (token fingerprint, the mp3 sent).
    pub transcriptions: Vec<(String, bytes::Bytes)>,
    /// Chats, syntheses, downloads and deletions, in the order they happened.
    pub timeline: Vec<&'static str>,
}

/// How the fake speaks: the parts of every synthesis, and scripted failures.
#[derive(Clone, Debug, Default)]
pub struct VoiceScript {
    /// The mp3 parts every synthesis gives (URL `part<i>`).
    pub parts: Vec<bytes::Bytes>,
    /// Downloading this part fails.
    pub failing_part: Option<(usize, UpstreamError)>,
    /// The next syntheses fail so, in order.
    pub synthesis_failures: VecDeque<UpstreamError>,
    /// The next voice calls answer so, in order (else "heard N bytes").
    pub transcripts: VecDeque<Result<String, UpstreamError>>,
}

#[derive(Default)]
struct Inner {
    scripts: VecDeque<Script>,
    default: Option<Script>,
    generating: HashSet<String>,
    busy_elsewhere: HashMap<String, Instant>,
    dead: HashSet<String>,
    record: Record,
    next_chat: u64,
    voice: VoiceScript,
    mute: bool,
}

#[derive(Clone)]
pub struct FakeUpstream {
    inner: Arc<Mutex<Inner>>,
    delete_takes: Duration,
    watches_progress: bool,
    /// Takes the conversation as it is (as MiniMax Code does), where the
    /// default fake is a text-only web chat.
    native: bool,
    /// Its `Upstream::id` (`fake`; a chain's fakes name themselves).
    id: &'static str,
    /// Its accounts answer many requests at once (a paid key's).
    concurrent: bool,
}

impl FakeUpstream {
    /// Every chat answers `text` (a fresh conversation each time) unless scripted.
    pub fn answering(text: &str, pace: Duration) -> Self {
        let fake = Self {
            inner: Arc::default(),
            delete_takes: Duration::ZERO,
            watches_progress: false,
            native: false,
            id: "fake",
            concurrent: false,
        };
        fake.inner.lock().unwrap().default = Some(Script::answer("", text, 4, pace));
        fake
    }

    pub fn with_delete_taking(mut self, d: Duration) -> Self {
        self.delete_takes = d;
        self
    }

    pub fn watching_progress(mut self) -> Self {
        self.watches_progress = true;
        self
    }

    /// An upstream that takes the conversation as it is, with native tool
    /// calls, thinking and usage (scripted as its events).
    pub fn native(mut self) -> Self {
        self.native = true;
        self
    }

    /// Its accounts answer many requests at once, as paid keys do.
    pub fn concurrent(mut self) -> Self {
        self.concurrent = true;
        self
    }

    /// Named as an upstream of a chain (`minimax-api` takes platform keys).
    pub fn with_id(mut self, id: &'static str) -> Self {
        self.id = id;
        self
    }

    /// How syntheses and voice calls go.
    pub fn speaking(self, voice: VoiceScript) -> Self {
        self.inner.lock().unwrap().voice = voice;
        self
    }

    /// Its voice, as the state of a function that speaks has it (none when
    /// muted, as an upstream without speech has none).
    pub fn voice(&self) -> Option<Arc<dyn Voice>> {
        let mute = self.inner.lock().unwrap().mute;
        (!mute).then(|| Arc::new(self.clone()) as Arc<dyn Voice>)
    }

    /// An upstream without speech (as the agent's).
    pub fn mute(self) -> Self {
        self.inner.lock().unwrap().mute = true;
        self
    }

    /// The next chat calls follow these scripts, in order.
    pub fn script(&self, script: Script) {
        self.inner.lock().unwrap().scripts.push_back(script);
    }

    /// The account answers a chat of someone else's until `until`.
    pub fn busy_elsewhere(&self, token: &str, until: Instant) {
        self.inner
            .lock()
            .unwrap()
            .busy_elsewhere
            .insert(fingerprint(token), until);
    }

    pub fn kill(&self, token: &str) {
        self.inner.lock().unwrap().dead.insert(fingerprint(token));
    }

    pub fn record<T>(&self, read: impl FnOnce(&Record) -> T) -> T {
        read(&self.inner.lock().unwrap().record)
    }
}

/// The nonce of the prompt's last `<tool_call id="…">` (the instruction's),
/// which scripted answers write as `{nonce}`, playing a model that follows
/// the tool contract.
fn nonce_in(prompt: &str) -> String {
    const OPEN: &str = "<tool_call id=\"";
    prompt
        .rfind(OPEN)
        .and_then(|at| prompt[at + OPEN.len()..].split('"').next())
        .unwrap_or_default()
        .to_string()
}

/// Marks the account free again when the answer's stream goes away.
struct Generating {
    inner: Arc<Mutex<Inner>>,
    fp: String,
}

impl Drop for Generating {
    fn drop(&mut self) {
        self.inner.lock().unwrap().generating.remove(&self.fp);
    }
}

#[async_trait]
impl Upstream for FakeUpstream {
    fn name(&self) -> &'static str {
        "Fake"
    }

    fn id(&self) -> &'static str {
        self.id
    }

    fn login_hint(&self) -> &'static str {
        "Log in to the fake again."
    }

    fn watches_progress(&self) -> bool {
        self.watches_progress
    }

    fn answers_concurrently(&self) -> bool {
        self.concurrent
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            conversation: self.native,
            images: true,
            documents: true,
            pdf_as_text: self.native,
            thinking_control: self.native,
            conversations_to_delete: !self.native,
        }
    }

    async fn chat(&self, token: &str, turn: &Turn<'_>) -> Result<EventStream, UpstreamError> {
        let fp = fingerprint(token);
        let (prompt, files) = match turn {
            Turn::Text(turn) => (turn.prompt.clone(), &turn.files[..]),
            Turn::Conversation {
                conversation,
                files,
            } => {
                assert!(self.native, "a text-only fake was sent a conversation");
                let mut inner = self.inner.lock().unwrap();
                inner.record.conversations.push((*conversation).clone());
                let last = conversation.messages.last().map(|m| m.text.clone());
                (last.unwrap_or_default(), *files)
            }
        };
        let script = {
            let mut inner = self.inner.lock().unwrap();
            inner.record.chats.push((fp.clone(), prompt.clone()));
            inner.record.timeline.push("chat");
            inner.record.files.push(
                files
                    .iter()
                    .map(|f| (f.mime.clone(), f.image, f.bytes.len()))
                    .collect(),
            );
            if inner.dead.contains(&fp) {
                return Err(UpstreamError::TokenRejected {
                    fingerprint: fp,
                    message: "登录已过期".into(),
                });
            }
            let elsewhere = inner
                .busy_elsewhere
                .get(&fp)
                .is_some_and(|until| *until > Instant::now());
            if elsewhere || (inner.generating.contains(&fp) && !self.concurrent) {
                inner.record.refused_busy += 1;
                return Err(UpstreamError::Busy {
                    fingerprint: fp,
                    message: "当前有对话正在进行".into(),
                });
            }
            let script = match inner.scripts.pop_front() {
                Some(s) => s,
                None => inner.default.clone().expect("no script left"),
            };
            if let Some(error) = script.refuse.clone() {
                return Err(error);
            }
            inner.generating.insert(fp.clone());
            inner.next_chat += 1;
            let n = inner.next_chat;
            let nonce = nonce_in(&prompt);
            let mut steps = Vec::with_capacity(script.steps.len());
            for step in script.steps {
                match step {
                    Step::Event(UpstreamEvent::Conversation { chat_id, .. })
                        if chat_id.is_empty() =>
                    {
                        // A continued conversation keeps its id.
                        let chat_id = turn
                            .continues()
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("chat{n}"));
                        steps.push(Step::Event(UpstreamEvent::Conversation {
                            chat_id,
                            message_id: Some(format!("msg{n}")),
                        }));
                    }
                    Step::Text { text, parts, pace } => {
                        let chars: Vec<char> = text.replace("{nonce}", &nonce).chars().collect();
                        let size = chars.len().div_ceil(parts.max(1)).max(1);
                        for piece in chars.chunks(size) {
                            steps.push(Step::Sleep(pace));
                            steps.push(Step::Event(UpstreamEvent::Delta(piece.iter().collect())));
                        }
                    }
                    other => steps.push(other),
                }
            }
            Script { steps, ..script }
        };
        let guard = Generating {
            inner: self.inner.clone(),
            fp,
        };
        let steps: VecDeque<Step> = script.steps.into();
        Ok(futures_util::stream::unfold(
            (steps, Some(guard)),
            |(mut steps, mut guard)| async move {
                loop {
                    match steps.pop_front() {
                        None => {
                            // The answer is over: the account is free.
                            guard.take();
                            return None;
                        }
                        Some(Step::Sleep(d)) => tokio::time::sleep(d).await,
                        Some(Step::Hang) => std::future::pending::<()>().await,
                        Some(Step::Panic) => {
                            panic!("a scripted bug that quotes tok-not-for-callers")
                        }
                        Some(Step::Text { .. }) => unreachable!("expanded when the chat starts"),
                        Some(Step::Event(e)) => {
                            if e == UpstreamEvent::End {
                                guard.take();
                            }
                            return Some((Ok(e), (steps, guard)));
                        }
                        Some(Step::Fail(e)) => {
                            steps.clear();
                            guard.take();
                            return Some((Err(e), (steps, guard)));
                        }
                    }
                }
            },
        )
        .boxed())
    }

    async fn delete_conversation(&self, _token: &str, chat_id: &str) -> Result<(), UpstreamError> {
        self.inner.lock().unwrap().record.timeline.push("delete");
        tokio::time::sleep(self.delete_takes).await;
        self.inner
            .lock()
            .unwrap()
            .record
            .deleted
            .push((chat_id.to_string(), Instant::now()));
        Ok(())
    }

    async fn is_live(&self, token: &str) -> Result<bool, UpstreamError> {
        Ok(!self
            .inner
            .lock()
            .unwrap()
            .dead
            .contains(&fingerprint(token)))
    }
}

#[async_trait]
impl Voice for FakeUpstream {
    async fn synthesize(
        &self,
        token: &str,
        message_id: &str,
        voice: &str,
    ) -> Result<Vec<String>, UpstreamError> {
        let mut inner = self.inner.lock().unwrap();
        let fp = fingerprint(token);
        inner.record.timeline.push("synthesize");
        inner
            .record
            .syntheses
            .push((fp, message_id.into(), voice.into()));
        if let Some(e) = inner.voice.synthesis_failures.pop_front() {
            return Err(e);
        }
        Ok((0..inner.voice.parts.len())
            .map(|i| format!("part{i}"))
            .collect())
    }

    async fn download_part(&self, url: &str) -> Result<bytes::Bytes, UpstreamError> {
        let mut inner = self.inner.lock().unwrap();
        inner.record.downloads.push(url.into());
        inner.record.timeline.push("download");
        let index: usize = url.trim_start_matches("part").parse().unwrap();
        if let Some((failing, e)) = &inner.voice.failing_part {
            if *failing == index {
                return Err(e.clone());
            }
        }
        Ok(inner.voice.parts[index].clone())
    }

    async fn transcribe(&self, token: &str, mp3: bytes::Bytes) -> Result<String, UpstreamError> {
        let fp = fingerprint(token);
        let mut inner = self.inner.lock().unwrap();
        if inner.dead.contains(&fp) {
            return Err(UpstreamError::TokenRejected {
                fingerprint: fp,
                message: "登录已过期".into(),
            });
        }
        let size = mp3.len();
        inner.record.transcriptions.push((fp, mp3));
        inner
            .voice
            .transcripts
            .pop_front()
            .unwrap_or_else(|| Ok(format!("heard {size} bytes")))
    }
}

/// A native upstream's usage, as the protocol's own example counts it.
pub const NATIVE_USAGE: crate::conversation::TokenUsage = crate::conversation::TokenUsage {
    input: 169,
    output: 85,
    cache_read: 128,
    cache_creation: 0,
    reasoning: 57,
};

/// The configuration of a deployment given only `settings`.
pub fn config_of(settings: &[(&str, &str)]) -> Config {
    let settings: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(move |k| {
        settings
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    })
}

/// The app over a chain of fakes, in their order, in header mode with
/// platform keys (`sk-api-…`) going to the one named `minimax-api`.
pub fn chain_state(fakes: &[&FakeUpstream], config: Config) -> AppState {
    let upstreams: Vec<Arc<dyn Upstream>> = fakes
        .iter()
        .map(|f| Arc::new((*f).clone()) as Arc<dyn Upstream>)
        .collect();
    AppState {
        fetcher: crate::files::fetch::Fetcher::from_config(&config).expect("a fetcher"),
        config: Arc::new(config),
        upstreams: upstreams.into(),
        voice: None,
        platform: None,
        credentials: Arc::new(Credentials::header_mode().with_platform(Vec::new(), true)),
    }
}

/// The app as the functions build it, over `fake`, in header mode.
pub fn state(fake: &FakeUpstream, config: Config) -> AppState {
    AppState {
        fetcher: crate::files::fetch::Fetcher::from_config(&config).expect("a fetcher"),
        config: Arc::new(config),
        upstreams: Arc::from([Arc::new(fake.clone()) as Arc<dyn crate::upstream::Upstream>]),
        voice: fake.voice(),
        platform: None,
        credentials: Arc::new(Credentials::header_mode()),
    }
}

/// `GET path` with `Authorization: Bearer <key>` when there is one: the
/// status and the body as text.
pub async fn get(app: &axum::Router, path: &str, key: Option<&str>) -> (StatusCode, String) {
    use tower::ServiceExt;
    let mut request = Request::get(path);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// A chat request with `Authorization: Bearer <tokens>`.
pub fn chat_request(tokens: &str, body: serde_json::Value) -> Request<Body> {
    Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {tokens}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// `body` sent to the chat router with `Authorization: Bearer <tokens>`.
pub async fn send(app: &axum::Router, tokens: &str, body: serde_json::Value) -> Response<Body> {
    use tower::ServiceExt;
    app.clone()
        .oneshot(chat_request(tokens, body))
        .await
        .unwrap()
}

/// The `data:` payloads of an SSE body, each with when it arrived.
pub async fn frames(response: Response<Body>) -> Vec<(String, Instant)> {
    let mut stream = response.into_body().into_data_stream();
    let mut out = Vec::new();
    let mut pending = String::new();
    while let Some(chunk) = stream.next().await {
        pending.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = pending.find("\n\n") {
            let frame: String = pending.drain(..end + 2).collect();
            if let Some(data) = frame.trim().strip_prefix("data: ") {
                out.push((data.to_string(), Instant::now()));
            }
        }
    }
    out
}

/// The answer text of an SSE stream as received (the `data:` lines'
/// `delta.content`, joined), whatever the chunking.
pub fn streamed_content(sse: &str) -> String {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// A whole JSON body.
pub async fn json(response: Response<Body>) -> serde_json::Value {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The `error.message` of an OpenAI error body.
pub async fn error_message(response: Response<Body>) -> String {
    json(response).await["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// This thread's log events (every level), from now until the guard drops.
pub(crate) fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

#[derive(Clone, Default)]
pub(crate) struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
