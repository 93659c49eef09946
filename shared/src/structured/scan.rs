//! Finding this request's `<tool_call id="NONCE">…</tool_call>` tags in an
//! answer that arrives in pieces, split anywhere.
//!
//! Text is released the moment it cannot be the start of a tag: a `<` is held
//! only while what follows it is still a prefix of the opening tag, so a `<`
//! in ordinary prose ("a < b", "<div>") costs no delay beyond the next
//! character. A tag with another nonce stops matching at its first differing
//! character and is ordinary text. Inside a tag, the closing `</tool_call>` is
//! recognised only outside JSON strings, so arguments may contain it (and
//! braces, escaped quotes, any script) without cutting the call short.

/// What the scanner finds, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    /// Text that is not part of a tag.
    Text(String),
    /// A complete tag: the text between the opening and closing tags.
    Call(String),
    /// A tag opened but never closed before the answer ended: its text so far.
    Unclosed(String),
}

const CLOSE: &str = "</tool_call>";

#[derive(Debug)]
enum State {
    Text,
    /// Inside a tag; `body` is its text so far.
    Call {
        body: String,
        in_string: bool,
        escaped: bool,
    },
}

#[derive(Debug)]
pub(crate) struct Scanner {
    open: String,
    state: State,
    /// Text not decided yet: a possible start of the opening (or closing) tag.
    pending: String,
}

impl Scanner {
    pub(crate) fn new(nonce: &str) -> Self {
        Self {
            open: open_tag(nonce),
            state: State::Text,
            pending: String::new(),
        }
    }

    /// Scan the next piece of the answer; tokens found go to `out`.
    pub(crate) fn feed(&mut self, piece: &str, out: &mut Vec<Token>) {
        let input = if self.pending.is_empty() {
            std::borrow::Cow::Borrowed(piece)
        } else {
            let mut joined = std::mem::take(&mut self.pending);
            joined.push_str(piece);
            std::borrow::Cow::Owned(joined)
        };
        let mut rest: &str = &input;
        while !rest.is_empty() {
            match &mut self.state {
                State::Text => {
                    let Some(at) = rest.find('<') else {
                        push_text(out, rest);
                        return;
                    };
                    push_text(out, &rest[..at]);
                    let candidate = &rest[at..];
                    if candidate.starts_with(self.open.as_str()) {
                        self.state = State::Call {
                            body: String::new(),
                            in_string: false,
                            escaped: false,
                        };
                        rest = &candidate[self.open.len()..];
                    } else if self.open.starts_with(candidate) {
                        // Could still become the tag: wait for more.
                        self.pending = candidate.to_string();
                        return;
                    } else {
                        push_text(out, "<");
                        rest = &candidate[1..];
                    }
                }
                State::Call {
                    body,
                    in_string,
                    escaped,
                } => {
                    let mut consumed = rest.len();
                    let mut closed = false;
                    for (i, c) in rest.char_indices() {
                        if *in_string {
                            if *escaped {
                                *escaped = false;
                            } else if c == '\\' {
                                *escaped = true;
                            } else if c == '"' {
                                *in_string = false;
                            }
                        } else if c == '"' {
                            *in_string = true;
                        } else if c == '<' {
                            let candidate = &rest[i..];
                            if candidate.starts_with(CLOSE) {
                                body.push_str(&rest[..i]);
                                consumed = i + CLOSE.len();
                                closed = true;
                                break;
                            }
                            if CLOSE.starts_with(candidate) {
                                body.push_str(&rest[..i]);
                                self.pending = candidate.to_string();
                                return;
                            }
                        }
                    }
                    if !closed {
                        body.push_str(rest);
                        return;
                    }
                    out.push(Token::Call(std::mem::take(body)));
                    self.state = State::Text;
                    rest = &rest[consumed..];
                }
            }
        }
    }

    /// The answer ended: whatever is still held is decided now.
    pub(crate) fn finish(&mut self, out: &mut Vec<Token>) {
        let pending = std::mem::take(&mut self.pending);
        match std::mem::replace(&mut self.state, State::Text) {
            State::Text => push_text(out, &pending),
            State::Call { mut body, .. } => {
                body.push_str(&pending);
                out.push(Token::Unclosed(body));
            }
        }
    }
}

pub(crate) fn open_tag(nonce: &str) -> String {
    format!("<tool_call id=\"{nonce}\">")
}

/// A whole tag, as the model is shown it and writes it.
pub(crate) fn tag(nonce: &str, body: &str) -> String {
    format!("{}{body}{CLOSE}", open_tag(nonce))
}

fn push_text(out: &mut Vec<Token>, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(Token::Text(last)) = out.last_mut() {
        last.push_str(text);
    } else {
        out.push(Token::Text(text.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "a1b2c3d4e5";

    fn scan_pieces(pieces: &[&str]) -> Vec<Token> {
        let mut s = Scanner::new(NONCE);
        let mut out = Vec::new();
        for p in pieces {
            s.feed(p, &mut out);
        }
        s.finish(&mut out);
        // Adjacent text merges, so splitting never changes the result's shape.
        let mut merged: Vec<Token> = Vec::new();
        for t in out {
            match (merged.last_mut(), t) {
                (Some(Token::Text(a)), Token::Text(b)) => a.push_str(&b),
                (_, t) => merged.push(t),
            }
        }
        merged
    }

    /// Every split of `answer` into two pieces, and into single characters,
    /// gives the same tokens as the whole.
    fn same_at_every_split(answer: &str) -> Vec<Token> {
        let whole = scan_pieces(&[answer]);
        for (i, _) in answer.char_indices() {
            assert_eq!(
                scan_pieces(&[&answer[..i], &answer[i..]]),
                whole,
                "split at byte {i} of {answer:?}"
            );
        }
        let chars: Vec<String> = answer.chars().map(String::from).collect();
        let pieces: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(scan_pieces(&pieces), whole, "one character at a time");
        whole
    }

    fn call(body: &str) -> String {
        tag(NONCE, body)
    }

    #[test]
    fn a_call_split_at_every_position() {
        let body = r#"{"name": "get_weather", "arguments": {"city": "Paris"}}"#;
        let answer = format!("Let me look. {}", call(body));
        assert_eq!(
            same_at_every_split(&answer),
            vec![
                Token::Text("Let me look. ".into()),
                Token::Call(body.into())
            ]
        );
    }

    #[test]
    fn nested_braces_escaped_quotes_cjk_and_a_closing_tag_in_a_string() {
        let body = r#"{"name": "note", "arguments": {"text": "他说：\"你好 {x}\" </tool_call> \\", "deep": {"a": [{"b": "}"}]}}}"#;
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
        let answer = format!("{}tail", call(body));
        assert_eq!(
            same_at_every_split(&answer),
            vec![Token::Call(body.into()), Token::Text("tail".into())]
        );
    }

    #[test]
    fn several_calls_and_text_after_the_last() {
        let a = r#"{"name": "a", "arguments": {}}"#;
        let b = r#"{"name": "b", "arguments": {"n": 1}}"#;
        let answer = format!("x{}\n{} done.", call(a), call(b));
        assert_eq!(
            same_at_every_split(&answer),
            vec![
                Token::Text("x".into()),
                Token::Call(a.into()),
                Token::Text("\n".into()),
                Token::Call(b.into()),
                Token::Text(" done.".into())
            ]
        );
    }

    #[test]
    fn another_nonce_is_ordinary_text() {
        let foreign = r#"<tool_call id="ffffffffff">{"name": "a", "arguments": {}}</tool_call>"#;
        let answer = format!("quoted: {foreign} end");
        assert_eq!(same_at_every_split(&answer), vec![Token::Text(answer)]);
        // A nonce that only starts like ours is not ours either.
        let longer = format!(r#"<tool_call id="{NONCE}0">{{}}</tool_call>"#);
        assert_eq!(same_at_every_split(&longer), vec![Token::Text(longer)]);
    }

    #[test]
    fn an_unclosed_tag_is_reported_not_shown() {
        let answer = format!("{}{{\"name\": \"a\"", open_tag(NONCE));
        assert_eq!(
            same_at_every_split(&answer),
            vec![Token::Unclosed("{\"name\": \"a\"".into())]
        );
        // A prefix of the opening tag at the very end is just text.
        assert_eq!(
            same_at_every_split("see <tool_ca"),
            vec![Token::Text("see <tool_ca".into())]
        );
    }

    #[test]
    fn a_less_than_sign_is_released_as_soon_as_it_cannot_be_a_tag() {
        let mut s = Scanner::new(NONCE);
        let mut out = Vec::new();
        s.feed("a <", &mut out);
        assert_eq!(out, vec![Token::Text("a ".into())], "`<` alone is held");
        out.clear();
        s.feed(" b", &mut out);
        assert_eq!(out, vec![Token::Text("< b".into())], "released at once");
        out.clear();
        s.feed("<div>x", &mut out);
        assert_eq!(out, vec![Token::Text("<div>x".into())]);
        out.clear();
        s.feed("<tool_call id=\"a1", &mut out);
        assert_eq!(out, vec![], "held while it still matches");
        s.feed("X", &mut out);
        assert_eq!(out, vec![Token::Text("<tool_call id=\"a1X".into())]);
    }
}
