//! Cutting and summarizing text for messages and logs. Imports nothing of
//! ours, so every layer may use it.
//!
//! Every cut here is at a character boundary: the upstreams answer in Chinese,
//! and `String::truncate` at a byte count panics inside a character.

/// Trimmed, and at most `max_chars` characters (then ending in `…`).
pub fn clip(text: &str, max_chars: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// The longest start of `text` that is at most `max_bytes` bytes, cut at a
/// character boundary.
pub fn clip_bytes(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What an error body says, fit for an error message: an HTML page (a proxy's
/// or a web server's error page) is named by its title, never repeated;
/// anything else is clipped to `max_chars`, control characters removed.
pub fn summarize_body(body: &str, max_chars: usize) -> String {
    let trimmed = body.trim_start();
    let head: String = trimmed
        .chars()
        .take(15)
        .collect::<String>()
        .to_ascii_lowercase();
    if head.starts_with("<?xml") || head.starts_with("<error") {
        // An S3/OSS-style error document: its code and message, not its XML.
        if let Some(code) = xml_element(trimmed, "Code") {
            let message = xml_element(trimmed, "Message").unwrap_or_default();
            return clip(&format!("{code}: {message}"), max_chars);
        }
    }
    if head.starts_with("<!doctype html") || head.starts_with("<html") || head.starts_with("<?xml")
    {
        return match html_title(trimmed) {
            Some(title) => format!("an HTML page titled \"{}\"", clip(&title, 80)),
            None => "an HTML page".into(),
        };
    }
    let plain: String = trimmed
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    clip(&plain, max_chars)
}

/// The text of the first `<name>…</name>` in `xml`, whitespace collapsed.
fn xml_element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(
        xml[start..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn html_title(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let start = lower.find("<title")?;
    let open_end = start + lower[start..].find('>')? + 1;
    let close = open_end + lower[open_end..].find("</title")?;
    let title: String = html
        .get(open_end..close)?
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (!title.is_empty()).then_some(title)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_at_characters() {
        let long = "错".repeat(1000);
        assert_eq!(clip(&long, 300).chars().count(), 301);
        assert_eq!(clip(" ok ", 300), "ok");
        // Every length through a mixed string: never a panic, never over.
        let mixed = "a错b😀c 海螺";
        for n in 0..12 {
            assert!(clip(mixed, n).chars().count() <= n + 1);
        }
    }

    #[test]
    fn xml_error_documents_give_their_code_and_message() {
        let doc = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>The bucket you access does not belong to you.</Message><RequestId>1</RequestId></Error>";
        assert_eq!(
            summarize_body(doc, 200),
            "AccessDenied: The bucket you access does not belong to you."
        );
    }

    #[test]
    fn html_is_named_not_repeated() {
        let page = "<!DOCTYPE html>\n<html><head><title>431 Request Header\n Fields Too Large</title></head><body><script>evil()</script></body></html>";
        let s = summarize_body(page, 200);
        assert_eq!(
            s,
            "an HTML page titled \"431 Request Header Fields Too Large\""
        );
        assert_eq!(
            summarize_body("<html><body>x</body></html>", 200),
            "an HTML page"
        );
        assert_eq!(summarize_body("line\r\nbreak\u{0}", 200), "line  break");
        assert_eq!(summarize_body(&"服务".repeat(300), 10).chars().count(), 11);
    }
}
