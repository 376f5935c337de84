//! The airlock agent: PID 1 of every sandbox.
//!
//! It speaks `agent-proto` over one inherited socket (fd 3) and does all
//! work that touches the sandbox — processes, their I/O, files, the default
//! environment — from inside the sandbox's namespaces, so the host never
//! opens a sandbox path itself.

pub mod conn;
pub mod deno;
pub mod dispatch;
pub mod env;
pub mod fs;
pub mod process;
pub mod python;
pub mod sftp;
pub mod signals;
pub mod streams;
pub mod tunnel;
