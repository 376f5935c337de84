//! The JSON-RPC methods, in one table: each method's wire name, who serves
//! it ([`Route`]), which param names a client → sandbox stream and which
//! result fields name sandbox → client streams. The daemon routes and
//! relays streams by this table, the agent dispatches on it, and the
//! daemon's metrics label calls by it, so a method is added here once.

/// Who serves a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// The agent serves it; the daemon forwards the call, translating the
    /// stream ids the table names (and adapting some results for the SDKs).
    Agent,
    /// The daemon serves it itself (`fetch`, `abort`, `exposeHttp`).
    Daemon,
    /// A protocol method airlock does not serve yet: a clear application
    /// error rather than "method not found".
    NotYet,
    /// Spoken between the daemon and the agent only; a client calling it
    /// gets "method not found", as for any unknown method.
    Internal,
}

macro_rules! methods {
    ($($(#[$doc:meta])* $variant:ident = $wire:literal => $route:ident,)*) => {
        /// A JSON-RPC method the daemon or the agent serves.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Method {
            $($(#[$doc])* $variant,)*
        }

        impl Method {
            /// Every method, in table order.
            pub const ALL: &'static [Method] = &[$(Method::$variant,)*];

            /// The method of wire name `name`, if there is one.
            pub fn from_wire(name: &str) -> Option<Self> {
                match name {
                    $($wire => Some(Method::$variant),)*
                    _ => None,
                }
            }

            /// The wire name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Method::$variant => $wire,)*
                }
            }

            /// Who serves it.
            pub const fn route(self) -> Route {
                match self {
                    $(Method::$variant => Route::$route,)*
                }
            }
        }
    };
}

methods! {
    // Processes.
    Spawn = "spawn" => Agent,
    ProcessWait = "processWait" => Agent,
    ProcessKill = "processKill" => Agent,
    /// airlock extension: resize a spawned PTY (`airlock exec -t`, `airlock shell`).
    PtyResize = "ptyResize" => Agent,
    /// airlock extension: a snippet in a stateful python3 interpreter per
    /// (sandbox, session).
    PythonRun = "pythonRun" => Agent,
    // Deno runtime: `denoHttpWait` holds its reply until the process
    // listens or exits; the REPL calls address a `spawnDenoRepl` pid.
    SpawnDeno = "spawnDeno" => Agent,
    SpawnDenoRepl = "spawnDenoRepl" => Agent,
    DenoHttpWait = "denoHttpWait" => Agent,
    DenoReplEval = "denoReplEval" => Agent,
    DenoReplCall = "denoReplCall" => Agent,
    DenoReplClose = "denoReplClose" => Agent,
    // Environment.
    EnvGet = "envGet" => Agent,
    EnvSet = "envSet" => Agent,
    EnvDelete = "envDelete" => Agent,
    EnvToObject = "envToObject" => Agent,
    // Filesystem by path.
    ReadFile = "readFile" => Agent,
    ReadTextFile = "readTextFile" => Agent,
    WriteFile = "writeFile" => Agent,
    WriteTextFile = "writeTextFile" => Agent,
    ReadDir = "readDir" => Agent,
    Remove = "remove" => Agent,
    Mkdir = "mkdir" => Agent,
    Rename = "rename" => Agent,
    Stat = "stat" => Agent,
    Lstat = "lstat" => Agent,
    Chmod = "chmod" => Agent,
    Chown = "chown" => Agent,
    CopyFile = "copyFile" => Agent,
    Link = "link" => Agent,
    Symlink = "symlink" => Agent,
    ReadLink = "readLink" => Agent,
    RealPath = "realPath" => Agent,
    MakeTempDir = "makeTempDir" => Agent,
    MakeTempFile = "makeTempFile" => Agent,
    Truncate = "truncate" => Agent,
    Umask = "umask" => Agent,
    Utime = "utime" => Agent,
    Walk = "walk" => Agent,
    ExpandGlob = "expandGlob" => Agent,
    // Filesystem by open file handle.
    Open = "open" => Agent,
    Create = "create" => Agent,
    FileRead = "fileRead" => Agent,
    FileWrite = "fileWrite" => Agent,
    FileSeek = "fileSeek" => Agent,
    FileStat = "fileStat" => Agent,
    FileTruncate = "fileTruncate" => Agent,
    FileUtime = "fileUtime" => Agent,
    FileLock = "fileLock" => Agent,
    FileUnlock = "fileUnlock" => Agent,
    FileSync = "fileSync" => Agent,
    FileSyncData = "fileSyncData" => Agent,
    FileClose = "fileClose" => Agent,
    // Served by the daemon.
    /// An HTTP request made from inside the sandbox, through a `tcpConnect`
    /// tunnel.
    Fetch = "fetch" => Daemon,
    /// Aborts the `fetch` that named this `abortId`.
    Abort = "abort" => Daemon,
    ExposeHttp = "exposeHttp" => Daemon,
    Vscode = "vscode" => NotYet,
    // Between the daemon and the agent only.
    /// Liveness check; answers `"pong"`.
    Ping = "ping" => Internal,
    /// The port a Deno process listens on (for `exposeHttp` by pid).
    HttpPort = "httpPort" => Internal,
    /// A TCP connection inside the sandbox, for `fetch` and exposed ports.
    TcpConnect = "tcpConnect" => Internal,
    /// An SFTP session served by the agent, for the SSH gateway's `sftp`
    /// subsystem (`sftp`, `scp`).
    SftpOpen = "sftpOpen" => Internal,
}

impl Method {
    /// The method of wire name `name` if a client may call it (not an
    /// [`Route::Internal`] one).
    pub fn from_client(name: &str) -> Option<Self> {
        Self::from_wire(name).filter(|m| m.route() != Route::Internal)
    }

    /// The param that names a client → sandbox stream, if the method takes
    /// one.
    pub const fn client_stream_param(self) -> Option<&'static str> {
        match self {
            Method::Spawn | Method::SpawnDeno | Method::SpawnDenoRepl => Some("stdinStreamId"),
            Method::WriteFile | Method::WriteTextFile => Some("contentStreamId"),
            Method::Fetch => Some("bodyStreamId"),
            _ => None,
        }
    }

    /// The result fields that name sandbox → client (server) streams.
    /// `readFile`/`readTextFile` with `stream: true` also answer a
    /// `streamId`, but only the daemon asks for that and reads it itself.
    pub const fn server_stream_results(self) -> &'static [&'static str] {
        match self {
            Method::Spawn | Method::SpawnDeno | Method::SpawnDenoRepl => {
                &["stdoutStreamId", "stderrStreamId"]
            }
            Method::Walk | Method::ExpandGlob => &["streamId"],
            Method::Fetch => &["bodyStreamId"],
            _ => &[],
        }
    }

    /// Whether the client stream is windowed (the agent credits what it
    /// consumed, [`crate::FILE_WINDOW`]): a file's contents.
    pub const fn windowed_client_stream(self) -> bool {
        matches!(self, Method::WriteFile | Method::WriteTextFile)
    }

    /// Whether the agent serves it from its filesystem tables
    /// (`fs::ops`, `fs::handles`).
    pub const fn is_fs(self) -> bool {
        use Method::*;
        matches!(
            self,
            ReadFile
                | ReadTextFile
                | WriteFile
                | WriteTextFile
                | ReadDir
                | Remove
                | Mkdir
                | Rename
                | Stat
                | Lstat
                | Chmod
                | Chown
                | CopyFile
                | Link
                | Symlink
                | ReadLink
                | RealPath
                | MakeTempDir
                | MakeTempFile
                | Truncate
                | Umask
                | Utime
                | Open
                | Create
                | FileRead
                | FileWrite
                | FileSeek
                | FileStat
                | FileTruncate
                | FileUtime
                | FileLock
                | FileUnlock
                | FileSync
                | FileSyncData
                | FileClose
        )
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::{Method, Route};

    #[test]
    fn wire_names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &m in Method::ALL {
            assert_eq!(Method::from_wire(m.as_str()), Some(m));
            assert!(seen.insert(m.as_str()), "{m} twice");
        }
        assert_eq!(Method::from_wire("Spawn"), None);
        assert_eq!(Method::from_wire(""), None);
    }

    #[test]
    fn internal_methods_are_not_for_clients() {
        assert_eq!(Method::from_client("ping"), None);
        assert_eq!(Method::from_client("tcpConnect"), None);
        assert_eq!(Method::from_client("sftpOpen"), None);
        assert_eq!(Method::from_client("spawn"), Some(Method::Spawn));
        assert_eq!(Method::Vscode.route(), Route::NotYet);
    }

    #[test]
    fn stream_params_belong_to_agent_or_daemon_methods() {
        for &m in Method::ALL {
            if m.client_stream_param().is_some() || !m.server_stream_results().is_empty() {
                assert!(matches!(m.route(), Route::Agent | Route::Daemon), "{m}");
            }
            if m.is_fs() {
                assert_eq!(m.route(), Route::Agent, "{m}");
            }
        }
    }
}
