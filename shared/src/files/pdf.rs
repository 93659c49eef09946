//! A PDF's text, for upstreams that take text documents but not PDFs
//! (MiniMax Code): extracted with `pdf-extract` in a child process.
//!
//! Why a child process. PDF parsers meet hostile and broken files, and
//! `pdf-extract` (the well-kept crate for this, over `lopdf`) panics on some
//! of them: a file cut short in the wrong place, a page without a
//! `MediaBox`. On Lambda the release build aborts on a panic, which would
//! take the function down with every stream it carries; a parser can also
//! loop or allocate without bound on a crafted file. So the gateway runs the
//! extraction in a copy of itself: the same executable started with
//! `GATEWAY_PDF_CHILD=1`, the PDF on its stdin, the text (JSON) on its
//! stdout, with its address space capped (`rlimit`) and killed past a
//! deadline. A panic, an abort, an exhausted limit or a timeout costs that
//! child only, and the caller gets a 400 that says the PDF could not be read.
//! Every binary that answers chat calls [`serve_child_if_asked`] first thing
//! in `main`; where none did (unit tests, where panics unwind) the extraction
//! runs in-process under `catch_unwind`.
//!
//! Caps: the first `MAX_PAGES` pages are read and the text is cut at
//! `MAX_TEXT_BYTES`, each with a line saying so (the model is told what it
//! did not get); a scanned PDF with no text layer is a 400 that says so.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The environment variable that makes a gateway binary a PDF extractor.
const CHILD_VAR: &str = "GATEWAY_PDF_CHILD";
/// Pages read from one PDF.
pub(crate) const MAX_PAGES: usize = 500;
/// Text kept from one PDF: about a quarter of a million tokens.
pub(crate) const MAX_TEXT_BYTES: usize = 1 << 20;
/// How long one extraction may take.
const DEADLINE: Duration = Duration::from_secs(20);
/// The child's address space (the parser's worst case, far under the
/// function's memory with the parent's own).
const CHILD_ADDRESS_SPACE: u64 = 768 << 20;

/// Whether this process can start extractors of itself (`main` called
/// [`serve_child_if_asked`]).
static CHILDREN: AtomicBool = AtomicBool::new(false);

/// Why a PDF's text could not be had, in words for the caller.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PdfError {
    /// The file is not a PDF the extractor can read (broken, encrypted,
    /// or it made the extractor fail).
    Unreadable(String),
    /// It has no text layer (a scan).
    NoText,
}

/// In a gateway binary's `main`, first: when started as a PDF extractor,
/// read the PDF from stdin, write its text as JSON to stdout and exit;
/// otherwise note that extractors can be started, and return.
pub fn serve_child_if_asked() {
    if std::env::var_os(CHILD_VAR).is_none() {
        CHILDREN.store(true, Ordering::Release);
        return;
    }
    let _ = rlimit::setrlimit(
        rlimit::Resource::AS,
        CHILD_ADDRESS_SPACE,
        CHILD_ADDRESS_SPACE,
    );
    let _ = rlimit::setrlimit(
        rlimit::Resource::CPU,
        DEADLINE.as_secs(),
        DEADLINE.as_secs(),
    );
    let mut pdf = Vec::new();
    let answer = match std::io::Read::read_to_end(&mut std::io::stdin(), &mut pdf) {
        Ok(_) => match text_of(&pdf) {
            Ok(text) => serde_json::json!({ "text": text }),
            Err(PdfError::NoText) => serde_json::json!({ "no_text": true }),
            Err(PdfError::Unreadable(why)) => serde_json::json!({ "unreadable": why }),
        },
        Err(e) => serde_json::json!({ "unreadable": e.to_string() }),
    };
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, answer.to_string().as_bytes());
    let _ = std::io::Write::flush(&mut out);
    std::process::exit(0);
}

/// The text of the pages, capped, in this process (the child's work).
fn text_of(pdf: &[u8]) -> Result<String, PdfError> {
    let pages = pdf_extract::extract_text_from_mem_by_pages(pdf)
        .map_err(|e| PdfError::Unreadable(crate::text::clip(&e.to_string(), 200)))?;
    let total = pages.len();
    let mut text = String::new();
    for page in pages.iter().take(MAX_PAGES) {
        if text.len() + page.len() > MAX_TEXT_BYTES {
            let room = MAX_TEXT_BYTES.saturating_sub(text.len());
            text.push_str(crate::text::clip_bytes(page, room));
            text.push_str(&format!(
                "\n[The rest of this PDF's text was left out: only its first {MAX_TEXT_BYTES} bytes of text are sent.]"
            ));
            return Ok(text);
        }
        text.push_str(page);
    }
    if total > MAX_PAGES {
        text.push_str(&format!(
            "\n[This PDF has {total} pages; only the first {MAX_PAGES} are sent.]"
        ));
    }
    if text.trim().is_empty() {
        return Err(PdfError::NoText);
    }
    Ok(text)
}

/// A PDF's text: in a child process when this binary can start one, else
/// in-process where panics unwind (tests).
pub(crate) async fn extract(pdf: bytes::Bytes) -> Result<String, PdfError> {
    if !CHILDREN.load(Ordering::Acquire) {
        return tokio::task::spawn_blocking(move || {
            std::panic::catch_unwind(|| text_of(&pdf)).unwrap_or_else(|_| {
                Err(PdfError::Unreadable(
                    "the PDF reader failed on this file".into(),
                ))
            })
        })
        .await
        .unwrap_or_else(|_| Err(PdfError::Unreadable("the PDF reader failed".into())));
    }
    match tokio::time::timeout(DEADLINE, in_child(&pdf)).await {
        Ok(result) => result,
        Err(_) => Err(PdfError::Unreadable(format!(
            "reading it took longer than {} s",
            DEADLINE.as_secs()
        ))),
    }
}

async fn in_child(pdf: &[u8]) -> Result<String, PdfError> {
    let failed = |what: &str| PdfError::Unreadable(what.to_string());
    let exe = std::env::current_exe().map_err(|_| failed("the PDF reader could not start"))?;
    let mut child = tokio::process::Command::new(exe)
        .env(CHILD_VAR, "1")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        // What a panicking parser prints could quote the file.
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            tracing::warn!(error = %e, "the PDF reader could not be started");
            failed("the PDF reader could not start")
        })?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let write = async move {
        let _ = stdin.write_all(pdf).await;
        drop(stdin);
    };
    let read = async move {
        let mut out = Vec::new();
        let _ = (&mut stdout)
            .take(MAX_TEXT_BYTES as u64 * 8 + 4096)
            .read_to_end(&mut out)
            .await;
        out
    };
    let ((), out) = tokio::join!(write, read);
    let status = child.wait().await;
    let answer: serde_json::Value = match serde_json::from_slice(&out) {
        Ok(v) => v,
        Err(_) => {
            tracing::warn!(status = ?status.ok(), "the PDF reader stopped without an answer");
            return Err(failed("the PDF reader failed on this file"));
        }
    };
    if let Some(text) = answer["text"].as_str() {
        Ok(text.to_string())
    } else if answer["no_text"] == true {
        Err(PdfError::NoText)
    } else {
        Err(PdfError::Unreadable(
            answer["unreadable"]
                .as_str()
                .unwrap_or("the PDF reader failed on this file")
                .to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-page PDF whose page shows `text` in Helvetica.
    pub(crate) fn minimal_pdf(text: &str) -> Vec<u8> {
        pdf_with_page(text, "/MediaBox [0 0 612 792] ")
    }

    /// The same, its page dictionary holding `page_box` (empty: none, a
    /// file pdf-extract panics on).
    fn pdf_with_page(text: &str, page_box: &str) -> Vec<u8> {
        let stream = format!("BT /F1 24 Tf 72 720 Td ({text}) Tj ET");
        let objects = [
            "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
            "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
            format!(
                "<< /Type /Page /Parent 2 0 R {page_box}/Contents 4 0 R \
                 /Resources << /Font << /F1 5 0 R >> >> >>"
            ),
            format!(
                "<< /Length {} >>\nstream\n{stream}\nendstream",
                stream.len()
            ),
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
        ];
        let mut out = b"%PDF-1.4\n".to_vec();
        let mut offsets = Vec::new();
        for (i, o) in objects.iter().enumerate() {
            offsets.push(out.len());
            out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
        }
        let xref = out.len();
        out.extend_from_slice(
            format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
        );
        for o in offsets {
            out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
        }
        out.extend_from_slice(
            format!(
                "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
                objects.len() + 1
            )
            .as_bytes(),
        );
        out
    }

    #[tokio::test]
    async fn a_pdfs_text_is_read() {
        let text = extract(minimal_pdf("Hello PDF world").into())
            .await
            .unwrap();
        assert_eq!(text.trim(), "Hello PDF world");
    }

    /// Files cut short at every length and with bytes flipped at random:
    /// each is text or a refusal, never a panic that escapes (the release
    /// build would abort the function), whatever the parser does.
    #[tokio::test]
    async fn broken_pdfs_are_refused_never_a_crash() {
        let pdf = minimal_pdf("Hello PDF world");
        let mut seed = 7u64;
        let mut refused = 0;
        for i in 0..200 {
            let mut broken = pdf[..(i * 7) % pdf.len()].to_vec();
            if i % 2 == 1 {
                broken = pdf.clone();
                for _ in 0..5 {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let at = (seed >> 33) as usize % broken.len();
                    broken[at] = (seed >> 24) as u8;
                }
            }
            if extract(broken.into()).await.is_err() {
                refused += 1;
            }
        }
        assert!(refused > 100, "{refused} of 200 refused");
        assert!(matches!(
            extract(b"not a pdf at all".to_vec().into()).await,
            Err(PdfError::Unreadable(_))
        ));
    }

    /// The page without a `MediaBox` makes pdf-extract panic: a refusal
    /// here (and in the binaries, a child that dies alone; e2e).
    #[tokio::test]
    async fn a_file_the_parser_panics_on_is_refused() {
        assert!(matches!(
            extract(pdf_with_page("No box", "").into()).await,
            Err(PdfError::Unreadable(_))
        ));
    }

    #[tokio::test]
    async fn a_pdf_without_text_is_said_to_have_none() {
        assert_eq!(extract(minimal_pdf("").into()).await, Err(PdfError::NoText));
    }
}
