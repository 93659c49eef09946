//! Files and images a message carries, turned into bytes the upstream can
//! take: `data:` URLs decoded, other URLs downloaded safely (`fetch`), the
//! type sniffed from the bytes when nobody says it. What the upstream does
//! with them (Hailuo uploads them, section 7) is the adapter's business.

pub(crate) mod fetch;
pub(crate) mod pdf;

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use reqwest::Url;

use crate::conversation::Attachment;
use crate::error::ApiError;
use crate::upstream::FileUpload;
use fetch::{FetchError, Fetcher};

/// Every attachment's bytes, in order, fetched concurrently. `at` names the
/// message's content (`messages[3].content`); errors name the part.
pub(crate) async fn gather(
    at: &str,
    attachments: &[(usize, Attachment)],
    fetcher: &Fetcher,
) -> Result<Vec<Arc<FileUpload>>, ApiError> {
    let jobs = attachments.iter().map(|(part, a)| {
        let param = format!("{at}[{part}]");
        async move { one(&param, a, fetcher).await.map(Arc::new) }
    });
    futures_util::future::try_join_all(jobs).await
}

/// The files with each PDF replaced by its text (`pdf.rs`), for an
/// upstream that takes text documents but not PDFs. A PDF that cannot be
/// read, or has no text, is the caller's 400 naming it.
pub(crate) async fn pdfs_as_text(
    at: &str,
    files: Vec<Arc<FileUpload>>,
) -> Result<Vec<Arc<FileUpload>>, ApiError> {
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        if file.image || file.mime != "application/pdf" {
            out.push(file);
            continue;
        }
        let name = &file.original_name;
        let text = pdf::extract(file.bytes.clone()).await.map_err(|e| {
            ApiError::invalid(
                at,
                match e {
                    pdf::PdfError::Unreadable(why) => format!(
                        "The PDF {name} could not be read ({why}); send its text instead."
                    ),
                    pdf::PdfError::NoText => format!(
                        "The PDF {name} has no text to read (a scan?); send its text, or its pages as images."
                    ),
                },
            )
        })?;
        tracing::info!(
            pdf_bytes = file.bytes.len(),
            text_bytes = text.len(),
            "a PDF's text extracted"
        );
        out.push(Arc::new(FileUpload {
            original_name: name.clone(),
            extension: "txt".into(),
            mime: "text/plain".into(),
            image: false,
            bytes: Bytes::from(text),
        }));
    }
    Ok(out)
}

async fn one(
    param: &str,
    attachment: &Attachment,
    fetcher: &Fetcher,
) -> Result<FileUpload, ApiError> {
    let (url, filename, image) = match attachment {
        Attachment::Image { url } => (url, None, true),
        Attachment::File { url, filename } => (url, filename.clone(), false),
    };
    // The bytes, their declared type, and the URL's file name if it has one.
    let (bytes, declared, url_name) = if let Some(rest) = url.strip_prefix("data:") {
        let (bytes, declared) = decode_data_url(rest).map_err(|why| {
            ApiError::invalid(
                param,
                format!("`{param}` holds a malformed data: URL: {why}."),
            )
        })?;
        (bytes, declared, None)
    } else {
        let parsed = Url::parse(url.trim()).map_err(|e| {
            ApiError::invalid(
                param,
                format!("`{param}` holds a URL that cannot be parsed ({e})."),
            )
        })?;
        let fetched = fetcher.fetch(&parsed).await.map_err(|e| match e {
            FetchError::TooLarge(max) => ApiError::PayloadTooLarge(format!(
                "The file of `{param}` is larger than {max} bytes (FILE_MAX_BYTES)."
            )),
            FetchError::Status(status) => ApiError::invalid(
                param,
                format!(
                    "The URL of `{param}` answered HTTP {status}; send a URL that serves the file."
                ),
            ),
            FetchError::Refused(why) => {
                ApiError::invalid(param, format!("The URL of `{param}` was refused: {why}."))
            }
            FetchError::Unreachable(why) => ApiError::invalid(
                param,
                format!("The URL of `{param}` could not be fetched: {why}."),
            ),
        })?;
        let url_name = parsed
            .path_segments()
            .and_then(|mut segments| segments.next_back())
            .filter(|s| s.contains('.'))
            .map(str::to_string);
        (fetched.0, fetched.1, url_name)
    };
    if bytes.is_empty() {
        return Err(ApiError::invalid(
            param,
            format!("The file of `{param}` is empty."),
        ));
    }
    let name_from_url = filename.or(url_name);
    let mime = mime_of(&bytes, declared.as_deref(), name_from_url.as_deref());
    let image = image || is_image(&mime);
    Ok(FileUpload {
        original_name: name_from_url.unwrap_or_else(|| format!("file.{}", extension_of(&mime))),
        extension: extension_of(&mime).to_string(),
        mime,
        image,
        bytes,
    })
}

/// `<mime>[;charset=…][;base64],<data>` (after `data:`) → bytes and mime.
fn decode_data_url(rest: &str) -> Result<(Bytes, Option<String>), String> {
    let (meta, data) = rest
        .split_once(',')
        .ok_or("there is no comma before the data")?;
    let mut params = meta.split(';');
    let mime = params.next().filter(|m| !m.is_empty()).map(str::to_string);
    let base64 = params.any(|p| p.eq_ignore_ascii_case("base64"));
    let bytes = if base64 {
        // Whitespace and URL-safe alphabets appear in the wild.
        let clean: String = data.chars().filter(|c| !c.is_whitespace()).collect();
        let clean = clean.replace('-', "+").replace('_', "/");
        base64::engine::general_purpose::STANDARD
            .decode(clean.trim_end_matches('='))
            .or_else(|_| {
                base64::engine::general_purpose::STANDARD_NO_PAD.decode(clean.trim_end_matches('='))
            })
            .map_err(|e| format!("the base64 data does not decode ({e})"))?
    } else {
        percent_encoding::percent_decode_str(data).collect()
    };
    Ok((Bytes::from(bytes), mime))
}

/// The type: sniffed from the bytes (`infer`) when they say, else what the
/// URL or header declared, else the file name's extension, else unknown.
fn mime_of(bytes: &[u8], declared: Option<&str>, name: Option<&str>) -> String {
    if let Some(kind) = infer::get(bytes) {
        return kind.mime_type().to_string();
    }
    let declared = declared
        .map(|d| {
            d.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|d| !d.is_empty() && d != "application/octet-stream");
    if let Some(d) = declared {
        return d;
    }
    if let Some(guess) = name.and_then(|n| mime_guess::from_path(n).first()) {
        return guess.essence_str().to_string();
    }
    if std::str::from_utf8(&bytes[..bytes.len().min(4096)]).is_ok() {
        return "text/plain".into();
    }
    "application/octet-stream".into()
}

/// Protocol section 7: these are sent as images (formType 2).
fn is_image(mime: &str) -> bool {
    matches!(
        mime,
        "image/jpeg"
            | "image/png"
            | "image/gif"
            | "image/webp"
            | "image/bmp"
            | "image/tiff"
            | "image/svg+xml"
            | "image/x-icon"
            | "image/vnd.microsoft.icon"
            | "image/heic"
            | "image/heif"
    )
}

fn extension_of(mime: &str) -> &'static str {
    match mime {
        "image/jpeg" => "jpg",
        "text/plain" => "txt",
        "text/markdown" => "md",
        "application/pdf" => "pdf",
        other => mime_guess::get_mime_extensions_str(other)
            .and_then(|exts| exts.first().copied())
            .unwrap_or("bin"),
    }
}

/// What a file adds to `prompt_tokens`: the upstream reads it, and reports no
/// count; about one token per 4 bytes of text, and a flat 765 for an image
/// (OpenAI's figure for a high-detail 1024 × 1024 image), at most 100,000
/// per document.
pub(crate) fn token_estimate(file: &FileUpload) -> u32 {
    if file.image {
        765
    } else {
        (file.bytes.len() as u64 / 4).min(100_000) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls() {
        let (b, m) = decode_data_url("image/png;base64,iVBORw0KGgo=").unwrap();
        assert_eq!(&b[..], b"\x89PNG\r\n\x1a\n");
        assert_eq!(m.as_deref(), Some("image/png"));
        let (b, m) = decode_data_url("text/plain;charset=utf-8,hello%20world").unwrap();
        assert_eq!(
            (&b[..], m.as_deref()),
            (&b"hello world"[..], Some("text/plain"))
        );
        assert!(decode_data_url("image/png;base64").is_err());
        assert!(decode_data_url("image/png;base64,!!!!").is_err());
    }

    #[test]
    fn types_from_bytes_then_declarations_then_names() {
        assert_eq!(
            mime_of(b"%PDF-1.7\n", Some("text/plain"), None),
            "application/pdf"
        );
        assert_eq!(mime_of(b"\x89PNG\r\n\x1a\n0000", None, None), "image/png");
        assert_eq!(mime_of(b"# title", None, Some("notes.md")), "text/markdown");
        assert_eq!(
            mime_of(b"a,b\n1,2", Some("text/csv; charset=utf-8"), None),
            "text/csv"
        );
        assert_eq!(mime_of(b"plain words", None, None), "text/plain");
        assert_eq!(
            mime_of(&[0xff, 0x00, 0xfe], None, None),
            "application/octet-stream"
        );
        assert!(is_image("image/webp") && !is_image("application/pdf"));
        assert_eq!(extension_of("application/pdf"), "pdf");
        assert_eq!(extension_of("image/jpeg"), "jpg");
        assert_eq!(extension_of("text/plain"), "txt");
    }
}
