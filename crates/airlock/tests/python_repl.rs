//! `pythonRun` (airlock extension) and `airlock repl python` against a real
//! daemon and sandbox. Needs root and the default image (with python3).

mod common;

use common::daemon::{call, reply, Daemon, Ws};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;
use tungstenite::Message;

struct Py {
    ws: Ws,
    next: u64,
}

impl Py {
    /// `pythonRun`'s `ok` result; panics on an application error.
    fn run(&mut self, params: Value) -> Value {
        self.next += 1;
        let r = call(&mut self.ws, self.next, "pythonRun", params);
        let ok = r["result"]["ok"].clone();
        assert!(ok.is_object(), "pythonRun failed: {r}");
        ok
    }

    fn code(&mut self, code: &str) -> Value {
        self.run(json!({ "code": code }))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
fn python_sessions_keep_state() {
    let d = Daemon::options("python").start();
    let (ws, _id) = d.create(json!({}));
    let mut py = Py { ws, next: 0 };

    // Final-expression value, stdout/stderr separation.
    let r = py.code("x = 10");
    assert_eq!(r["value"], Value::Null, "{r}");
    assert_eq!(r["error"], Value::Null, "{r}");
    assert!(r["durationMs"].is_u64(), "{r}");
    let r = py.code("print(x * 2)");
    assert_eq!(r["stdout"], "20\n", "{r}");
    assert_eq!(r["value"], Value::Null, "{r}");
    let r = py.code("import sys\nprint('out')\nprint('err', file=sys.stderr)\n[x, 'a']");
    assert_eq!(r["stdout"], "out\n", "{r}");
    assert_eq!(r["stderr"], "err\n", "{r}");
    assert_eq!(r["value"], "[10, 'a']", "{r}");

    // State across 1,000 snippets, timed.
    py.code("n = 0");
    let mut times = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let t = Instant::now();
        let r = py.code("n += 1");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r["error"], Value::Null, "{r}");
    }
    assert_eq!(py.code("n")["value"], "1000");
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "pythonRun round trip over 1000 snippets: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1]
    );

    // An exception keeps the state.
    let r = py.code("def f():\n    raise ValueError('boom')\nf()");
    assert_eq!(r["error"]["type"], "ValueError", "{r}");
    assert_eq!(r["error"]["message"], "boom", "{r}");
    let tb = r["error"]["traceback"].as_str().unwrap();
    assert!(tb.contains("raise ValueError('boom')"), "{tb}");
    assert_eq!(py.code("n + x")["value"], "1010");

    // A runaway snippet is interrupted; the state survives.
    let t = Instant::now();
    let r = py.run(json!({"code": "while True: pass", "timeoutMs": 500}));
    assert_eq!(r["error"]["type"], "TimeoutError", "{r}");
    assert!(t.elapsed().as_secs() < 5, "took {:?}", t.elapsed());
    assert_eq!(py.code("n")["value"], "1000");

    // Sessions are independent.
    let r = py.run(json!({"code": "n", "session": "other"}));
    assert_eq!(r["error"]["type"], "NameError", "{r}");
    py.run(json!({"code": "n = 'other'", "session": "other"}));
    assert_eq!(
        py.run(json!({"code": "n", "session": "other"}))["value"],
        "'other'"
    );
    assert_eq!(py.code("n")["value"], "1000");

    // One snippet at a time per session: a second call is refused.
    py.ws
        .send(Message::text(
            json!({"jsonrpc": "2.0", "id": 9000, "method": "pythonRun",
                   "params": {"code": "import time; time.sleep(1); 'slept'", "session": "busy"}})
            .to_string(),
        ))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    py.next += 1;
    let r = call(
        &mut py.ws,
        py.next,
        "pythonRun",
        json!({"code": "1", "session": "busy"}),
    );
    assert_eq!(r["result"]["error"]["constructorName"], "Busy", "{r}");
    let r = reply(&mut py.ws, 9000);
    assert_eq!(r["result"]["ok"]["value"], "'slept'", "{r}");

    // Params of the wrong type are a validation error (JSON-RPC -32602).
    py.next += 1;
    let r = call(&mut py.ws, py.next, "pythonRun", json!({"code": 1}));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert_eq!(r["error"]["data"]["constructorName"], "ZodError", "{r}");
}

#[test]
fn cli_repl_python_with_piped_stdin() {
    let d = Daemon::options("python-cli").start();
    let (mut ws, id) = d.create(json!({"timeout": "5m"}));
    let _ = ws.close(None);
    let _ = ws.flush();
    let input = b"x = 21\n\ndef double(v):\n    w = v * 2\n\n    return w\n\nprint('doubled', double(x))\ndouble(x) + 0\n\nimport sys; print('warn', file=sys.stderr)\n\n1/0\n\nx\n";
    let mut child = Command::new(common::AIRLOCK)
        .args(["repl", "python", &id, "--session", "cli"])
        .env_remove("DENO_DEPLOY_ENDPOINT")
        .env("DENO_SANDBOX_ENDPOINT", d.endpoint())
        .env("DENO_DEPLOY_TOKEN", &d.token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout, "doubled 42\n42\n21\n", "stderr: {stderr}");
    assert!(stderr.contains("warn\n"), "{stderr}");
    assert!(stderr.contains("ZeroDivisionError"), "{stderr}");
    // A snippet raised, so the exit code says so.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
}

#[test]
fn cli_repl_python_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no script(1) to give the CLI a terminal");
        return;
    }
    let d = Daemon::options("python-tty").start();
    let (mut ws, id) = d.create(json!({"timeout": "5m"}));
    let _ = ws.close(None);
    let _ = ws.flush();
    let cmd = format!("{} repl python {id}", common::AIRLOCK);
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("DENO_DEPLOY_ENDPOINT")
        .env("DENO_SANDBOX_ENDPOINT", d.endpoint())
        .env("DENO_DEPLOY_TOKEN", &d.token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Lines typed one by one; a blank line ends the `for` block.
    for line in [
        "x = 3\n",
        "for i in range(2):\n",
        "    print('i', i)\n",
        "\n",
        "x * 7\n",
        "\x04",
    ] {
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(">>> "), "{text}");
    assert!(text.contains("... "), "{text}");
    assert!(text.contains("i 0\r\ni 1\r\n"), "{text}");
    assert!(text.contains("21\r\n"), "{text}");
    drop(stdin);
}
