//! Progress reports of a build, for a CLI to show while it runs (a build
//! takes about a minute, so users need to see it move).

/// One progress event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress<'a> {
    /// A new step started, e.g. "mmdebstrap bookworm (python3 nodejs git curl)".
    Stage(&'a str),
    /// One line of a tool's output (stdout or stderr), as it happens.
    Line(&'a str),
    /// The build finished and the image is in place.
    Done { secs: f64 },
}
