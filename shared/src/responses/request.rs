//! An OpenAI Responses request (`POST /v1/responses`, stateless) parsed
//! into the one internal [`Conversation`], with what the response object
//! echoes back.
//!
//! Typed structs borrowed from the body, a wrong field named by its path,
//! every item, part and tool counted against the request's budget
//! (`wire.rs`), as on the Anthropic door. What Codex, the Agents SDK and
//! the AI SDK send is taken (front-doors.md section 2, agents-observed.md):
//! no `instructions` and a `developer` message instead, their own output
//! items replayed with ids and statuses, `store`, `include`,
//! `prompt_cache_key`, `client_metadata`, reasoning items with
//! `encrypted_content` (ours: the upstream's thinking signature, so a
//! native upstream gets its thinking back), a `namespace` tool and hosted
//! tools (left out of what the model is offered, with a log line: a 400
//! would end the agent's run). What would need server-side state
//! (`previous_response_id`, `conversation`, `prompt`, `background`) is a
//! 400 that says to resend the items.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::conversation::{
    Attachment, Conversation, Message, ResponseFormat, Role, Thinking, ThinkingWanted, Tool,
    ToolCall, ToolChoice,
};
use crate::error::ApiError;
use crate::openai::chat::MAX_SCHEMA_BYTES;
use crate::wire::{check_range, Counted, TextOr};

/// What a `/v1/responses` request asks for.
#[derive(Debug)]
pub(crate) struct ResponsesRequest {
    pub conversation: Conversation,
    pub stream: bool,
    /// Tools offered as Codex's custom (freeform) tools: their calls go back
    /// as `custom_tool_call` items with the raw input.
    pub custom_tools: HashSet<String>,
    /// The request's settings as the response object repeats them.
    pub echo: Map<String, Value>,
}

/// The single string parameter a custom tool is offered with.
pub(crate) const CUSTOM_INPUT: &str = "content";

impl ResponsesRequest {
    pub(crate) fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let body = crate::openai::body::normalized(body);
        let wire: Wire = crate::wire::parse(&body)?;
        wire.into_request()
    }
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    input: Option<TextOr<'a, Item<'a>>>,
    #[serde(borrow)]
    instructions: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tools: Option<Counted<WireTool<'a>>>,
    #[serde(borrow)]
    tool_choice: Option<&'a RawValue>,
    parallel_tool_calls: Option<bool>,
    #[serde(borrow)]
    text: Option<TextConfig<'a>>,
    #[serde(borrow)]
    reasoning: Option<Reasoning<'a>>,
    max_output_tokens: Option<i64>,
    #[serde(borrow)]
    previous_response_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    conversation: Option<&'a RawValue>,
    #[serde(borrow)]
    prompt: Option<&'a RawValue>,
    background: Option<bool>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stream: Option<bool>,
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(borrow)]
    safety_identifier: Option<Cow<'a, str>>,
    #[serde(borrow)]
    prompt_cache_key: Option<Cow<'a, str>>,
    #[serde(borrow)]
    service_tier: Option<Cow<'a, str>>,
    #[serde(borrow)]
    truncation: Option<Cow<'a, str>>,
    top_logprobs: Option<i64>,
    max_tool_calls: Option<i64>,
}

/// Every field any input item has; which ones must be there depends on
/// `type` (a message may leave `type` out).
#[derive(Deserialize)]
struct Item<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<TextOr<'a, Part<'a>>>,
    #[serde(borrow)]
    call_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
    #[serde(borrow)]
    input: Option<Cow<'a, str>>,
    #[serde(borrow)]
    output: Option<TextOr<'a, Part<'a>>>,
    #[serde(borrow)]
    summary: Option<Counted<Part<'a>>>,
    #[serde(borrow)]
    encrypted_content: Option<Cow<'a, str>>,
}

/// Every field any content part has.
#[derive(Deserialize)]
struct Part<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow)]
    image_url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    file_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    file_data: Option<Cow<'a, str>>,
    #[serde(borrow)]
    file_url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    filename: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireTool<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    description: Option<Cow<'a, str>>,
    #[serde(borrow)]
    parameters: Option<&'a RawValue>,
    #[serde(borrow)]
    format: Option<&'a RawValue>,
    #[serde(borrow)]
    tools: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct TextConfig<'a> {
    #[serde(borrow)]
    format: Option<Format<'a>>,
    #[serde(borrow)]
    verbosity: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Format<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    schema: Option<&'a RawValue>,
    strict: Option<bool>,
}

#[derive(Deserialize)]
struct Reasoning<'a> {
    #[serde(borrow)]
    effort: Option<Cow<'a, str>>,
    #[serde(borrow)]
    summary: Option<Cow<'a, str>>,
}

/// A tool choice as sent: a mode, or an object.
#[derive(Deserialize)]
struct ChoiceObject<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    mode: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tools: Option<Vec<ChoiceObject<'a>>>,
}

fn required(param: &str, what: &str) -> ApiError {
    ApiError::BadRequest {
        message: format!("Missing required parameter: '{param}' ({what})."),
        param: Some(param.to_string()),
        code: "missing_required_parameter",
    }
}

fn invalid(param: &str, message: String) -> ApiError {
    ApiError::invalid(param, message)
}

/// What needs a store this gateway does not keep.
fn stateless(param: &str, what: &str) -> ApiError {
    ApiError::BadRequest {
        message: format!(
            "`{param}` is not supported: this gateway is stateless and keeps no {what}. Send the whole \
             conversation as `input` items each time (Codex and the Agents SDK do), and leave `{param}` out."
        ),
        param: Some(param.to_string()),
        code: "unsupported_parameter",
    }
}

/// A value's JSON as the response repeats it.
fn echoed(raw: Option<&RawValue>) -> Value {
    raw.and_then(|r| serde_json::from_str(r.get()).ok())
        .unwrap_or(Value::Null)
}

impl Wire<'_> {
    fn into_request(self) -> Result<ResponsesRequest, ApiError> {
        if let Some(id) = &self.previous_response_id {
            return Err(ApiError::BadRequest {
                message: format!(
                    "Previous response with id '{id}' not found. This gateway is stateless: send the \
                     whole conversation as `input` items instead of `previous_response_id`."
                ),
                param: Some("previous_response_id".into()),
                code: "previous_response_not_found",
            });
        }
        if self.conversation.is_some() {
            return Err(stateless("conversation", "conversations"));
        }
        if self.prompt.is_some() {
            return Err(stateless("prompt", "prompt templates"));
        }
        if self.background == Some(true) {
            return Err(stateless("background", "responses to collect later"));
        }
        let model = match &self.model {
            Some(m) if !m.trim().is_empty() => m.to_string(),
            Some(_) => return Err(invalid("model", "`model` must name a model.".into())),
            None => return Err(required("model", "the model to answer with")),
        };
        let max_tokens = match self.max_output_tokens {
            Some(n) if n >= 1 => Some(n.min(u32::MAX as i64) as u32),
            Some(n) => {
                return Err(invalid(
                    "max_output_tokens",
                    format!("`max_output_tokens` must be at least 1, got {n}."),
                ))
            }
            None => None,
        };
        check_range("temperature", self.temperature, 0.0, 2.0)?;
        check_range("top_p", self.top_p, 0.0, 1.0)?;

        let mut turns = Turns::default();
        if let Some(instructions) = self
            .instructions
            .as_deref()
            .filter(|i| !i.trim().is_empty())
        {
            turns.messages.push(Message {
                role: Role::System,
                text: instructions.to_string(),
                ..Message::default()
            });
        }
        match self.input {
            None => return Err(required("input", "the conversation so far")),
            Some(TextOr::Text(t)) => turns.messages.push(Message {
                role: Role::User,
                text: t.into_owned(),
                ..Message::default()
            }),
            Some(TextOr::List(items)) => {
                if items.is_empty() {
                    return Err(invalid(
                        "input",
                        "`input` must hold at least one item.".into(),
                    ));
                }
                for (i, item) in items.into_iter().enumerate() {
                    turns.item(item, i)?;
                }
            }
        }
        if !turns.messages.iter().any(|m| !m.role.is_instruction()) {
            return Err(invalid(
                "input",
                "`input` must hold a user message, not only instructions.".into(),
            ));
        }

        let (tools, custom_tools, dropped) = offered_tools(self.tools.map(|t| t.0))?;
        let parallel_tool_calls = self.parallel_tool_calls.unwrap_or(true);
        let (tool_choice, tools) = choose(self.tool_choice, tools, &dropped)?;

        let response_format = match self.text.as_ref().and_then(|t| t.format.as_ref()) {
            None => ResponseFormat::Text,
            Some(f) => match f.kind.as_deref() {
                Some("text") => ResponseFormat::Text,
                Some("json_object") => ResponseFormat::JsonObject,
                Some("json_schema") => {
                    let Some(schema) = f.schema else {
                        return Err(required(
                            "text.format.schema",
                            "the JSON Schema the answer must follow",
                        ));
                    };
                    if !schema.get().trim_start().starts_with('{') {
                        return Err(invalid(
                            "text.format.schema",
                            "`text.format.schema` must be a JSON Schema object.".into(),
                        ));
                    }
                    ResponseFormat::JsonSchema {
                        name: f.name.as_deref().unwrap_or("response").to_string(),
                        schema: Some(schema.get().to_string()),
                    }
                }
                Some(other) => {
                    return Err(invalid(
                        "text.format.type",
                        format!(
                            "`{other}` is not a text format; use text, json_object or json_schema."
                        ),
                    ))
                }
                None => {
                    return Err(required(
                        "text.format.type",
                        "text, json_object or json_schema",
                    ))
                }
            },
        };
        let thinking = match self.reasoning.as_ref().and_then(|r| r.effort.as_deref()) {
            None => ThinkingWanted::Default,
            Some("none") => ThinkingWanted::Off,
            Some("minimal" | "low" | "medium" | "high" | "xhigh") => ThinkingWanted::On,
            Some(other) => {
                return Err(invalid(
                    "reasoning.effort",
                    format!("`{other}` is not a reasoning effort; use none, minimal, low, medium, high or xhigh."),
                ))
            }
        };

        let mut echo = Map::new();
        echo.insert("instructions".into(), json!(self.instructions));
        echo.insert("tools".into(), tools_echo(&tools, &custom_tools));
        echo.insert(
            "tool_choice".into(),
            match self.tool_choice {
                Some(raw) => echoed(Some(raw)),
                None => json!("auto"),
            },
        );
        echo.insert("parallel_tool_calls".into(), json!(parallel_tool_calls));
        let text_echo = match &self.text {
            None => json!({"format": {"type": "text"}}),
            Some(t) => {
                let mut text = json!({"format": match &t.format {
                    None => json!({"type": "text"}),
                    Some(f) => {
                        let mut v = json!({"type": f.kind});
                        if f.kind.as_deref() == Some("json_schema") {
                            v["name"] = json!(f.name.as_deref().unwrap_or("response"));
                            v["schema"] = echoed(f.schema);
                            v["strict"] = json!(f.strict.unwrap_or(false));
                        }
                        v
                    }
                }});
                if let Some(v) = &t.verbosity {
                    text["verbosity"] = json!(v);
                }
                text
            }
        };
        echo.insert("text".into(), text_echo);
        echo.insert("temperature".into(), json!(self.temperature.unwrap_or(1.0)));
        echo.insert("top_p".into(), json!(self.top_p.unwrap_or(1.0)));
        echo.insert(
            "reasoning".into(),
            json!({
                "effort": self.reasoning.as_ref().and_then(|r| r.effort.as_deref()),
                "summary": self.reasoning.as_ref().and_then(|r| r.summary.as_deref()),
            }),
        );
        echo.insert("max_output_tokens".into(), json!(self.max_output_tokens));
        echo.insert("max_tool_calls".into(), json!(self.max_tool_calls));
        echo.insert("metadata".into(), {
            let m = echoed(self.metadata);
            if m.is_object() {
                m
            } else {
                json!({})
            }
        });
        echo.insert("user".into(), json!(self.user));
        echo.insert("safety_identifier".into(), json!(self.safety_identifier));
        echo.insert("prompt_cache_key".into(), json!(self.prompt_cache_key));
        echo.insert(
            "service_tier".into(),
            json!(self.service_tier.as_deref().unwrap_or("default")),
        );
        echo.insert(
            "truncation".into(),
            json!(self.truncation.as_deref().unwrap_or("disabled")),
        );
        echo.insert("top_logprobs".into(), json!(self.top_logprobs.unwrap_or(0)));

        Ok(ResponsesRequest {
            conversation: Conversation {
                model,
                messages: turns.messages,
                tools,
                tool_choice,
                parallel_tool_calls,
                response_format,
                thinking,
                max_tokens,
                sampling: crate::conversation::Sampling {
                    temperature: self.temperature,
                    top_p: self.top_p,
                },
                keep_conversation: false,
                conversation_id: None,
            },
            stream: self.stream.unwrap_or(false),
            custom_tools,
            echo,
        })
    }
}

/// The tools offered, the custom ones' names, the ones left out.
type Offered = (Vec<Tool>, HashSet<String>, Vec<String>);

/// The tools the model is offered (functions, and custom tools as
/// functions of one string), the custom ones' names, and the hosted and
/// namespace tools left out (name or type).
fn offered_tools(wire: Option<Vec<WireTool<'_>>>) -> Result<Offered, ApiError> {
    let (mut tools, mut custom, mut dropped) = (Vec::new(), HashSet::new(), Vec::new());
    let mut schema_bytes = 0;
    for (i, t) in wire.unwrap_or_default().into_iter().enumerate() {
        let param = format!("tools[{i}]");
        let kind = t.kind.as_deref().unwrap_or("function");
        match kind {
            "function" | "custom" => {}
            _ => {
                // Hosted tools (web_search, file_search, computer use, code
                // interpreter, image generation, mcp, local_shell, …) and
                // Codex's namespaces of sub-agent functions.
                dropped.push(match &t.name {
                    Some(n) => format!("{n} ({kind})"),
                    None => kind.to_string(),
                });
                if kind == "namespace" && t.tools.is_some() {
                    tracing::debug!(namespace = ?t.name, "a namespace's tools are left out with it");
                }
                continue;
            }
        }
        let Some(name) = t.name.filter(|n| !n.is_empty()) else {
            return Err(required(&format!("{param}.name"), "the tool's name"));
        };
        let description = t.description.map(Cow::into_owned).unwrap_or_default();
        let tool = if kind == "custom" {
            let grammar = t.format.map(|f| f.get().to_string());
            custom.insert(name.to_string());
            Tool {
                name: name.into_owned(),
                description: match grammar {
                    Some(g) => format!(
                        "{description}\n\nPut the whole input in `{CUSTOM_INPUT}`, as this format says:\n```\n{g}\n```"
                    ),
                    None => description,
                },
                parameters: Some(format!(
                    r#"{{"type":"object","properties":{{"{CUSTOM_INPUT}":{{"type":"string"}}}},"required":["{CUSTOM_INPUT}"]}}"#
                )),
            }
        } else {
            let parameters = match t.parameters {
                Some(p) if p.get().trim_start().starts_with('{') => Some(p.get().to_string()),
                Some(p) if p.get().trim() == "null" => None,
                Some(_) => {
                    return Err(invalid(
                        &format!("{param}.parameters"),
                        format!("`{param}.parameters` must be a JSON Schema object."),
                    ))
                }
                None => None,
            };
            Tool {
                name: name.into_owned(),
                description,
                parameters,
            }
        };
        schema_bytes += tool.parameters.as_deref().map_or(0, str::len);
        if schema_bytes > MAX_SCHEMA_BYTES {
            return Err(invalid(
                "tools",
                format!("The tools' parameter schemas take more than {MAX_SCHEMA_BYTES} bytes in all; offer fewer or smaller tools."),
            ));
        }
        tools.push(tool);
    }
    if !dropped.is_empty() {
        tracing::info!(
            tools = %dropped.join(", "),
            "tools left out of what the model is offered: hosted or namespaced, the gateway cannot run them"
        );
    }
    Ok((tools, custom, dropped))
}

/// The tool choice, and the tools it leaves on offer (`allowed_tools`
/// narrows them).
fn choose(
    raw: Option<&RawValue>,
    tools: Vec<Tool>,
    dropped: &[String],
) -> Result<(ToolChoice, Vec<Tool>), ApiError> {
    let default = if tools.is_empty() {
        ToolChoice::None
    } else {
        ToolChoice::Auto
    };
    let Some(raw) = raw else {
        return Ok((default, tools));
    };
    let forced = |name: &str, tools: &[Tool]| -> Result<ToolChoice, ApiError> {
        if tools.iter().any(|t| t.name == name) {
            Ok(ToolChoice::Function(name.to_string()))
        } else if dropped.iter().any(|d| d.starts_with(&format!("{name} ("))) {
            Err(invalid(
                "tool_choice",
                format!("`tool_choice` forces `{name}`, a tool this gateway cannot run; leave it to `auto`."),
            ))
        } else {
            Err(invalid(
                "tool_choice",
                format!("`tool_choice` names `{name}`, which is not one of the tools in `tools`."),
            ))
        }
    };
    let choice = if let Ok(mode) = serde_json::from_str::<Cow<str>>(raw.get()) {
        match mode.as_ref() {
            "auto" => default,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(invalid(
                    "tool_choice",
                    format!(
                        "`{other}` is not a tool choice; use auto, none, required or an object."
                    ),
                ))
            }
        }
    } else {
        let object: ChoiceObject = serde_json::from_str(raw.get()).map_err(|e| {
            invalid(
                "tool_choice",
                format!("`tool_choice` must be a string or an object: {e}."),
            )
        })?;
        match object.kind.as_deref() {
            Some("function" | "custom") => {
                let Some(name) = object.name.filter(|n| !n.is_empty()) else {
                    return Err(required("tool_choice.name", "the tool to call"));
                };
                forced(&name, &tools)?
            }
            Some("allowed_tools") => {
                let allowed: Vec<String> = object
                    .tools
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|t| t.name.map(Cow::into_owned))
                    .collect();
                let tools: Vec<Tool> = tools
                    .into_iter()
                    .filter(|t| allowed.contains(&t.name))
                    .collect();
                let choice = match object.mode.as_deref() {
                    Some("required") if !tools.is_empty() => ToolChoice::Required,
                    _ if tools.is_empty() => ToolChoice::None,
                    _ => ToolChoice::Auto,
                };
                return Ok((choice, tools));
            }
            Some(hosted) => {
                return Err(invalid(
                    "tool_choice",
                    format!(
                        "`tool_choice` forces the hosted tool `{hosted}`, which this gateway cannot run; use auto, or a function."
                    ),
                ))
            }
            None => return Err(required("tool_choice.type", "function or allowed_tools")),
        }
    };
    if matches!(choice, ToolChoice::Required) && tools.is_empty() {
        return Err(invalid(
            "tool_choice",
            "`tool_choice` requires a tool call, but `tools` offers none the gateway can run."
                .into(),
        ));
    }
    Ok((choice, tools))
}

/// The tools the response object lists: what the model was offered, in
/// the Responses shape.
fn tools_echo(tools: &[Tool], custom: &HashSet<String>) -> Value {
    Value::Array(
        tools
            .iter()
            .map(|t| {
                if custom.contains(&t.name) {
                    json!({"type": "custom", "name": t.name, "description": t.description})
                } else {
                    let parameters = t
                        .parameters
                        .as_deref()
                        .and_then(|p| serde_json::from_str::<Value>(p).ok())
                        .unwrap_or(Value::Null);
                    json!({"type": "function", "name": t.name, "description": t.description,
                           "parameters": parameters, "strict": false})
                }
            })
            .collect(),
    )
}

/// The messages built so far.
#[derive(Default)]
struct Turns {
    messages: Vec<Message>,
}

impl Turns {
    fn item(&mut self, item: Item<'_>, i: usize) -> Result<(), ApiError> {
        let param = format!("input[{i}]");
        let kind = item.kind.as_deref().unwrap_or("message");
        match kind {
            "message" => self.message(item, &param),
            "function_call" | "custom_tool_call" => {
                let call_id = item
                    .call_id
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| required(&format!("{param}.call_id"), "the call's id"))?;
                let name = item
                    .name
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| required(&format!("{param}.name"), "the tool called"))?;
                let arguments = if kind == "custom_tool_call" {
                    json!({ CUSTOM_INPUT: item.input.as_deref().unwrap_or_default() }).to_string()
                } else {
                    item.arguments.map(Cow::into_owned).unwrap_or_default()
                };
                let call = ToolCall {
                    id: call_id.into_owned(),
                    name: name.into_owned(),
                    arguments,
                };
                match self.messages.last_mut() {
                    Some(m) if m.role == Role::Assistant => m.tool_calls.push(call),
                    _ => self.messages.push(Message {
                        role: Role::Assistant,
                        tool_calls: vec![call],
                        ..Message::default()
                    }),
                }
                Ok(())
            }
            "function_call_output" | "custom_tool_call_output" => {
                let call_id = item
                    .call_id
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| required(&format!("{param}.call_id"), "the call it answers"))?;
                let (text, images) = parts_text(item.output, &format!("{param}.output"))?;
                self.messages.push(Message {
                    role: Role::Tool,
                    text,
                    tool_call_id: Some(call_id.into_owned()),
                    ..Message::default()
                });
                if !images.is_empty() {
                    self.messages.push(Message {
                        role: Role::User,
                        attachments: images,
                        ..Message::default()
                    });
                }
                Ok(())
            }
            "reasoning" => {
                let text = item
                    .summary
                    .map(|s| s.0)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|p| p.text.map(Cow::into_owned))
                    .collect::<Vec<_>>()
                    .join("\n\n");
                let thinking = Thinking {
                    text,
                    signature: item
                        .encrypted_content
                        .map(Cow::into_owned)
                        .unwrap_or_default(),
                };
                // Reasoning opens the assistant turn it came with.
                match self.messages.last_mut() {
                    Some(m)
                        if m.role == Role::Assistant
                            && m.text.is_empty()
                            && m.tool_calls.is_empty() =>
                    {
                        m.thinking.push(thinking)
                    }
                    _ => self.messages.push(Message {
                        role: Role::Assistant,
                        thinking: vec![thinking],
                        ..Message::default()
                    }),
                }
                Ok(())
            }
            other => {
                // Hosted tools' calls (web_search_call, …) and item
                // references: nothing the gateway ran or can look up.
                tracing::info!(
                    item = other,
                    "input item left out: not one the gateway reads"
                );
                Ok(())
            }
        }
    }

    fn message(&mut self, item: Item<'_>, param: &str) -> Result<(), ApiError> {
        let role = match item.role.as_deref() {
            Some(r) => Role::parse(r).filter(|r| *r != Role::Tool).ok_or_else(|| {
                invalid(
                    &format!("{param}.role"),
                    format!("`{r}` is not a role; use user, assistant, system or developer."),
                )
            })?,
            None => {
                return Err(required(
                    &format!("{param}.role"),
                    "user, assistant, system or developer",
                ))
            }
        };
        let Some(content) = item.content else {
            return Err(required(
                &format!("{param}.content"),
                "the message's text or parts",
            ));
        };
        let (text, attachments) = match content {
            TextOr::Text(t) => (t.into_owned(), Vec::new()),
            TextOr::List(parts) => {
                let mut texts = Vec::new();
                let mut attachments = Vec::new();
                for (j, p) in parts.into_iter().enumerate() {
                    let pp = format!("{param}.content[{j}]");
                    match p.kind.as_deref() {
                        Some("input_text" | "output_text" | "text") => texts.push(
                            p.text
                                .ok_or_else(|| required(&format!("{pp}.text"), "the text"))?
                                .into_owned(),
                        ),
                        Some("refusal") => {
                            texts.push(p.refusal.map(Cow::into_owned).unwrap_or_default())
                        }
                        Some("input_image") if role == Role::User => {
                            if p.file_id.is_some() {
                                return Err(stateless(&format!("{pp}.file_id"), "uploaded files"));
                            }
                            let url = p.image_url.ok_or_else(|| {
                                required(&format!("{pp}.image_url"), "the image's URL or data: URL")
                            })?;
                            attachments.push((
                                j,
                                Attachment::Image {
                                    url: url.into_owned(),
                                },
                            ));
                        }
                        Some("input_file") if role == Role::User => {
                            if p.file_id.is_some() {
                                return Err(stateless(&format!("{pp}.file_id"), "uploaded files"));
                            }
                            let url = match (p.file_data, p.file_url) {
                                (Some(data), _) if data.starts_with("data:") => data.into_owned(),
                                (Some(data), _) => {
                                    let mime = p
                                        .filename
                                        .as_deref()
                                        .and_then(|f| mime_guess::from_path(f).first_raw())
                                        .unwrap_or("application/octet-stream");
                                    format!("data:{mime};base64,{data}")
                                }
                                (None, Some(url)) => url.into_owned(),
                                (None, None) => {
                                    return Err(required(
                                        &format!("{pp}.file_data"),
                                        "the file's bytes (or `file_url`)",
                                    ))
                                }
                            };
                            attachments.push((
                                j,
                                Attachment::File {
                                    url,
                                    filename: p.filename.map(Cow::into_owned),
                                },
                            ));
                        }
                        Some(other) => {
                            return Err(invalid(
                                &format!("{pp}.type"),
                                format!(
                                    "`{other}` is not a content part a {} message takes.",
                                    role.as_str()
                                ),
                            ))
                        }
                        None => return Err(required(&format!("{pp}.type"), "the part's type")),
                    }
                }
                (texts.join("\n"), attachments)
            }
        };
        if role == Role::Assistant {
            // An assistant message after its reasoning joins that turn.
            if let Some(m) = self.messages.last_mut().filter(|m| {
                m.role == Role::Assistant && m.text.is_empty() && m.tool_calls.is_empty()
            }) {
                m.text = text;
                return Ok(());
            }
        }
        self.messages.push(Message {
            role,
            text,
            attachments,
            ..Message::default()
        });
        Ok(())
    }
}

/// A tool output's text (a string, or `input_text` parts) and its images.
fn parts_text(
    output: Option<TextOr<'_, Part<'_>>>,
    param: &str,
) -> Result<(String, Vec<(usize, Attachment)>), ApiError> {
    match output {
        None => Err(required(param, "the tool's output")),
        Some(TextOr::Text(t)) => Ok((t.into_owned(), Vec::new())),
        Some(TextOr::List(parts)) => {
            let (mut texts, mut images) = (Vec::new(), Vec::new());
            for (j, p) in parts.into_iter().enumerate() {
                match p.kind.as_deref() {
                    Some("input_text" | "output_text" | "text") => {
                        texts.push(p.text.map(Cow::into_owned).unwrap_or_default())
                    }
                    Some("input_image") => {
                        if let Some(url) = p.image_url {
                            images.push((
                                j,
                                Attachment::Image {
                                    url: url.into_owned(),
                                },
                            ));
                        }
                    }
                    _ => {}
                }
            }
            Ok((texts.join("\n"), images))
        }
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
