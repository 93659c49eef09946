//! Turning cumulative upstream text into deltas.
//!
//! Both upstreams send the whole answer so far in every event. A partial
//! multi-byte character may show up at the end as U+FFFD: it is held back
//! until a later event completes it, and never emitted.

const REPLACEMENT: char = '\u{FFFD}';

#[derive(Debug, Default, Clone)]
pub struct CumulativeText {
    emitted: String,
}

impl CumulativeText {
    /// Start over (the upstream began a new message).
    pub fn reset(&mut self) {
        self.emitted.clear();
    }

    /// Feed the latest cumulative text; returns the new part, if any.
    pub fn advance(&mut self, cumulative: &str) -> Option<String> {
        let stable = cumulative.trim_end_matches(REPLACEMENT);
        if stable.len() <= self.emitted.len() {
            // Nothing new (or a shorter repeat, as when the final event repeats the text).
            return None;
        }
        // Only the new tail is copied: an answer of n events costs O(n) copies,
        // not a copy of the whole text per event.
        let common = if stable.starts_with(self.emitted.as_str()) {
            self.emitted.len()
        } else {
            // The upstream rewrote earlier text. What was sent cannot be taken back;
            // send what follows the longest common prefix so nothing new is lost.
            let common = common_prefix_len(&self.emitted, stable);
            tracing::warn!(
                emitted = self.emitted.len(),
                common,
                "upstream rewrote earlier answer text"
            );
            self.emitted.truncate(common);
            common
        };
        let delta = &stable[common..];
        self.emitted.push_str(delta);
        (!delta.is_empty()).then(|| delta.to_string())
    }
}

fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, ca), cb)| ca != cb)
        .map(|((i, _), _)| i)
        .unwrap_or_else(|| a.len().min(b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_from_cumulative_text() {
        let mut c = CumulativeText::default();
        assert_eq!(c.advance("我是").as_deref(), Some("我是"));
        assert_eq!(c.advance("我是海螺").as_deref(), Some("海螺"));
        assert_eq!(c.advance("我是海螺").as_deref(), None);
        assert_eq!(c.advance("我是海螺！").as_deref(), Some("！"));
    }

    #[test]
    fn holds_back_a_partial_character_until_completed() {
        let mut c = CumulativeText::default();
        let bytes = "你好".as_bytes();
        let partial = String::from_utf8_lossy(&bytes[..4]); // "你" + half of "好"
        assert!(partial.ends_with(REPLACEMENT));
        assert_eq!(c.advance(&partial).as_deref(), Some("你"));
        assert_eq!(c.advance("你好").as_deref(), Some("好"));
        // Two replacement characters in a row (a 4-byte char cut twice).
        let mut c = CumulativeText::default();
        assert_eq!(c.advance("a\u{FFFD}\u{FFFD}"), Some("a".to_string()));
        assert_eq!(c.advance("a😀").as_deref(), Some("😀"));
    }

    #[test]
    fn only_replacement_characters_emit_nothing() {
        let mut c = CumulativeText::default();
        assert_eq!(c.advance("\u{FFFD}"), None);
        assert_eq!(c.advance(""), None);
    }

    #[test]
    fn final_event_repeating_text_or_shorter_is_ignored() {
        let mut c = CumulativeText::default();
        c.advance("hello world");
        assert_eq!(c.advance("hello"), None);
        assert_eq!(c.advance("hello world!").as_deref(), Some("!"));
    }

    #[test]
    fn rewritten_text_sends_the_new_tail() {
        let mut c = CumulativeText::default();
        c.advance("abc");
        assert_eq!(c.advance("abXYZ").as_deref(), Some("XYZ"));
        assert_eq!(
            c.advance("abXYZ1").as_deref(),
            Some("1"),
            "follows the rewritten text"
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut c = CumulativeText::default();
        c.advance("first");
        c.reset();
        assert_eq!(c.advance("second").as_deref(), Some("second"));
    }

    #[test]
    fn huge_content() {
        let mut c = CumulativeText::default();
        let mut all = String::new();
        let mut got = String::new();
        for i in 0..2000 {
            all.push_str(&format!("chunk{i} 海螺 "));
            got.push_str(&c.advance(&all).unwrap());
        }
        assert_eq!(got, all);
    }
}
