//! Token usage. The upstream reports none, so usage is an estimate of what an
//! OpenAI-style BPE tokenizer would count: each CJK (or other wide) character
//! as one token, and other text as one token per four bytes, per word run.

use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

impl Usage {
    pub fn estimate(prompt: &str, completion: &str) -> Self {
        let prompt_tokens = estimate_tokens(prompt);
        let completion_tokens = estimate_tokens(completion);
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
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
        let u = Usage::estimate("user:hi\nassistant:", "我是海螺");
        assert_eq!(u.total_tokens, u.prompt_tokens + u.completion_tokens);
        assert!(u.prompt_tokens > 0 && u.completion_tokens == 4);
    }
}
