//! An SSE answer decoded into upstream events, frame by frame, by a
//! protocol's decoder: what both streaming adapters (Hailuo's chat, MiniMax
//! Code's messages) share. A stream that closes before the decoder saw its
//! end is the decoder's `truncated` error, never a whole answer.

use std::collections::VecDeque;

use futures_util::{Stream, StreamExt};

use super::{EventStream, UpstreamError, UpstreamEvent};

/// One protocol's frames → events.
pub(crate) trait FrameDecoder: Send + 'static {
    /// One frame's `data` (never empty).
    fn decode(&mut self, data: &str) -> Result<Vec<UpstreamEvent>, UpstreamError>;
    /// Whether the answer's end was seen.
    fn is_ended(&self) -> bool;
    /// What a stream closed before its end is.
    fn truncated(&self) -> UpstreamError;
    /// The connection closed before the end was seen: the last events, if
    /// the protocol lets a close end an answer (MiniMax's platform, after a
    /// `finish_reason`); `None` for a cut answer (`truncated`).
    fn closed(&mut self) -> Option<Vec<UpstreamEvent>> {
        None
    }
}

pub(crate) fn decode<S, D>(sse: S, decoder: D) -> EventStream
where
    S: Stream<
            Item = Result<
                eventsource_stream::Event,
                eventsource_stream::EventStreamError<reqwest::Error>,
            >,
        > + Send
        + 'static,
    D: FrameDecoder,
{
    struct State<S, D> {
        sse: std::pin::Pin<Box<S>>,
        decoder: D,
        pending: VecDeque<UpstreamEvent>,
        done: bool,
    }
    let state = State {
        sse: Box::pin(sse),
        decoder,
        pending: VecDeque::new(),
        done: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(event) = st.pending.pop_front() {
                return Some((Ok(event), st));
            }
            if st.done {
                return None;
            }
            match st.sse.next().await {
                None => {
                    st.done = true;
                    match st.decoder.closed() {
                        Some(events) => {
                            st.pending.extend(events);
                            continue;
                        }
                        None => return Some((Err(st.decoder.truncated()), st)),
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    let error = match e {
                        eventsource_stream::EventStreamError::Transport(e) => {
                            UpstreamError::from(e)
                        }
                        other => UpstreamError::Protocol(other.to_string()),
                    };
                    return Some((Err(error), st));
                }
                Some(Ok(event)) if event.data.trim().is_empty() => {}
                Some(Ok(event)) => match st.decoder.decode(&event.data) {
                    Ok(events) => {
                        st.pending.extend(events);
                        st.done = st.decoder.is_ended();
                    }
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                },
            }
        }
    })
    .boxed()
}
