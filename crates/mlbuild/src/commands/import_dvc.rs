//! `mlbuild import dvc [PATH/dvc.yaml]`: writes `BUILD.toml` for an existing DVC project.
//!
//! The translation itself is in [`crate::dvc`]; this command finds the files, refuses to
//! overwrite a `BUILD.toml` unless asked, creates `MLBUILD.toml` when the project is not
//! inside an mlbuild workspace yet, and reports, by stage and field, what `dvc.yaml` says
//! that mlbuild does not do the same way. Main type: [`ImportArgs`].

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::cli::Cli;
use crate::commands::print_json;
use crate::dvc::Note;
use crate::exit::{CmdResult, Code, Failure};

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub command: ImportCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Write BUILD.toml beside a DVC project's `dvc.yaml`: one target per stage (`foreach`
    /// expanded, `matrix` as a sweep), with its params wiring, and list what has no
    /// equivalent.
    Dvc(DvcArgs),
}

#[derive(Debug, Args)]
pub struct DvcArgs {
    /// The pipeline file (default: `dvc.yaml` in the current directory).
    #[arg(value_name = "PATH/dvc.yaml")]
    pub path: Option<PathBuf>,
    /// Replace an existing BUILD.toml.
    #[arg(long)]
    pub force: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    build_toml: String,
    created_workspace: Option<String>,
    targets: &'a [String],
    unmapped: &'a [Note],
}

pub fn run(cli: &Cli, args: &ImportArgs) -> CmdResult {
    match &args.command {
        ImportCommand::Dvc(args) => run_dvc(cli, args),
    }
}

fn run_dvc(cli: &Cli, args: &DvcArgs) -> CmdResult {
    let start = crate::context::start_dir(cli)?;
    let path = match &args.path {
        Some(p) if start.join(p).is_dir() => start.join(p).join("dvc.yaml"),
        Some(p) => start.join(p),
        None => start.join("dvc.yaml"),
    };
    if !path.is_file() {
        return Err(Failure::bad_input(miette::miette!(
            help = "pass the pipeline file: `mlbuild import dvc path/to/dvc.yaml`",
            "no DVC pipeline at `{}`",
            path.display()
        )));
    }
    let path = std::fs::canonicalize(&path)
        .map_err(|e| Failure::bad_input(miette::miette!("cannot use `{}`: {e}", path.display())))?;
    let project = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let build = project.join(mlbuild_workspace::BUILD_FILE);
    if build.exists() && !args.force {
        return Err(Failure::bad_input(miette::miette!(
            help = "pass `--force` to replace it",
            "`{}` exists already",
            build.display()
        )));
    }
    let imported = crate::dvc::import(&path).map_err(|e| {
        Failure::bad_input(miette::miette!("cannot import `{}`: {e}", path.display()))
    })?;
    let write = |p: &Path, text: &str| {
        std::fs::write(p, text)
            .map_err(|e| Failure::store(miette::miette!("cannot write `{}`: {e}", p.display())))
    };
    // A project outside any workspace becomes one: MLBUILD.toml beside dvc.yaml.
    let created_workspace = match mlbuild_workspace::Workspace::discover(&project) {
        Ok(_) => None,
        Err(_) => {
            let ws = project.join(mlbuild_workspace::WORKSPACE_FILE);
            let name = project
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "imported".to_owned());
            write(
                &ws,
                &format!(
                    "# Created by `mlbuild import dvc`.\n[workspace]\nname = {}\n",
                    toml::Value::String(name)
                ),
            )?;
            Some(ws)
        }
    };
    write(&build, &imported.build_toml)?;
    let shown = |p: &Path| {
        p.strip_prefix(&start)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    if cli.json {
        print_json(&Report {
            build_toml: shown(&build),
            created_workspace: created_workspace.as_deref().map(shown),
            targets: &imported.targets,
            unmapped: &imported.notes,
        });
        return Ok(Code::Ok);
    }
    if let Some(ws) = &created_workspace {
        println!("wrote {}", shown(ws));
    }
    println!(
        "wrote {}: {} targets ({})",
        shown(&build),
        imported.targets.len(),
        imported.targets.join(", ")
    );
    if imported.notes.is_empty() {
        println!("every field of dvc.yaml has an equivalent");
    } else {
        println!("not carried over as it was:");
        for n in &imported.notes {
            println!("  stage `{}`, `{}`: {}", n.stage, n.field, n.message);
        }
    }
    Ok(Code::Ok)
}
