//! Every answer counted (`metrics::request`): its route (the matched
//! pattern, never the path a caller made up), status, the upstream that
//! served (`x-gateway-upstream`, `none` when none did), the time to the
//! response's head and the time to its last byte. A stream's head goes out
//! once its first answer bytes are in, so the first figure is the time to
//! first byte. A body the caller abandons is counted when it is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tokio::time::Instant;

pub(crate) async fn measure(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let first_byte = started.elapsed();
    let status = response.status().as_u16();
    let upstream = response
        .headers()
        .get("x-gateway-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string();
    let (parts, body) = response.into_parts();
    let measured = Measured {
        inner: body,
        done: Some(Box::new(move || {
            crate::metrics::request(&route, status, &upstream, first_byte, started.elapsed())
        })),
    };
    Response::from_parts(parts, Body::new(measured))
}

struct Measured {
    inner: Body,
    done: Option<Box<dyn FnOnce() + Send>>,
}

impl Measured {
    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            done();
        }
    }
}

impl http_body::Body for Measured {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Measured {
    fn drop(&mut self) {
        self.finish();
    }
}
