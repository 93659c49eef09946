//! Token usage. The upstream reports none, so usage is an estimate of what an
//! OpenAI-style BPE tokenizer would count: each CJK (or other wide) character
//! as one token, and other text as one token per four bytes, per word run.

use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    /// Cached input, where the upstream counts it (as OpenAI reports it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptDetails>,
    /// Reasoning output, where the upstream counts it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PromptDetails {
    pub cached_tokens: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CompletionDetails {
    pub reasoning_tokens: u32,
}

/// The door-neutral count in OpenAI's fields: the details only when there
/// is something in them (an estimate has none).
impl From<crate::conversation::TokenUsage> for Usage {
    fn from(u: crate::conversation::TokenUsage) -> Self {
        Self {
            prompt_tokens: u.input,
            completion_tokens: u.output,
            total_tokens: u.input.saturating_add(u.output),
            prompt_tokens_details: (u.cache_read > 0).then_some(PromptDetails {
                cached_tokens: u.cache_read,
            }),
            completion_tokens_details: (u.reasoning > 0).then_some(CompletionDetails {
                reasoning_tokens: u.reasoning,
            }),
        }
    }
}

pub fn estimate_tokens(text: &str) -> u32 {
    let mut tokens = 0u32;
    let mut run_bytes = 0u32;
    let flush = |run: &mut u32, tokens: &mut u32| {
        if *run > 0 {
            *tokens += run.div_ceil(4);
            *run = 0;
        }
    };
    for c in text.chars() {
        if is_wide(c) {
            flush(&mut run_bytes, &mut tokens);
            tokens += 1;
        } else if c.is_whitespace() {
            flush(&mut run_bytes, &mut tokens);
        } else {
            run_bytes += c.len_utf8() as u32;
        }
    }
    flush(&mut run_bytes, &mut tokens);
    tokens
}

fn is_wide(c: char) -> bool {
    matches!(c as u32,
        0x2E80..=0x9FFF | 0xA960..=0xA97F | 0xAC00..=0xD7FF | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F | 0xFF00..=0xFFEF | 0x1F300..=0x1FAFF | 0x20000..=0x3FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_grow_with_text_and_count_cjk_per_character() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("hi"), 1);
        assert_eq!(estimate_tokens("hello world"), 4);
        assert_eq!(estimate_tokens("我是海螺"), 4);
        assert_eq!(estimate_tokens("海螺AI"), 3);
    }

    #[test]
    fn usage_in_openais_fields_with_details_only_when_counted() {
        use crate::conversation::TokenUsage;
        let estimate = Usage::from(TokenUsage {
            input: 5,
            output: 4,
            ..TokenUsage::default()
        });
        assert_eq!(
            serde_json::to_value(estimate).unwrap(),
            serde_json::json!({"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9})
        );
        let counted = Usage::from(TokenUsage {
            input: 169,
            output: 85,
            cache_read: 128,
            cache_creation: 0,
            reasoning: 57,
        });
        assert_eq!(
            serde_json::to_value(counted).unwrap(),
            serde_json::json!({"prompt_tokens": 169, "completion_tokens": 85, "total_tokens": 254,
                "prompt_tokens_details": {"cached_tokens": 128},
                "completion_tokens_details": {"reasoning_tokens": 57}})
        );
    }
}
