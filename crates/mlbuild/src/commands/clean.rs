//! `mlbuild clean`: remove the workspace's `mlbuild-out/`. The store keeps every result,
//! so the next build restores outputs from cache instead of re-running anything.

use crate::cli::Cli;
use crate::context::load_workspace;
use crate::exit::{CmdResult, Code, Failure};

pub fn run(cli: &Cli) -> CmdResult {
    let ws = load_workspace(cli)?;
    let out = ws.root.join("mlbuild-out");
    match std::fs::remove_dir_all(&out) {
        Ok(()) => eprintln!("removed {}", out.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => eprintln!("nothing to clean"),
        Err(e) => {
            return Err(Failure::store(miette::miette!(
                "cannot remove `{}`: {e}",
                out.display()
            )))
        }
    }
    Ok(Code::Ok)
}
