//! The conversation layer: one request's [`Conversation`] answered by the
//! deployment's upstream, as door-neutral [`Piece`]s.
//!
//! Doors call [`Reply::open`] and read pieces; none of them knows which kind
//! of upstream answered. This is the one place that chooses by what the
//! upstream says it does ([`Capabilities`]):
//! - an upstream that understands conversations gets it as it is (tools,
//!   `tool_choice`, tool history, images), and its native tool calls,
//!   signed reasoning, stop reason and usage pass through;
//! - a text-only web chat goes through the text-chat layer: the messages
//!   flattened into one prompt (`prompt.rs`), tools and JSON answers as the
//!   nonce contract (`structured/`), the answer read back through its
//!   `Reader`, with the one correction turn it may ask for sent on the same
//!   account and conversation. Usage is an estimate there, since the web
//!   chats count nothing.
//!
//! Either way the files of the last message are fetched before any account
//! is taken, so a bad URL is the caller's 400 and no upstream turn starts
//! with a file missing.

use std::sync::Arc;

use crate::answer::{Answer, Pool};
use crate::config::Config;
use crate::conversation::{Attachment, Conversation, StopReason, TokenUsage, ToolCall};
use crate::credentials::{Credentials, TokenSet};
use crate::error::ApiError;
use crate::files::{self, fetch::Fetcher};
use crate::openai::encode::sources_block;
use crate::openai::usage::estimate_tokens;
use crate::prompt::flatten;
use crate::structured::{Ending, Finish, Plan, Reader};
use crate::upstream::{ChatTurn, Citation, FileUpload, Turn, Upstream, UpstreamEvent};

/// What the caller is shown of a reply, in order.
#[derive(Debug, PartialEq)]
pub(crate) enum Piece {
    Content(String),
    Reasoning(String),
    /// The signature of the reasoning so far (a door that can carry it back).
    ReasoningSignature(String),
    /// A native tool call begins (`index` counts this answer's calls from 0).
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// More of a native tool call's arguments.
    ToolCallArguments {
        index: usize,
        json: String,
    },
    /// The end: content still to show and whole tool calls (the emulation
    /// decides both only at the end), and why the answer stopped.
    Done {
        text: String,
        calls: Vec<ToolCall>,
        stop: StopReason,
    },
}

/// How the answer is read: as the upstream gives it, or through the
/// text-chat layer's contract.
enum Mode {
    Native {
        /// The upstream's own count, once it gives it.
        usage: Option<TokenUsage>,
        stop: Option<StopReason>,
        calls: usize,
        /// The estimate's input, for an upstream that counts nothing.
        prompt_tokens: u32,
    },
    Text {
        reader: Reader,
        wants_json: bool,
        /// Every prompt sent upstream (a correction re-reads the first answer).
        prompt: String,
        /// What the turn's files add to the prompt (`files::token_estimate`).
        file_tokens: u32,
    },
}

/// One reply to a request: the upstream answer and how to read it.
pub(crate) struct Reply {
    answer: Answer,
    /// The upstream that answers (`Upstream::id`): `x-gateway-upstream`.
    served_by: &'static str,
    mode: Mode,
    citations: Vec<Citation>,
    /// Every answer and reasoning text received (for the estimate).
    completion: String,
    /// The input as estimated before the upstream was asked.
    input_estimate: u32,
    done: bool,
}

/// What opening a reply needs of the deployment.
pub(crate) struct Deployment<'a> {
    /// The chat upstreams, in the order to try them (never empty).
    pub upstreams: &'a [Arc<dyn Upstream>],
    pub config: &'a Config,
    pub credentials: &'a Credentials,
    pub fetcher: &'a Fetcher,
}

/// A conversation made ready for its upstream: checked, its files fetched,
/// flattened for a web chat; and what its input is estimated at (the same
/// figure whether the request is answered or only counted).
enum Prepared {
    Native {
        conversation: Conversation,
        files: Vec<Arc<FileUpload>>,
        prompt_tokens: u32,
    },
    Text {
        turn: ChatTurn,
        plan: Arc<Plan>,
        keeps: bool,
        file_tokens: u32,
    },
}

impl Prepared {
    fn input_estimate(&self) -> u32 {
        match self {
            Prepared::Native { prompt_tokens, .. } => *prompt_tokens,
            Prepared::Text {
                turn, file_tokens, ..
            } => estimate_tokens(&turn.prompt) + file_tokens,
        }
    }
}

/// Validate what the upstream cannot take, map the model name
/// (`MODEL_MAP`), fetch the last message's files, and build what the
/// upstream is sent.
async fn prepare(
    at: &Deployment<'_>,
    upstream: &Arc<dyn Upstream>,
    mut conversation: Conversation,
) -> Result<Prepared, ApiError> {
    let caps = upstream.capabilities();
    if let Some(model) = at.config.model_map.resolve(&conversation.model) {
        conversation.model = model.to_string();
    }
    let last = conversation.messages.len() - 1;
    let files_param = format!("messages[{last}].content");
    // Only the last message's files are sent (the web chats take no
    // others); earlier ones count by their text alone.
    let attachments = std::mem::take(&mut conversation.messages[last].attachments);
    check_files(&attachments, caps, upstream.name(), &files_param)?;
    if caps.conversation {
        refuse_kept_conversations(&conversation, upstream.name())?;
        let has_content = conversation
            .messages
            .iter()
            .any(|m| !m.text.trim().is_empty() || !m.tool_calls.is_empty());
        if !has_content && attachments.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "The messages contain no text to send.",
            ));
        }
        let mut files = files::gather(&files_param, &attachments, at.fetcher).await?;
        if caps.pdf_as_text {
            files = files::pdfs_as_text(&files_param, files).await?;
        }
        let prompt_tokens = estimate_prompt(&conversation, &files);
        return Ok(Prepared::Native {
            conversation,
            files,
            prompt_tokens,
        });
    }
    let plan = Arc::new(Plan::new(&mut conversation)?);
    let prompt = flatten(
        &conversation.messages,
        conversation.conversation_id.is_some(),
        &plan,
        !attachments.is_empty(),
    );
    if prompt.trim().is_empty() && attachments.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "The messages contain no text to send.",
        ));
    }
    let files = files::gather(&files_param, &attachments, at.fetcher).await?;
    let file_tokens = files.iter().map(|f| files::token_estimate(f)).sum();
    Ok(Prepared::Text {
        turn: ChatTurn {
            prompt,
            conversation_id: conversation.conversation_id.clone(),
            files,
        },
        plan,
        keeps: conversation.keeps_conversation(),
        file_tokens,
    })
}

/// Whether a failure to open says this upstream has no account able to
/// answer now (so the next upstream of the chain may): all dead, cooling,
/// or busy past the pool's wait. Not a caller's mistake, not the upstream's
/// own failure, not a caller gone.
fn can_fall_back(e: &ApiError) -> bool {
    if crate::caller::is_gone() {
        return false;
    }
    matches!(
        e,
        ApiError::PoolBusy { .. }
            | ApiError::RateLimited { .. }
            | ApiError::Unavailable(_)
            | ApiError::Unauthorized(_)
    )
}

impl Reply {
    /// What answering `conversation` would count as its input, without
    /// answering it (Anthropic's `count_tokens`): the figure `open` starts
    /// with, from the same checks and the same prompt. No account is used.
    pub(crate) async fn count(
        at: Deployment<'_>,
        conversation: Conversation,
    ) -> Result<u32, ApiError> {
        let first = &at.upstreams[0];
        Ok(prepare(&at, first, conversation)
            .await?
            .input_estimate()
            .max(1))
    }

    /// Open the answer on the first upstream of the chain that has an
    /// account able to answer now (`open_on`). A request moves to the next
    /// upstream only when every account of this one is dead, cooling
    /// (throttled, out of credits, at its plan's limit, refused for egress)
    /// or stayed busy past `POOL_WAIT_MS`; a mistake of the caller's, or a
    /// failure of the upstream itself, is answered as it is. Each fallback
    /// is logged and counted (`metrics::fallback`).
    pub(crate) async fn open(
        at: Deployment<'_>,
        tokens: &TokenSet,
        conversation: Conversation,
    ) -> Result<Reply, ApiError> {
        let links: Vec<&Arc<dyn Upstream>> = at
            .upstreams
            .iter()
            .filter(|u| !tokens.of(u.id()).tokens.is_empty())
            .collect();
        let Some((last, earlier)) = links.split_last() else {
            let names: Vec<&str> = at.upstreams.iter().map(|u| u.id()).collect();
            let message = format!(
                "This request has no account for this deployment's chat upstreams ({}): only \
                 keys of MiniMax's paid platform, which serve chat where UPSTREAM lists minimax-api.",
                names.join(", ")
            );
            // The caller's own keys are the caller's mistake; the
            // deployment's are its operator's.
            return Err(if tokens.from_secret {
                ApiError::Unavailable(message)
            } else {
                ApiError::Unauthorized(message)
            });
        };
        let mut passed: Option<(&'static str, String)> = None;
        for upstream in earlier {
            match Self::open_on(
                &at,
                upstream,
                &tokens.of(upstream.id()),
                conversation.clone(),
            )
            .await
            {
                Ok(reply) => return Ok(reply),
                Err(e) if can_fall_back(&e) => {
                    tracing::info!(upstream = upstream.id(), error = %e, "no account of this upstream can answer now");
                    passed = Some((upstream.id(), e.to_string()));
                }
                Err(e) => return Err(e),
            }
        }
        let reply = Self::open_on(&at, last, &tokens.of(last.id()), conversation).await?;
        if let Some((from, why)) = passed {
            crate::metrics::fallback(from, last.id(), &why);
        }
        Ok(reply)
    }

    /// Prepare the conversation for `upstream` (`prepare`) and open the
    /// answer on an account of its pool.
    async fn open_on(
        at: &Deployment<'_>,
        upstream: &Arc<dyn Upstream>,
        tokens: &TokenSet,
        conversation: Conversation,
    ) -> Result<Reply, ApiError> {
        let prepared = prepare(at, upstream, conversation).await?;
        let input_estimate = prepared.input_estimate();
        match prepared {
            Prepared::Native {
                conversation,
                files,
                prompt_tokens,
            } => {
                let turn = Turn::Conversation {
                    conversation: &conversation,
                    files: &files,
                };
                let open = |tokens| {
                    Answer::open(
                        upstream.clone(),
                        at.config,
                        tokens,
                        Pool::of(at.credentials),
                        &turn,
                        false,
                    )
                };
                let answer = match open(tokens).await {
                    Ok(answer) => answer,
                    // Rejected tokens, or none left: the maintainer may have
                    // just rotated them. The status is read again, once.
                    Err(e @ (ApiError::Unauthorized(_) | ApiError::Unavailable(_))) => {
                        match at.credentials.reread(tokens).await {
                            Some(fresh) => {
                                tracing::info!(
                                    "tokens rejected; trying the ones the status holds now"
                                );
                                open(&fresh).await?
                            }
                            None => return Err(e),
                        }
                    }
                    Err(e) => return Err(e),
                };
                Ok(Self::new(
                    answer,
                    upstream.id(),
                    Mode::Native {
                        usage: None,
                        stop: None,
                        calls: 0,
                        prompt_tokens,
                    },
                    input_estimate,
                ))
            }
            Prepared::Text {
                turn,
                plan,
                keeps,
                file_tokens,
            } => {
                let answer = Answer::open(
                    upstream.clone(),
                    at.config,
                    tokens,
                    Pool::of(at.credentials),
                    &Turn::Text(&turn),
                    keeps,
                )
                .await?;
                Ok(Self::new(
                    answer,
                    upstream.id(),
                    Mode::Text {
                        reader: plan.reader(),
                        wants_json: plan.wants_json(),
                        prompt: turn.prompt,
                        file_tokens,
                    },
                    input_estimate,
                ))
            }
        }
    }

    /// The input estimate the reply opened with (before any upstream count):
    /// what `count` gives for the same conversation.
    pub(crate) fn input_estimate(&self) -> u32 {
        self.input_estimate.max(1)
    }

    fn new(answer: Answer, served_by: &'static str, mode: Mode, input_estimate: u32) -> Self {
        Self {
            answer,
            served_by,
            mode,
            input_estimate,
            citations: Vec::new(),
            completion: String::new(),
            done: false,
        }
    }

    /// The `UPSTREAM` name of the upstream answering.
    pub(crate) fn served_by(&self) -> &'static str {
        self.served_by
    }

    /// The upstream conversation, if the answer lives in one.
    pub(crate) fn chat_id(&self) -> Option<&str> {
        self.answer.chat_id()
    }

    /// Whether the upstream conversation outlives this answer.
    pub(crate) fn is_kept(&self) -> bool {
        self.answer.is_kept()
    }

    pub(crate) fn token_fingerprint(&self) -> String {
        self.answer.token_fingerprint()
    }

    /// End the upstream side: delete what the answer left there and give the
    /// account back (`Answer::cleanup`). Before the response ends.
    pub(crate) async fn cleanup(&mut self) {
        self.answer.cleanup().await;
    }

    /// What the reply cost: the upstream's count where it gave one, else
    /// the estimate from the text sent and received.
    pub(crate) fn usage(&self) -> TokenUsage {
        match &self.mode {
            Mode::Native {
                usage: Some(usage), ..
            } => *usage,
            Mode::Native { prompt_tokens, .. } => TokenUsage {
                input: *prompt_tokens,
                output: estimate_tokens(&self.completion),
                ..TokenUsage::default()
            },
            Mode::Text {
                prompt,
                file_tokens,
                ..
            } => TokenUsage {
                input: estimate_tokens(prompt) + file_tokens,
                output: estimate_tokens(&self.completion),
                ..TokenUsage::default()
            },
        }
    }

    /// The next piece; `None` after `Done` or an error.
    pub(crate) async fn next(&mut self, config: &Config) -> Option<Result<Piece, ApiError>> {
        while !self.done {
            let event = self.answer.next().await;
            let piece = if matches!(self.mode, Mode::Native { .. }) {
                self.native(event)
            } else {
                self.text(event, config).await
            };
            if let Some(piece) = piece {
                if matches!(piece, Ok(Piece::Done { .. }) | Err(_)) {
                    self.done = true;
                }
                return Some(piece);
            }
        }
        None
    }

    /// An upstream event as a piece, passed through.
    fn native(
        &mut self,
        event: Option<Result<UpstreamEvent, crate::upstream::UpstreamError>>,
    ) -> Option<Result<Piece, ApiError>> {
        let Mode::Native {
            usage, stop, calls, ..
        } = &mut self.mode
        else {
            unreachable!("native() reads a native reply");
        };
        Some(Ok(match event {
            None | Some(Ok(UpstreamEvent::End)) => {
                let stop = stop.unwrap_or(if *calls > 0 {
                    StopReason::ToolUse
                } else {
                    StopReason::EndTurn
                });
                let text = if *calls == 0 {
                    sources_block(&self.citations)
                } else {
                    String::new()
                };
                Piece::Done {
                    text,
                    calls: vec![],
                    stop,
                }
            }
            Some(Ok(UpstreamEvent::Delta(d))) => {
                self.completion.push_str(&d);
                Piece::Content(d)
            }
            Some(Ok(UpstreamEvent::ReasoningDelta(d))) => {
                self.completion.push_str(&d);
                Piece::Reasoning(d)
            }
            Some(Ok(UpstreamEvent::ReasoningSignature(s))) => Piece::ReasoningSignature(s),
            Some(Ok(UpstreamEvent::ToolCallStart { index, id, name })) => {
                *calls = (*calls).max(index + 1);
                self.completion.push_str(&name);
                Piece::ToolCallStart { index, id, name }
            }
            Some(Ok(UpstreamEvent::ToolCallArguments { index, json })) => {
                self.completion.push_str(&json);
                Piece::ToolCallArguments { index, json }
            }
            Some(Ok(UpstreamEvent::Stop(s))) => {
                *stop = Some(s);
                return None;
            }
            Some(Ok(UpstreamEvent::Usage(u))) => {
                *usage = Some(u);
                return None;
            }
            Some(Ok(UpstreamEvent::Citations(c))) => {
                self.citations = c;
                return None;
            }
            Some(Ok(UpstreamEvent::Conversation { .. } | UpstreamEvent::Alive)) => return None,
            Some(Err(e)) => return Some(Err(e.into())),
        }))
    }

    /// A web chat's event read through the contract: text held while it
    /// could be a call, the correction turn sent when the answer broke it.
    async fn text(
        &mut self,
        event: Option<Result<UpstreamEvent, crate::upstream::UpstreamError>>,
        config: &Config,
    ) -> Option<Result<Piece, ApiError>> {
        let Mode::Text {
            reader,
            wants_json,
            prompt,
            ..
        } = &mut self.mode
        else {
            unreachable!("text() reads a text-chat reply");
        };
        match event {
            None | Some(Ok(UpstreamEvent::End)) => match reader.end() {
                Ending::Done(mut outcome) => {
                    if outcome.calls.is_empty() && !*wants_json {
                        outcome.text.push_str(&sources_block(&self.citations));
                    }
                    let stop = match outcome.finish {
                        Finish::Stop => StopReason::EndTurn,
                        Finish::ToolCalls => StopReason::ToolUse,
                    };
                    Some(Ok(Piece::Done {
                        text: outcome.text,
                        calls: outcome.calls,
                        stop,
                    }))
                }
                Ending::Correct(correction) => {
                    prompt.push_str(&self.completion);
                    prompt.push_str(&correction);
                    match self.answer.follow_up(config, correction).await {
                        Ok(()) => None,
                        Err(e) => Some(Err(e.into())),
                    }
                }
            },
            Some(Ok(UpstreamEvent::Delta(d))) => {
                self.completion.push_str(&d);
                let shown = reader.text(&d);
                (!shown.is_empty()).then_some(Ok(Piece::Content(shown)))
            }
            Some(Ok(UpstreamEvent::ReasoningDelta(d))) => {
                self.completion.push_str(&d);
                Some(Ok(Piece::Reasoning(d)))
            }
            Some(Ok(UpstreamEvent::Citations(c))) => {
                self.citations = c;
                None
            }
            // The web chats give none of the native events.
            Some(Ok(_)) => None,
            Some(Err(e)) => Some(Err(e.into())),
        }
    }
}

/// Files the upstream cannot take are the caller's 400, before anything is
/// fetched.
fn check_files(
    attachments: &[(usize, Attachment)],
    caps: crate::upstream::Capabilities,
    name: &str,
    param: &str,
) -> Result<(), ApiError> {
    for (_, attachment) in attachments {
        let refused = match attachment {
            Attachment::Image { .. } => !caps.images,
            Attachment::File { .. } => !caps.documents,
        };
        if refused {
            return Err(ApiError::invalid(
                param,
                format!(
                    "Files and images are not supported by this deployment's {name} upstream; send text parts only."
                ),
            ));
        }
    }
    Ok(())
}

/// An upstream that keeps no conversation cannot keep or continue one: the
/// caller holds the history and sends it whole.
fn refuse_kept_conversations(conversation: &Conversation, name: &str) -> Result<(), ApiError> {
    let param = if conversation.conversation_id.is_some() {
        "conversation_id"
    } else if conversation.keep_conversation {
        "keep_conversation"
    } else {
        return Ok(());
    };
    Err(ApiError::invalid(
        param,
        format!(
            "`{param}` is not available on this deployment's {name} upstream: it keeps no \
             conversation upstream. Send the whole history in `messages` each time, and leave \
             `conversation_id` and `keep_conversation` out."
        ),
    ))
}

/// The input estimate of a conversation sent as it is: its text, its tool
/// calls and definitions, its files (`files::token_estimate`).
fn estimate_prompt(conversation: &Conversation, files: &[Arc<FileUpload>]) -> u32 {
    let mut tokens = 0;
    for m in &conversation.messages {
        tokens += estimate_tokens(&m.text);
        for call in &m.tool_calls {
            tokens += estimate_tokens(&call.name) + estimate_tokens(&call.arguments);
        }
    }
    for tool in &conversation.tools {
        tokens += estimate_tokens(&tool.name)
            + estimate_tokens(&tool.description)
            + tool.parameters.as_deref().map_or(0, estimate_tokens);
    }
    tokens + files.iter().map(|f| files::token_estimate(f)).sum::<u32>()
}
