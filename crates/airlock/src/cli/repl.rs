//! `airlock repl python SANDBOX [--session NAME]`: a Python REPL whose
//! state lives in the sandbox, over the `pythonRun` extension method.
//!
//! On a terminal it prompts `>>> ` (and `... ` for a block, which a blank
//! line ends). Piped stdin is split into snippets at blank lines that are
//! followed by an unindented line (so a function body may hold blank
//! lines); input without blank lines is one snippet.

use super::api::ApiArgs;
use super::client::{Client, RpcError};
use agent_proto::calls::{PythonRunParams, PythonRunResult};
use agent_proto::Method;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::io::{BufRead, IsTerminal, Read, Write};

#[derive(Subcommand, Debug)]
pub enum ReplCommand {
    /// A stateful Python session in a running sandbox (needs python3 in its image).
    Python(PythonArgs),
}

#[derive(Args, Debug)]
pub struct PythonArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The session's name: each name is its own interpreter.
    #[arg(long, default_value = "default")]
    pub session: String,
    /// Per-snippet timeout in milliseconds (at most 600000).
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// The sandbox's id.
    pub sandbox: String,
}

pub fn main(cmd: ReplCommand) -> Result<i32> {
    let ReplCommand::Python(args) = cmd;
    let target = args.api.resolve()?;
    // A worker thread keeps the socket served while we wait for input.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let client = rt.block_on(Client::connect(&target, &args.sandbox))?;
    let run = |code: &str| -> Result<bool, RpcError> {
        let params = PythonRunParams {
            code: code.to_string(),
            session: Some(args.session.clone()),
            timeout_ms: Some(args.timeout_ms),
        };
        let result = rt.block_on(client.call_typed(Method::PythonRun, &params))?;
        Ok(show(&result))
    };
    let stdin = std::io::stdin();
    let code = if stdin.is_terminal() {
        interactive(&run)
    } else {
        let mut input = String::new();
        stdin.lock().read_to_string(&mut input)?;
        let mut failed = false;
        for snippet in split_snippets(&input) {
            match run(&snippet) {
                Ok(ok) => failed |= !ok,
                Err(e) => {
                    eprintln!("airlock: pythonRun: {e}");
                    failed = true;
                    if !matches!(e, RpcError::App { .. }) {
                        break;
                    }
                }
            }
        }
        i32::from(failed)
    };
    rt.block_on(client.close());
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    Ok(code)
}

fn interactive(run: &dyn Fn(&str) -> Result<bool, RpcError>) -> i32 {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        prompt(">>> ");
        let Some(Ok(first)) = lines.next() else {
            println!();
            return 0;
        };
        if first.trim().is_empty() {
            continue;
        }
        let mut block = first.clone();
        if opens_block(&first) {
            loop {
                prompt("... ");
                match lines.next() {
                    Some(Ok(l)) if !l.trim().is_empty() => {
                        block.push('\n');
                        block.push_str(&l);
                    }
                    _ => break,
                }
            }
        }
        if let Err(e) = run(&block) {
            eprintln!("airlock: pythonRun: {e}");
            if !matches!(e, RpcError::App { .. }) {
                return 1;
            }
        }
    }
}

fn prompt(p: &str) {
    print!("{p}");
    let _ = std::io::stdout().flush();
}

/// Whether a first line needs more lines (a compound statement, a line
/// continuation or an unclosed bracket).
fn opens_block(line: &str) -> bool {
    let t = line.trim_end();
    let depth: i32 = t
        .chars()
        .map(|c| match c {
            '(' | '[' | '{' => 1,
            ')' | ']' | '}' => -1,
            _ => 0,
        })
        .sum();
    t.ends_with(':') || t.ends_with('\\') || depth > 0 || t.starts_with('@')
}

/// Splits piped input at blank lines followed by an unindented line.
pub fn split_snippets(input: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    let mut blank_seen = false;
    for line in input.lines() {
        if line.trim().is_empty() {
            blank_seen = true;
            if !cur.is_empty() {
                cur.push(line);
            }
            continue;
        }
        let unindented = !line.starts_with(' ') && !line.starts_with('\t');
        if blank_seen && unindented && !cur.is_empty() {
            out.push(cur.join("\n").trim_end().to_string());
            cur.clear();
        }
        blank_seen = false;
        cur.push(line);
    }
    if !cur.is_empty() {
        out.push(cur.join("\n").trim_end().to_string());
    }
    out
}

/// Prints a `pythonRun` result; false when the snippet raised.
fn show(result: &PythonRunResult) -> bool {
    print!("{}", result.stdout);
    let _ = std::io::stdout().flush();
    eprint!("{}", result.stderr);
    if let Some(v) = &result.value {
        println!("{v}");
    }
    match &result.error {
        None => true,
        Some(err) => {
            let tb = err.traceback.as_str();
            if !tb.is_empty() {
                eprint!("{tb}");
                if !tb.ends_with('\n') {
                    eprintln!();
                }
            }
            if err.kind == "TimeoutError" || tb.is_empty() {
                eprintln!("{}: {}", err.kind, err.message);
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_snippets;

    #[test]
    fn splits_at_unindented_blank_lines() {
        assert_eq!(split_snippets("x = 1\nx + 1\n"), vec!["x = 1\nx + 1"]);
        assert_eq!(
            split_snippets("def f():\n    a = 1\n\n    return a\n\nf()\n"),
            vec!["def f():\n    a = 1\n\n    return a", "f()"]
        );
        assert_eq!(split_snippets("\n\na\n\n\nb\n\n"), vec!["a", "b"]);
    }
}
