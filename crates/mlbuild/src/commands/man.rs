//! `mlbuild man`: the man page, rendered by `clap_mangen` from the command definition the
//! parser uses, so options and help text are the same as `--help`'s.

use std::path::PathBuf;

use clap::Args;

use crate::exit::{CmdResult, Code, Failure};

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `mlbuild.1` and one page per subcommand (`mlbuild-build.1`, ...) into this
    /// directory (created if missing) instead of printing `mlbuild.1`.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn run(args: &ManArgs) -> CmdResult {
    let cmd = crate::options::command();
    match &args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page).map_err(|e| {
                Failure::bad_input(miette::miette!("cannot render the man page: {e}"))
            })?;
            print!("{}", String::from_utf8_lossy(&page));
        }
        Some(dir) => {
            let failed = |e: std::io::Error| {
                Failure::bad_input(miette::miette!(
                    "cannot write man pages into `{}`: {e}",
                    dir.display()
                ))
            };
            std::fs::create_dir_all(dir).map_err(failed)?;
            clap_mangen::generate_to(cmd, dir).map_err(failed)?;
        }
    }
    Ok(Code::Ok)
}
