//! JSON request bodies as clients really send them: read the way they were
//! meant rather than refused on a technicality that the caller cannot see
//! and a chat UI cannot fix.
//!
//! Half of an emoji. A JavaScript string is UTF-16 and may hold half of a
//! surrogate pair: an emoji cut in two by a truncated message, a pasted
//! fragment, a tool's output read as the wrong encoding. `JSON.stringify`
//! writes such a half as an escape (`"\ud83d"`), which RFC 8259 leaves
//! undefined and serde_json refuses ("lone leading surrogate in hex escape").
//! Browser clients (LobeChat, NextChat) and Node clients keep the whole
//! history and resend it with every turn, so a strict parser turns one bad
//! character into a conversation that fails for good (the OpenAI-compatible
//! servers that do this have a long trail of such reports). We do what
//! JavaScript's own `toWellFormed()` and the WHATWG encoders do instead: each
//! unpaired half becomes U+FFFD, the replacement character. The rewrite is
//! escape for escape (`\ud83d` and `\ufffd` are both six bytes), so the line
//! and column in a later "not valid JSON" message still point into the body
//! the caller sent.
//!
//! A byte order mark. Windows tools (Notepad, PowerShell's `Out-File`) start
//! a saved UTF-8 file with EF BB BF, and `curl -d @request.json` sends it
//! along. RFC 8259 (section 8.1) lets a parser ignore it; serde_json does
//! not, so it is dropped here.

use std::borrow::Cow;

const REPLACEMENT: &[u8; 6] = b"\\ufffd";

/// `body` without a leading byte order mark, and with every unpaired UTF-16
/// surrogate escape replaced by `\ufffd`; borrowed when nothing was
/// replaced (the usual case: one scan for `\`). Pairs are kept. Escapes are
/// read as JSON reads them, so `\\ud83d` (a backslash, then the letters) is
/// text and stays.
pub(crate) fn normalized(body: &[u8]) -> Cow<'_, [u8]> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut fixed: Option<Vec<u8>> = None;
    let mut i = 0;
    while let Some(at) = body
        .get(i..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\\'))
        .map(|p| i + p)
    {
        if body.get(at + 1) != Some(&b'u') {
            // `\\`, `\"`, `\n`...: two bytes, and the second is not an escape.
            i = at + 2;
            continue;
        }
        let unit = code_unit(body, at + 2);
        i = at + 6;
        match unit {
            Some(0xD800..=0xDBFF) => {
                let low = body.get(at + 6) == Some(&b'\\')
                    && body.get(at + 7) == Some(&b'u')
                    && matches!(code_unit(body, at + 8), Some(0xDC00..=0xDFFF));
                if low {
                    i = at + 12;
                    continue;
                }
            }
            Some(0xDC00..=0xDFFF) => {}
            // Not a surrogate, or not four hex digits (which the parser
            // then reports).
            _ => continue,
        }
        fixed.get_or_insert_with(|| body.to_vec())[at..at + 6].copy_from_slice(REPLACEMENT);
    }
    match fixed {
        Some(v) => Cow::Owned(v),
        None => Cow::Borrowed(body),
    }
}

/// The UTF-16 code unit of the four hex digits at `at`.
fn code_unit(body: &[u8], at: usize) -> Option<u16> {
    let digits = std::str::from_utf8(body.get(at..at + 4)?).ok()?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(json: &str) -> String {
        String::from_utf8(normalized(json.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn unpaired_halves_become_the_replacement_character() {
        // A high half alone, at the end, before another high half, before a
        // non-surrogate escape; a low half alone; either case of hex.
        let cases = [
            (r#""\ud83d""#, r#""\ufffd""#),
            (r#""a\uD83Db""#, r#""a\ufffdb""#),
            (r#""\ud83d\ud83d\ude00""#, r#""\ufffd\ud83d\ude00""#),
            (r#""\ud83d\u0041""#, r#""\ufffd\u0041""#),
            (r#""\ude00x""#, r#""\ufffdx""#),
            (r#""\ude00\ud83d""#, r#""\ufffd\ufffd""#),
        ];
        for (sent, want) in cases {
            assert_eq!(fixed(sent), want, "{sent}");
            let s: String = serde_json::from_slice(&normalized(sent.as_bytes())).unwrap();
            assert!(s.contains('\u{FFFD}'), "{sent} -> {s:?}");
        }
    }

    #[test]
    fn what_is_already_well_formed_is_not_copied() {
        for sent in [
            r#"{"a":"\ud83d\ude00 ok"}"#,
            r#"{"a":"\\ud83d"}"#,
            r#"{"a":"\\\ud83d\ude00\n\"\u00e9"}"#,
            r#"{"a":"plain"}"#,
            // Broken escapes are the parser's to report.
            r#""\ud8"#,
            r#""\uzzzz""#,
            "\"\\",
        ] {
            assert!(
                matches!(normalized(sent.as_bytes()), Cow::Borrowed(_)),
                "{sent}"
            );
        }
        // The emoji survives as one character.
        let s: serde_json::Value =
            serde_json::from_slice(&normalized(br#"{"a":"\ud83d\ude00"}"#)).unwrap();
        assert_eq!(s["a"], "😀");
    }

    #[test]
    fn a_byte_order_mark_is_dropped() {
        let sent = b"\xEF\xBB\xBF{\"a\":\"\\ud83d\"}";
        assert_eq!(&*normalized(sent), br#"{"a":"\ufffd"}"#);
        // Borrowed: nothing else to change.
        assert!(matches!(
            normalized(b"\xEF\xBB\xBF{}"),
            Cow::Borrowed(b"{}")
        ));
        // Only at the start.
        assert_eq!(&*normalized(b"{}\xEF\xBB\xBF"), b"{}\xEF\xBB\xBF");
    }

    #[test]
    fn an_escaped_backslash_before_a_half_keeps_it_text() {
        // `\\` then `\ud83d`: the second escape is a lone half.
        assert_eq!(fixed(r#""\\\ud83d""#), r#""\\\ufffd""#);
        // `\\` then the letters `ud83d`: text.
        assert_eq!(fixed(r#""\\ud83d""#), r#""\\ud83d""#);
    }
}
