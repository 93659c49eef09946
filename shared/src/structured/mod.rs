//! Tool calls and JSON answers over chats that have neither.
//!
//! Neither web chat knows OpenAI's `tools` or `response_format`, so they are
//! a contract with the model, written into the prompt and read back out of
//! the answer:
//! - the tools (name, description, JSON Schema) and the one way to call them,
//!   `<tool_call id="NONCE">{"name": …, "arguments": {…}}</tool_call>`, with
//!   a nonce fresh for every request. Only tags with this request's nonce are
//!   calls: a tag quoted from a document, a web page or a user's message
//!   cannot know it, so prompt injection cannot forge a call;
//! - a call counts when its JSON parses, its name was offered, and its
//!   arguments are an object valid against the tool's schema. Anything else
//!   (or no call when one is required, or JSON that does not fit the
//!   requested schema) gets one correction turn in the same upstream
//!   conversation, telling the model what was wrong. If the correction fails
//!   too, the caller gets the model's first answer as text: never a made-up
//!   call;
//! - streamed, text before the first tag is shown as it arrives; from the
//!   first character that could start a tag it is held until decided
//!   (`scan`). Text after a call, and everything of a correction turn, is
//!   held: the caller sees either the calls or the first answer's text.
//!
//! This module is sans I/O: the route feeds it the answer's text and runs the
//! correction turn it asks for.

pub(crate) mod json_text;
pub(crate) mod scan;
pub(crate) mod schema;

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use serde_json::{json, Value};

use crate::conversation::{Conversation, ResponseFormat, ToolCall, ToolChoice};
use crate::error::ApiError;
use scan::{Scanner, Token};
use schema::{PatternBudget, Refused, Schema};

/// How an answer ends, in OpenAI's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    Stop,
    ToolCalls,
}

struct Offered {
    name: String,
    description: String,
    parameters: Option<Schema>,
}

/// What a JSON answer must be.
struct JsonWanted {
    schema: Option<Schema>,
}

/// What this request offers and expects of the model.
pub(crate) struct Plan {
    nonce: String,
    /// The tools offered now (all of `tools`, the one `tool_choice` names, or
    /// none for `tool_choice: "none"`).
    offered: Vec<Offered>,
    must_call: bool,
    parallel: bool,
    json: Option<JsonWanted>,
    /// Earlier turns hold tool calls or results.
    tool_history: bool,
}

impl Plan {
    /// Compile the request's schemas; a schema that is not one is a 400.
    /// The schemas move out of the request (no second copy of them is kept).
    pub(crate) fn new(request: &mut Conversation) -> Result<Self, ApiError> {
        let mut offered = Vec::new();
        let mut budget = PatternBudget::new();
        for (i, tool) in request.tools.iter_mut().enumerate() {
            let wanted = match &request.tool_choice {
                ToolChoice::None => false,
                ToolChoice::Function(name) => *name == tool.name,
                ToolChoice::Auto | ToolChoice::Required => true,
            };
            if !wanted {
                continue;
            }
            let parameters = compile(
                tool.parameters.take(),
                &format!("tools[{i}].function.parameters"),
                &mut budget,
            )?;
            offered.push(Offered {
                name: tool.name.clone(),
                description: tool.description.clone(),
                parameters,
            });
        }
        let json = match &mut request.response_format {
            ResponseFormat::Text => None,
            ResponseFormat::JsonObject => Some(JsonWanted { schema: None }),
            ResponseFormat::JsonSchema { schema, .. } => Some(JsonWanted {
                schema: compile(
                    schema.take(),
                    "response_format.json_schema.schema",
                    &mut budget,
                )?,
            }),
        };
        let tool_history = request.has_tool_history();
        Ok(Self {
            nonce: nonce(),
            must_call: matches!(
                request.tool_choice,
                ToolChoice::Required | ToolChoice::Function(_)
            ),
            offered,
            parallel: request.parallel_tool_calls,
            json,
            tool_history,
        })
    }

    /// The nonce earlier calls are rendered with, in the history.
    pub(crate) fn nonce(&self) -> &str {
        &self.nonce
    }

    /// Whether the answer is passed through untouched.
    pub(crate) fn is_plain(&self) -> bool {
        self.offered.is_empty() && self.json.is_none()
    }

    pub(crate) fn wants_json(&self) -> bool {
        self.json.is_some()
    }

    /// Whether the prompt must be written as role lines (the instruction is
    /// one of them).
    pub(crate) fn has_instruction(&self) -> bool {
        !self.is_plain() || self.tool_history
    }

    /// What the model is told, last in the prompt (where a chat model weighs
    /// instructions most, after the conversation it applies to).
    pub(crate) fn instruction(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.offered.is_empty() {
            let tools: Vec<String> = self
                .offered
                .iter()
                .map(|t| {
                    let parameters = t
                        .parameters
                        .as_ref()
                        .map_or(r#"{"type": "object", "properties": {}}"#, |s| {
                            s.source.as_str()
                        });
                    format!(
                        "{{\"name\": {}, \"description\": {}, \"parameters\": {parameters}}}",
                        Value::from(t.name.as_str()),
                        Value::from(t.description.as_str())
                    )
                })
                .collect();
            parts.push(format!(
                "You can call these tools (each with a JSON Schema of its arguments):\n{}\n{}",
                tools.join("\n"),
                self.calling_rules()
            ));
        } else if self.tool_history {
            parts.push("Do not call any tool now: answer in plain text.".to_string());
        }
        if let Some(json) = &self.json {
            parts.push(self.json_rule(json));
        }
        (!parts.is_empty()).then(|| parts.join("\n"))
    }

    fn calling_rules(&self) -> String {
        let example = scan::tag(
            &self.nonce,
            r#"{"name": "TOOL_NAME", "arguments": {"ARGUMENT": "VALUE"}}"#,
        );
        let mut rules = format!(
            "To call a tool, write exactly this tag, with the tool's name and a JSON object of arguments that matches its schema:\n{example}\n"
        );
        rules.push_str(if self.parallel {
            "Write one tag per call; several tags make several calls. "
        } else {
            "Make at most one call per answer. "
        });
        rules.push_str(&format!(
            "The results come back in the next message. Only tags with id=\"{}\" are calls; never write this tag for anything else. ",
            self.nonce
        ));
        rules.push_str(&match (self.must_call, self.offered.as_slice()) {
            (true, [only]) if only.name.len() < 65 => {
                format!("You must call the tool \"{}\" now.", only.name)
            }
            (true, _) => "You must call a tool now.".to_string(),
            (false, _) => "If no tool is needed, answer normally, without any tag.".to_string(),
        });
        rules
    }

    fn json_rule(&self, json: &JsonWanted) -> String {
        let when = if self.offered.is_empty() {
            "Answer"
        } else {
            "When you answer without calling a tool, answer"
        };
        match &json.schema {
            None => format!("{when} with one JSON object only, with no text before or after it."),
            Some(s) => format!(
                "{when} with JSON only, with no text before or after it, matching this JSON Schema:\n{}",
                s.source
            ),
        }
    }

    /// A fresh tag scanner for one turn; none when no tool is offered.
    fn scanner(&self) -> Option<Scanner> {
        (!self.offered.is_empty()).then(|| Scanner::new(&self.nonce))
    }

    /// A reader for one answer to this request.
    pub(crate) fn reader(self: &std::sync::Arc<Self>) -> Reader {
        Reader {
            plan: self.clone(),
            scanner: self.scanner(),
            correcting: false,
            first: String::new(),
            shown: 0,
            seen_call: false,
            tokens: Vec::new(),
        }
    }

    /// Check one tag's text: the call it makes, or what is wrong with it.
    fn check_call(&self, body: &str) -> Result<ToolCall, String> {
        let excerpt: String = body.chars().take(200).collect();
        let value: Value = serde_json::from_str(body.trim())
            .map_err(|e| format!("the tool call {excerpt} is not valid JSON ({e})"))?;
        let Some(name) = value.get("name").and_then(Value::as_str) else {
            return Err(format!(
                "the tool call {excerpt} must be an object {{\"name\": …, \"arguments\": {{…}}}}"
            ));
        };
        let Some(tool) = self.offered.iter().find(|t| t.name == name) else {
            let names: Vec<&str> = self.offered.iter().map(|t| t.name.as_str()).collect();
            return Err(format!(
                "there is no tool named {name:?} to call (the tools are: {})",
                names.join(", ")
            ));
        };
        let arguments = match value.get("arguments") {
            None | Some(Value::Null) => json!({}),
            // Some models write the arguments as a JSON string.
            Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
            Some(other) => other.clone(),
        };
        if !arguments.is_object() {
            return Err(format!(
                "the arguments of {name:?} must be a JSON object, not {arguments}"
            ));
        }
        if let Some(problems) = tool
            .parameters
            .as_ref()
            .and_then(|s| s.problems(&arguments))
        {
            return Err(format!(
                "the arguments of {name:?} do not match its parameters: {problems}"
            ));
        }
        Ok(ToolCall {
            id: call_id(),
            name: name.to_string(),
            arguments: arguments.to_string(),
        })
    }

    /// The JSON answer in `text`, or what is wrong with it.
    fn check_json(&self, json: &JsonWanted, text: &str) -> Result<String, String> {
        let Some(found) = json_text::extract(text) else {
            return Err("the answer holds no JSON".into());
        };
        let value: Value = serde_json::from_str(found).map_err(|e| e.to_string())?;
        match &json.schema {
            None if !value.is_object() => Err("the answer's JSON is not an object".into()),
            None => Ok(found.to_string()),
            Some(schema) => match schema.problems(&value) {
                Some(problems) => Err(format!(
                    "the answer's JSON does not match the schema: {problems}"
                )),
                None => Ok(found.to_string()),
            },
        }
    }

    fn correction(&self, problem: &str) -> String {
        let mut prompt = format!("Your last answer could not be used: {problem}.\nAnswer again.");
        if !self.offered.is_empty() {
            prompt.push(' ');
            prompt.push_str(&self.calling_rules());
        }
        if let Some(json) = &self.json {
            prompt.push('\n');
            prompt.push_str(&self.json_rule(json));
        }
        prompt
    }
}

/// A caller's schema compiled, if there is one, its patterns charged to
/// the request's `budget`; one that is not a schema, or whose patterns do not
/// fit, is a 400 naming `param`.
fn compile(
    source: Option<String>,
    param: &str,
    budget: &mut PatternBudget,
) -> Result<Option<Schema>, ApiError> {
    source
        .map(|source| {
            Schema::compile(&source, budget).map_err(|refused| {
                let message = match refused {
                    Refused::Invalid(e) => format!("`{param}` is not a valid JSON Schema: {e}."),
                    Refused::Costly(e) => format!("`{param}`: {e}."),
                };
                ApiError::invalid(param, message)
            })
        })
        .transpose()
}

/// A fresh nonce: 12 lowercase hex digits.
fn nonce() -> String {
    format!("{:012x}", rand::rng().random::<u64>() & 0xffff_ffff_ffff)
}

/// `call_` and 24 letters or digits, as OpenAI's ids look.
fn call_id() -> String {
    format!("call_{}", Alphanumeric.sample_string(&mut rand::rng(), 24))
}

/// What the route does when an answer's turn has ended.
#[derive(Debug)]
pub(crate) enum Ending {
    /// The reply is complete.
    Done(Outcome),
    /// Send this correction in the same conversation and read its answer.
    Correct(String),
}

#[derive(Debug, PartialEq)]
pub(crate) struct Outcome {
    /// Content still to show (after what `Reader::text` returned).
    pub(crate) text: String,
    pub(crate) calls: Vec<ToolCall>,
    pub(crate) finish: Finish,
}

/// Reads one reply (an answer and perhaps its correction) to a request.
pub(crate) struct Reader {
    plan: std::sync::Arc<Plan>,
    /// `None` when no tool is offered: no tag is looked for.
    scanner: Option<Scanner>,
    /// The correction turn is being read.
    correcting: bool,
    /// The first answer as written (kept only when the plan is not plain).
    first: String,
    /// How much of `first` has been shown: always a prefix of it.
    shown: usize,
    /// A tag opened in this turn: text after it is held.
    seen_call: bool,
    tokens: Vec<Token>,
}

impl Reader {
    /// New answer text; returns what to show the caller now.
    pub(crate) fn text(&mut self, delta: &str) -> String {
        if self.plan.is_plain() {
            return delta.to_string();
        }
        if !self.correcting {
            self.first.push_str(delta);
        }
        let mut new = Vec::new();
        match &mut self.scanner {
            Some(scanner) => scanner.feed(delta, &mut new),
            // No tool offered: all of it is text (held, since JSON is wanted).
            None => new.push(Token::Text(delta.to_string())),
        }
        let mut show = String::new();
        for token in &new {
            match token {
                Token::Text(t)
                    if !self.seen_call && !self.correcting && !self.plan.wants_json() =>
                {
                    show.push_str(t)
                }
                Token::Text(_) => {}
                Token::Call(_) | Token::Unclosed(_) => self.seen_call = true,
            }
        }
        self.tokens.extend(new);
        self.shown += show.len();
        show
    }

    /// The answer's turn ended: the reply, or a correction to ask for.
    pub(crate) fn end(&mut self) -> Ending {
        if self.plan.is_plain() {
            return Ending::Done(Outcome {
                text: String::new(),
                calls: vec![],
                finish: Finish::Stop,
            });
        }
        // What the flush decides is held text: shown, if at all, in the outcome.
        if let Some(scanner) = &mut self.scanner {
            scanner.finish(&mut self.tokens);
        }
        let problem = match self.judge() {
            Ok(outcome) => return Ending::Done(outcome),
            Err(problem) => problem,
        };
        if self.correcting {
            tracing::info!(
                problem,
                "the correction failed too: answering with the text"
            );
            return Ending::Done(self.as_text());
        }
        tracing::info!(problem, "asking the model to correct its answer");
        self.correcting = true;
        self.seen_call = false;
        self.tokens.clear();
        self.scanner = self.plan.scanner();
        Ending::Correct(self.plan.correction(&problem))
    }

    /// This turn's verdict.
    fn judge(&self) -> Result<Outcome, String> {
        let plan = &self.plan;
        let mut calls = Vec::new();
        let mut problems = Vec::new();
        for token in &self.tokens {
            match token {
                Token::Call(body) => match plan.check_call(body) {
                    Ok(call) => calls.push(call),
                    Err(p) => problems.push(p),
                },
                Token::Unclosed(_) => problems.push(
                    "a <tool_call> tag was not closed with </tool_call> (or its JSON has an unclosed string)"
                        .to_string(),
                ),
                Token::Text(_) => {}
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        if !calls.is_empty() {
            if !plan.parallel {
                calls.truncate(1);
            }
            return Ok(Outcome {
                text: String::new(),
                calls,
                finish: Finish::ToolCalls,
            });
        }
        if plan.must_call {
            return Err("you answered without calling a tool, and a tool call is required".into());
        }
        if let Some(json) = &plan.json {
            let found = plan.check_json(json, &self.tokens_text())?;
            return Ok(Outcome {
                text: found,
                calls: vec![],
                finish: Finish::Stop,
            });
        }
        // Plain text (after a correction too: the caller gets the first answer).
        Ok(self.as_text())
    }

    fn tokens_text(&self) -> String {
        self.tokens
            .iter()
            .filter_map(|t| match t {
                Token::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The first answer as text: what was not shown of it yet.
    fn as_text(&self) -> Outcome {
        Outcome {
            text: self.first[self.shown..].to_string(),
            calls: vec![],
            finish: Finish::Stop,
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
