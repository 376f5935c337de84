//! A message body passed through substitutions as it streams.

use super::substitute::{substitute_header_value, StreamReplacer, Substitutions};
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Wraps a body; every data frame goes through each replacer in turn. A
/// replacer holds back at most its longest pattern minus one byte (the
/// bound on what this adds to memory), flushed at the end of the body.
pub struct ReplacingBody<B> {
    inner: B,
    stages: Vec<Stage>,
    ended: bool,
    /// Trailers seen before the flush, sent after it.
    trailers: Option<http::HeaderMap>,
}

struct Stage {
    /// For trailers, which are header fields.
    subs: Substitutions,
    replacer: StreamReplacer,
    /// Counts the requests in which this stage replaced something.
    hits: Option<Arc<AtomicU64>>,
    counted: bool,
}

impl<B> ReplacingBody<B> {
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            stages: Vec::new(),
            ended: false,
            trailers: None,
        }
    }

    /// Adds a stage; `hits` is bumped once if it replaces anything.
    pub fn stage(mut self, subs: &Substitutions, hits: Option<Arc<AtomicU64>>) -> Self {
        if !subs.is_empty() {
            self.stages.push(Stage {
                subs: subs.clone(),
                replacer: subs.stream(),
                hits,
                counted: false,
            });
        }
        self
    }

    fn run(&mut self, data: &[u8], last: bool) -> Vec<u8> {
        let mut buf = data.to_vec();
        for stage in &mut self.stages {
            let mut out = stage.replacer.push(&buf);
            if last {
                out.extend_from_slice(&stage.replacer.finish());
            }
            if !stage.counted && stage.replacer.replaced() > 0 {
                stage.counted = true;
                if let Some(h) = &stage.hits {
                    h.fetch_add(1, Ordering::Relaxed);
                }
            }
            buf = out;
        }
        buf
    }

    /// Trailers are header fields: they get what headers get (an upstream
    /// could echo a value in one as well as in the body).
    fn trailers(&self, mut trailers: http::HeaderMap) -> http::HeaderMap {
        for (name, value) in trailers.iter_mut() {
            for stage in &self.stages {
                if let Some(new) =
                    substitute_header_value(&stage.subs, name.as_str(), value.as_bytes())
                {
                    // A value that would not be a valid header value after
                    // substitution is dropped to an empty one rather than
                    // passed on unchanged.
                    *value = http::HeaderValue::from_bytes(&new)
                        .unwrap_or_else(|_| http::HeaderValue::from_static(""));
                }
            }
        }
        trailers
    }
}

impl<B> Body for ReplacingBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.run(&data, false);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                        }
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            this.trailers = Some(this.trailers(t));
                        }
                    }
                },
                Poll::Ready(None) => {
                    this.ended = true;
                    let out = this.run(&[], true);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Substitution may change the length: only the inner body's lower
        // bound of zero is certain.
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::collections::VecDeque;

    /// Frames handed out one per poll.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    #[tokio::test]
    async fn values_split_across_frames_and_in_trailers_are_masked() {
        let mask = Substitutions::new(vec![(b"sk-real-value".to_vec(), b"PLACEHOLDER".to_vec())]);
        let mut trailers = http::HeaderMap::new();
        trailers.insert(
            "x-echo",
            http::HeaderValue::from_static("Bearer sk-real-value"),
        );
        let body = Frames(VecDeque::from([
            Frame::data(Bytes::from_static(b"a sk-re")),
            Frame::data(Bytes::from_static(b"al-val")),
            Frame::data(Bytes::from_static(b"ue z")),
            Frame::trailers(trailers),
        ]));
        let got = ReplacingBody::new(body)
            .stage(&mask, None)
            .collect()
            .await
            .unwrap();
        let trailers = got.trailers().cloned().expect("trailers kept");
        assert_eq!(trailers["x-echo"], "Bearer PLACEHOLDER");
        assert_eq!(got.to_bytes(), &b"a PLACEHOLDER z"[..]);
    }
}
