//! The JSON value in a model's answer: what a ```json fence holds, or else
//! the first complete JSON object or array in the text. Models asked for
//! "JSON only" still wrap it in a fence or a sentence; the caller gets the
//! bare value.

use serde::de::IgnoredAny;

/// How many starting points are tried before giving up (each is a parse).
const MAX_ATTEMPTS: usize = 64;

/// The JSON text in `answer`, trimmed, or `None`.
pub(crate) fn extract(answer: &str) -> Option<&str> {
    let whole = answer.trim();
    if is_json(whole) {
        return Some(whole);
    }
    if let Some(fenced) = fenced_blocks(answer).find(|b| is_json(b)) {
        return Some(fenced);
    }
    answer
        .match_indices(['{', '['])
        .take(MAX_ATTEMPTS)
        .find_map(|(at, _)| first_value(&answer[at..]))
}

fn is_json(text: &str) -> bool {
    !text.is_empty() && serde_json::from_str::<IgnoredAny>(text).is_ok()
}

/// The insides of ``` fences (with or without a language), trimmed.
fn fenced_blocks(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let start = rest.find("```")?;
        let after = &rest[start + 3..];
        // The language tag runs to the end of the line.
        let body_start = after.find('\n').map_or(after.len(), |i| i + 1);
        let body = &after[body_start..];
        let end = body.find("```")?;
        rest = &body[end + 3..];
        Some(body[..end].trim())
    })
}

/// The complete JSON value `text` starts with, if any.
fn first_value(text: &str) -> Option<&str> {
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<IgnoredAny>();
    match values.next() {
        Some(Ok(_)) => Some(&text[..values.byte_offset()]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_fenced_and_embedded_values() {
        assert_eq!(extract(" {\"a\": 1}\n"), Some("{\"a\": 1}"));
        assert_eq!(
            extract("Here it is:\n```json\n{\"a\": [1, 2]}\n```\nDone."),
            Some("{\"a\": [1, 2]}")
        );
        assert_eq!(extract("```\n[1]\n```"), Some("[1]"));
        assert_eq!(
            extract("The answer is {\"name\": \"李\", \"s\": \"}{\"} as asked."),
            Some("{\"name\": \"李\", \"s\": \"}{\"}")
        );
        // A broken brace first, a good object after it.
        assert_eq!(
            extract("{oops} then {\"ok\": true}"),
            Some("{\"ok\": true}")
        );
        assert_eq!(extract("no json here"), None);
        assert_eq!(extract("{\"unterminated\": "), None);
        assert_eq!(extract(""), None);
    }
}
