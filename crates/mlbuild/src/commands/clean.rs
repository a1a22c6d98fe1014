//! `mlbuild clean`: remove the workspace's `mlbuild-out/`. The store keeps every result,
//! so the next build restores outputs from cache instead of re-running anything.

use crate::cli::Cli;
use crate::context::load_workspace;
use crate::exit::{CmdResult, Code, Failure};

pub fn run(cli: &Cli) -> CmdResult {
    let ws = load_workspace(cli)?;
    let out = ws.root.join("mlbuild-out");
    let removed = match std::fs::remove_dir_all(&out) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(Failure::store(miette::miette!(
                "cannot remove `{}`: {e}",
                out.display()
            )))
        }
    };
    if cli.json {
        super::print_json(&serde_json::json!({ "removed": removed.then_some(&out) }));
    } else if removed {
        eprintln!("removed {}", out.display());
    } else {
        eprintln!("nothing to clean");
    }
    Ok(Code::Ok)
}
