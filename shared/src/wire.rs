//! What the typed door parsers share (Anthropic Messages, OpenAI
//! Responses): the body read the way clients mean it (`openai/body.rs`),
//! deserialized into structs that borrow from it, a wrong field named by
//! its path (`serde_path_to_error`), and a budget on how many elements
//! (messages, items, blocks, parts, tools) one request may build.
//!
//! The budget is what keeps a hostile body from costing more memory than
//! the function has. Each element is a typed struct of a few hundred bytes
//! built from as little as three bytes of JSON (`{},`), so a 6 MiB body of
//! empty blocks would otherwise build about 2 million of them, close to a
//! gigabyte. No real conversation comes near the budget (Claude Code's
//! longest sessions hold a few thousand blocks); past it the request is a
//! 400 that says so. It is counted as the elements are read, so the
//! request stops there, before it costs more.

use std::borrow::Cow;
use std::cell::Cell;

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};

use crate::error::ApiError;

/// The most elements one request may hold: at a few hundred bytes each,
/// about 15 MB at worst.
pub(crate) const MAX_ELEMENTS: usize = 32_768;

thread_local! {
    /// Elements the request being parsed on this thread may still build:
    /// parsing is synchronous, so it is one request's for its whole parse.
    static LEFT: Cell<usize> = const { Cell::new(MAX_ELEMENTS) };
}

/// `body` parsed as `T` (the caller has normalized it with
/// `openai::body::normalized`), the budget reset first; the JSON must end
/// where `T` does. Syntax errors are the body's 400, a wrong field's is
/// named by its path (`messages[1].content[0].text`).
pub(crate) fn parse<'b, T: Deserialize<'b>>(body: &'b [u8]) -> Result<T, ApiError> {
    LEFT.with(|left| left.set(MAX_ELEMENTS));
    let mut json = serde_json::Deserializer::from_slice(body);
    let parsed: T = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() || path == "." {
            ApiError::bad_body(format!("The request body is not valid JSON: {inner}."))
        } else {
            ApiError::invalid(path.clone(), format!("{path}: {inner}."))
        }
    })?;
    json.end()
        .map_err(|e| ApiError::bad_body(format!("The request body is not valid JSON: {e}.")))?;
    Ok(parsed)
}

/// A number the door bounds (`temperature`, `top_p`): a 400 naming the
/// range when it is outside.
pub(crate) fn check_range(
    param: &str,
    value: Option<f64>,
    low: f64,
    high: f64,
) -> Result<(), ApiError> {
    match value {
        Some(v) if !(low..=high).contains(&v) => Err(ApiError::invalid(
            param,
            format!("`{param}` must be between {low} and {high}, got {v}."),
        )),
        _ => Ok(()),
    }
}

/// Count one element against the budget: the error once it is spent.
pub(crate) fn spend<E: serde::de::Error>() -> Result<(), E> {
    LEFT.with(|left| match left.get() {
        0 => Err(E::custom(format!(
            "the request holds more than {MAX_ELEMENTS} messages, items, content blocks, parts and tools \
             in all; send a shorter history"
        ))),
        n => {
            left.set(n - 1);
            Ok(())
        }
    })
}

/// A list whose every element counts against the budget.
pub(crate) struct Counted<T>(pub Vec<T>);

impl<T> Default for Counted<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Counted<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Counted<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                loop {
                    spend::<A::Error>()?;
                    match seq.next_element()? {
                        Some(x) => out.push(x),
                        None => return Ok(Counted(out)),
                    }
                }
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

/// A string, or a list of `T` (content that is either plain text or parts),
/// each element of the list counted.
pub(crate) enum TextOr<'a, T> {
    Text(Cow<'a, str>),
    List(Vec<T>),
}

impl<'de: 'a, 'a, T: Deserialize<'de>> Deserialize<'de> for TextOr<'a, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a, T>(std::marker::PhantomData<(&'a (), T)>);
        impl<'de: 'a, 'a, T: Deserialize<'de>> Visitor<'de> for V<'a, T> {
            type Value = TextOr<'a, T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(TextOr::Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(TextOr::Text(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(TextOr::Text(Cow::Owned(s)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                let Counted(list) =
                    Counted::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
                Ok(TextOr::List(list))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}
