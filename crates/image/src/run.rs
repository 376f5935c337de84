//! Runs the external tools of a build (mmdebstrap, npm, tar) and streams
//! their output line by line to the progress callback while they run.
//!
//! The callback is `FnMut` and not `Send`, so the pipes are read on helper
//! threads and every line is handed to the callback on the caller's thread.

use crate::{ImageError, Progress};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;

/// How many output lines a failure report quotes.
const TAIL_LINES: usize = 20;

/// An external program and the apt package that provides it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tool {
    pub program: &'static str,
    pub apt_package: &'static str,
}

pub(crate) const MMDEBSTRAP: Tool = Tool {
    program: "mmdebstrap",
    apt_package: "mmdebstrap",
};
pub(crate) const NPM: Tool = Tool {
    program: "npm",
    apt_package: "npm",
};
pub(crate) const TAR: Tool = Tool {
    program: "tar",
    apt_package: "tar",
};

impl Tool {
    pub fn command(&self) -> Command {
        Command::new(self.program)
    }
}

/// What to do with the tool's stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stdout {
    /// Show it as progress lines.
    Stream,
    /// Return it (machine-readable output such as `npm pack --json`).
    Capture,
}

/// Runs `cmd` to completion. stderr always streams to `progress`; stdout
/// streams or is captured and returned. A non-zero exit becomes
/// `CommandFailed` with the last lines of output.
pub(crate) fn run(
    tool: Tool,
    cmd: &mut Command,
    stdout_mode: Stdout,
    progress: &mut dyn FnMut(Progress),
) -> Result<String, ImageError> {
    let shown = describe(cmd);
    tracing::debug!(command = %shown, "running");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ImageError::MissingTool {
                tool: tool.program,
                apt_package: tool.apt_package,
            }
        } else {
            ImageError::io("start", tool.program)(e)
        }
    })?;
    let out = child.stdout.take();
    let err = child.stderr.take();

    let mut captured = String::new();
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(bool, String)>();
        if let Some(out) = out {
            let tx = tx.clone();
            scope.spawn(move || pump(out, true, &tx));
        }
        if let Some(err) = err {
            let tx = tx.clone();
            scope.spawn(move || pump(err, false, &tx));
        }
        // Only the readers hold senders now, so the loop ends when both pipes close.
        drop(tx);
        for (is_stdout, line) in rx {
            if is_stdout && stdout_mode == Stdout::Capture {
                captured.push_str(&line);
                captured.push('\n');
                continue;
            }
            progress(Progress::Line(&line));
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    });

    let status = child
        .wait()
        .map_err(ImageError::io("wait for", tool.program))?;
    if !status.success() {
        return Err(ImageError::CommandFailed {
            command: shown,
            status: status.to_string(),
            tail: Vec::from(tail).join("\n"),
        });
    }
    Ok(captured)
}

/// Reads `pipe` to the end, sending each line (lossily decoded).
fn pump(pipe: impl Read, is_stdout: bool, tx: &mpsc::Sender<(bool, String)>) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if tx.send((is_stdout, clean_line(&buf))).is_err() {
                    return;
                }
            }
        }
    }
}

/// Strips the line ending and keeps only what follows the last carriage
/// return: progress bars redraw with '\r' and only their last state matters.
fn clean_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches(['\n', '\r']);
    text.rsplit('\r').next().unwrap_or("").to_string()
}

/// The command as a human would type it, for error messages.
fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SH: Tool = Tool {
        program: "sh",
        apt_package: "dash",
    };

    fn sh(script: &str, mode: Stdout) -> (Result<String, ImageError>, Vec<String>) {
        let mut lines = Vec::new();
        let result = run(SH, SH.command().args(["-c", script]), mode, &mut |p| {
            if let Progress::Line(l) = p {
                lines.push(l.to_string())
            }
        });
        (result, lines)
    }

    #[test]
    fn streams_both_pipes() {
        let (result, lines) = sh("echo out; echo err >&2", Stdout::Stream);
        assert_eq!(result.unwrap(), "");
        assert!(lines.contains(&"out".to_string()) && lines.contains(&"err".to_string()));
    }

    #[test]
    fn captures_stdout_when_asked() {
        let (result, lines) = sh("echo '{\"a\":1}'; echo note >&2", Stdout::Capture);
        assert_eq!(result.unwrap(), "{\"a\":1}\n");
        assert_eq!(lines, ["note"]);
    }

    #[test]
    fn failure_reports_status_and_tail() {
        let (result, _) = sh(
            "for i in $(seq 1 30); do echo line$i >&2; done; exit 3",
            Stdout::Stream,
        );
        match result.unwrap_err() {
            ImageError::CommandFailed {
                command,
                status,
                tail,
            } => {
                assert!(command.starts_with("sh -c"));
                assert!(status.contains('3'), "{status}");
                assert!(
                    tail.ends_with("line30") && !tail.contains("line10\n"),
                    "{tail}"
                );
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn missing_tool_names_the_package() {
        let tool = Tool {
            program: "airlock-no-such-tool",
            apt_package: "airlock-pkg",
        };
        let err = run(tool, &mut tool.command(), Stdout::Stream, &mut |_| {}).unwrap_err();
        assert!(
            err.to_string().contains("apt-get install -y airlock-pkg"),
            "{err}"
        );
    }

    #[test]
    fn carriage_returns_keep_the_last_state() {
        assert_eq!(clean_line(b"10%\r50%\r100%\n"), "100%");
        assert_eq!(clean_line(b"plain\r\n"), "plain");
    }
}
