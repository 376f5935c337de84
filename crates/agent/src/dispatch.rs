//! Routes frames from the host to the code that serves them.

use crate::conn::{Outbox, CHUNK};
use crate::deno;
use crate::env::Env;
use crate::fs::{self, FsState};
use crate::process::{self, Ctx, Table};
use crate::python;
use crate::signals;
use crate::streams::Streams;
use crate::tunnel;
use agent_proto::calls::{
    to_reply, DenoReplCallParams, DenoReplEvalParams, EnvKeyParams, EnvSetParams, ExpandGlobParams,
    FileLockParams, FromParams, PidParams, ProcessKillParams, PtyResizeParams, PythonRunParams,
    ReadFileParams, SftpOpenParams, SpawnDenoParams, SpawnDenoReplParams, SpawnParams,
    StreamResult, TcpConnectParams, WalkParams, WriteFileParams,
};
use agent_proto::{Call, ErrorObject, Frame, FrameKind, Method, Reply, FILE_WINDOW};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Agent {
    pub table: Arc<Table>,
    pub env: Arc<Env>,
    pub streams: Arc<Streams>,
    pub fs: Arc<Mutex<FsState>>,
    pub out: Outbox,
    pub cwd: PathBuf,
    /// `pythonRun`'s interpreters (an airlock extension).
    pub python: Arc<python::Sessions>,
    /// `spawnDenoRepl`'s REPLs.
    pub deno_repls: Arc<deno::Repls>,
}

impl Agent {
    pub fn new(out: Outbox, cwd: PathBuf) -> Self {
        Self {
            table: Arc::new(Table::default()),
            env: Arc::new(Env::from_process()),
            streams: Arc::new(Streams::new()),
            fs: Arc::new(Mutex::new(FsState::new())),
            out,
            cwd,
            python: Arc::new(python::Sessions::default()),
            deno_repls: Arc::new(deno::Repls::default()),
        }
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            table: self.table.clone(),
            env: self.env.clone(),
            streams: self.streams.clone(),
            out: self.out.clone(),
            cwd: self.cwd.clone(),
        }
    }

    /// Handles one frame from the host. Never panics on bad input: a bad
    /// call gets an error reply, bad stream frames are ignored.
    pub fn on_frame(&self, frame: Frame) {
        match frame.kind {
            FrameKind::Call => {
                let agent = self.clone();
                tokio::spawn(async move {
                    let reply = match serde_json::from_slice::<Call>(&frame.payload) {
                        Ok(call) => agent.call(&call.method, call.params).await,
                        Err(e) => Err(ErrorObject::type_error(format!("malformed call: {e}"))),
                    };
                    agent.out.reply(frame.id, Reply::from(reply)).await;
                });
            }
            FrameKind::Data => {
                if !frame.payload.is_empty() && !self.streams.push(frame.id, frame.payload) {
                    let out = self.out.clone();
                    tokio::spawn(async move { out.cancel(frame.id).await });
                }
            }
            FrameKind::End => self.streams.finish(frame.id),
            FrameKind::Cancel => self.streams.cancel_outbound(frame.id),
            FrameKind::Credit => {
                if let Ok(bytes) = <[u8; 4]>::try_from(frame.payload.as_slice()) {
                    self.streams.credit(frame.id, u32::from_be_bytes(bytes));
                }
            }
            // Only the agent sends these.
            FrameKind::Hello | FrameKind::Reply => {}
        }
    }

    pub async fn call(&self, method: &str, params: Value) -> Result<Value, ErrorObject> {
        let params = if params.is_null() { json!({}) } else { params };
        if !params.is_object() {
            return Err(ErrorObject::invalid_type(&[], "object", Some(&params)));
        }
        let Some(m) = Method::from_wire(method) else {
            return Err(ErrorObject::unknown_method(method));
        };
        // Each call's params are decoded into the method's type in
        // agent_proto::calls before any work: here, or by the fs table
        // (`FsState::call`) for the fs methods.
        match m {
            Method::Ping => Ok(json!("pong")),
            Method::Spawn => {
                let p = SpawnParams::decode(m, &params)?;
                process::spawn(&self.ctx(), &p).map(|r| to_reply(&r))
            }
            Method::ProcessWait => {
                let p = PidParams::decode(m, &params)?;
                self.table.wait(p.pid).await.map(|r| to_reply(&r))
            }
            Method::ProcessKill => {
                let p = ProcessKillParams::decode(m, &params)?;
                let signal = match &p.signal {
                    None => libc::SIGTERM,
                    Some(s) => signals::parse(s).ok_or_else(|| {
                        ErrorObject::type_error(format!("processKill: unknown signal {s:?}"))
                    })?,
                };
                self.table.kill(p.pid, signal).map(|()| Value::Null)
            }
            Method::PtyResize => {
                let p = PtyResizeParams::decode(m, &params)?;
                self.table
                    .resize(p.pid, p.rows, p.cols)
                    .map(|()| Value::Null)
            }
            Method::EnvGet => {
                let p = EnvKeyParams::decode(m, &params)?;
                Ok(to_reply(&self.env.get(&p)))
            }
            Method::EnvSet => {
                self.env.set(EnvSetParams::decode(m, &params)?);
                Ok(Value::Null)
            }
            Method::EnvDelete => {
                self.env.delete(&EnvKeyParams::decode(m, &params)?);
                Ok(Value::Null)
            }
            Method::EnvToObject => Ok(to_reply(&self.env.to_object())),
            Method::WriteFile | Method::WriteTextFile
                if params.get("contentStreamId").is_some_and(|v| !v.is_null()) =>
            {
                self.write_from_stream(m, params).await
            }
            Method::ReadFile | Method::ReadTextFile
                if params.get("stream") == Some(&Value::Bool(true)) =>
            {
                let p = ReadFileParams::decode(m, &params)?;
                self.read_to_stream(m, p).await
            }
            Method::Walk | Method::ExpandGlob => self.walk(m, params).await,
            Method::FileLock => self.file_lock(FileLockParams::decode(m, &params)?).await,
            Method::SpawnDeno => {
                let p = SpawnDenoParams::decode(m, &params)?;
                deno::spawn_deno(&self.ctx(), p).map(|r| to_reply(&r))
            }
            Method::DenoHttpWait => {
                let p = PidParams::decode(m, &params)?;
                deno::http_wait(&self.table, p.pid).await
            }
            Method::SpawnDenoRepl => {
                let p = SpawnDenoReplParams::decode(m, &params)?;
                self.deno_repls.spawn(&self.ctx(), p).map(|r| to_reply(&r))
            }
            Method::DenoReplEval => {
                let p = DenoReplEvalParams::decode(m, &params)?;
                self.deno_repls.eval(p).await
            }
            Method::DenoReplCall => {
                let p = DenoReplCallParams::decode(m, &params)?;
                self.deno_repls.call(p).await
            }
            Method::DenoReplClose => {
                let p = PidParams::decode(m, &params)?;
                self.deno_repls.close(p.pid).await
            }
            // airlock internal: the port a process listens on, for
            // `fetch {pid}` and `exposeHttp {pid}`.
            Method::HttpPort => {
                let p = PidParams::decode(m, &params)?;
                deno::http_port(&self.table, p.pid).map(|r| to_reply(&r))
            }
            // airlock internal: a TCP connection inside the sandbox, for
            // `fetch` and exposed ports.
            Method::TcpConnect => {
                let p = TcpConnectParams::decode(m, &params)?;
                let r = tunnel::connect(&self.streams, &self.out, &p).await?;
                Ok(to_reply(&r))
            }
            // airlock internal: an SFTP session served here, for the SSH
            // gateway's `sftp` subsystem.
            Method::SftpOpen => {
                let p = SftpOpenParams::decode(m, &params)?;
                let r = tunnel::sftp_open(&self.streams, &self.out, &p, &self.cwd);
                Ok(to_reply(&r))
            }
            // airlock extension: stateful Python sessions.
            Method::PythonRun => {
                let p = PythonRunParams::decode(m, &params)?;
                let r = self.python.run(&self.env, &self.cwd, &p).await?;
                Ok(to_reply(&r))
            }
            _ if m.is_fs() => self.fs_call(m, params).await,
            // Served by the daemon (Route::Daemon, Route::NotYet), never
            // by the agent.
            _ => Err(ErrorObject::unknown_method(method)),
        }
    }

    async fn fs_call(&self, method: Method, params: Value) -> Result<Value, ErrorObject> {
        let fs = self.fs.clone();
        let cwd = self.cwd.clone();
        let result = tokio::task::spawn_blocking(move || {
            fs.lock().expect("fs lock").call(method, &params, &cwd)
        })
        .await
        .map_err(|e| ErrorObject::new("Error", format!("{method} failed: {e}"), None))?;
        result.unwrap_or_else(|| Err(ErrorObject::unknown_method(method.as_str())))
    }

    /// `fileLock` blocks until the lock is free, as Deno's does, but waits
    /// between attempts without holding the fs state, so other fs calls
    /// (including the unlock that frees it) go on meanwhile.
    async fn file_lock(&self, params: FileLockParams) -> Result<Value, ErrorObject> {
        loop {
            let fs = self.fs.clone();
            let p = params;
            let attempt =
                tokio::task::spawn_blocking(move || fs.lock().expect("fs lock").try_file_lock(&p))
                    .await
                    .map_err(|e| {
                        ErrorObject::new("Error", format!("fileLock failed: {e}"), None)
                    })?;
            match attempt {
                Some(result) => return result,
                None => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    }

    /// writeFile/writeTextFile with `contentStreamId`: each piece is
    /// written as it arrives and credited back (the stream is windowed,
    /// `FILE_WINDOW`), so a file of any size passes through a window's
    /// worth of the agent's memory, which counts towards the sandbox's.
    async fn write_from_stream(&self, method: Method, params: Value) -> Result<Value, ErrorObject> {
        use tokio::io::AsyncWriteExt;
        let id = params
            .get("contentStreamId")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                ErrorObject::type_error(format!("{method}: contentStreamId must be a stream id"))
            })?;
        let mut rx = self
            .streams
            .claim(id)
            .ok_or_else(|| ErrorObject::bad_resource(format!("stream {id} is already in use")))?;
        // Decoded once the stream is ours, so bad params give it up too.
        let cwd = self.cwd.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let p = WriteFileParams::decode(method, &params)?;
            fs::open_for_write(method, &p, &cwd).map(|file| (file, p.path))
        })
        .await
        .map_err(|e| ErrorObject::new("Error", format!("{method} failed: {e}"), None))
        .and_then(|r| r);
        let (file, given) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                self.stop_inbound(id).await;
                return Err(e);
            }
        };
        let mut file = tokio::fs::File::from_std(file);
        while let Some(chunk) = rx.recv().await {
            if let Err(e) = file.write_all(&chunk).await {
                self.stop_inbound(id).await;
                return Err(fs::write_error(method, &given, &e));
            }
            self.out.credit(id, chunk.len() as u32).await;
        }
        self.streams.forget(id);
        file.flush()
            .await
            .map_err(|e| fs::write_error(method, &given, &e))?;
        Ok(Value::Null)
    }

    /// Gives up inbound stream `id`: the host stops sending (a windowed
    /// sender at once).
    async fn stop_inbound(&self, id: u32) {
        self.streams.forget(id);
        self.out.cancel(id).await;
    }

    /// readFile/readTextFile with `stream: true` (sent by the daemon):
    /// replies `{streamId, size}` (`size` as `fstat` has it, a hint) and
    /// sends the file on that stream, windowed
    /// (`FILE_WINDOW`), so the file is never held whole here. Failing to
    /// open or read the first piece fails the call itself.
    async fn read_to_stream(
        &self,
        method: Method,
        params: ReadFileParams,
    ) -> Result<Value, ErrorObject> {
        use tokio::io::AsyncReadExt;
        let cwd = self.cwd.clone();
        let (file, size, first) =
            tokio::task::spawn_blocking(move || fs::open_for_read(method, &params, &cwd, CHUNK))
                .await
                .map_err(|e| ErrorObject::new("Error", format!("{method} failed: {e}"), None))??;
        let (id, window) = self.streams.new_windowed(FILE_WINDOW);
        let out = self.out.clone();
        let streams = self.streams.clone();
        tokio::spawn(async move {
            // Let the reply go out first.
            tokio::task::yield_now().await;
            let mut file = tokio::fs::File::from_std(file);
            let mut buf = first;
            loop {
                if buf.is_empty() {
                    break;
                }
                match window.acquire_many(buf.len() as u32).await {
                    Ok(permits) => permits.forget(),
                    Err(_) => break, // cancelled
                }
                if streams.is_cancelled(id) || !out.data(id, &buf).await {
                    break;
                }
                buf.resize(CHUNK, 0);
                match file.read(&mut buf).await {
                    Ok(n) => buf.truncate(n),
                    // A read error after the first piece ends the stream
                    // early; the daemon sees fewer bytes than the file.
                    Err(_) => break,
                }
            }
            // Ended after a cancel too, so the host can forget the stream.
            out.end(id).await;
            streams.done_outbound(id);
        });
        Ok(to_reply(&StreamResult {
            stream_id: id,
            size: Some(size),
        }))
    }

    /// `walk`/`expandGlob`: replies `{streamId}`, then sends one JSON entry
    /// per Data frame and an End.
    async fn walk(&self, method: Method, params: Value) -> Result<Value, ErrorObject> {
        let cwd = self.cwd.clone();
        let entries = if method == Method::Walk {
            let p = WalkParams::decode(method, &params)?;
            tokio::task::spawn_blocking(move || fs::walk(&p, &cwd)).await
        } else {
            let p = ExpandGlobParams::decode(method, &params)?;
            tokio::task::spawn_blocking(move || fs::expand_glob(&p, &cwd)).await
        }
        .map_err(|e| ErrorObject::new("Error", format!("{method} failed: {e}"), None))??;
        let id = self.streams.new_outbound();
        let out = self.out.clone();
        let streams = self.streams.clone();
        tokio::spawn(async move {
            // Let the reply go out first.
            tokio::task::yield_now().await;
            for entry in entries {
                if streams.is_cancelled(id) {
                    break;
                }
                let bytes = serde_json::to_vec(&entry).expect("entry serializes");
                if !out.data(id, &bytes).await {
                    return;
                }
            }
            // Ended after a cancel too, so the host can forget the stream.
            out.end(id).await;
            streams.done_outbound(id);
        });
        Ok(to_reply(&StreamResult {
            stream_id: id,
            size: None,
        }))
    }
}
