pub mod api;
pub mod audit;
pub mod client;
pub mod cp;
pub mod events;
pub mod exec;
pub mod forward;
pub mod image;
pub mod inspect;
pub mod ls;
pub mod repl;
pub mod rm;
pub mod run;
pub mod serve;
pub mod shell;
pub mod term;
pub mod token;
pub mod usage;

use anyhow::Result;

/// `airlock reap`: releases what dead airlock processes left behind.
pub fn reap() -> Result<i32> {
    let report = jail::reap_leftovers(&jail::JailPaths::default())?;
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
