pub mod api;
pub mod audit;
pub mod client;
pub mod cp;
pub mod events;
pub mod exec;
pub mod forward;
pub mod image;
pub mod inspect;
pub mod isolation;
pub mod ls;
pub mod repl;
pub mod rm;
pub mod run;
pub mod serve;
pub mod shell;
pub mod snapshot;
pub mod storage;
pub mod term;
pub mod token;
pub mod usage;
pub mod volume;

use anyhow::Result;

/// `airlock reap`: releases what dead airlock processes left behind, of
/// every backend (gvisor's runsc state only where runsc is installed).
pub fn reap() -> Result<i32> {
    let paths = jail::JailPaths::default();
    let report = match manager::Gvisor::new(paths.clone()) {
        Ok(gvisor) => gvisor.reap_report()?,
        Err(_) => jail::reap_leftovers(&paths)?,
    };
    println!(
        "reaped {} sandbox(es); {} still owned by live processes",
        report.reaped.len(),
        report.live.len()
    );
    for id in report.reaped {
        println!("  {id}");
    }
    Ok(0)
}
