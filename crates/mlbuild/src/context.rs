//! Finding the workspace and opening the store, shared by every subcommand.
//!
//! Main type: [`Context`]. The store location is chosen by precedence: `--store`, then
//! `MLBUILD_STORE` (both in `cli.store`), then `[workspace] store` in MLBUILD.toml, then the
//! user's cache directory; one store is shared by all of a user's workspaces.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mlbuild_store::Store;
use mlbuild_workspace::{Label, ParamOverride, Workspace, WorkspaceConfig};

use crate::cli::Cli;
use crate::exit::Failure;

pub struct Context {
    pub ws: Arc<Workspace>,
    pub store: Arc<Store>,
    /// The package of the directory mlbuild was started in, for `:name` labels.
    pub current_package: String,
}

impl Context {
    pub fn load(cli: &Cli) -> Result<Context, Failure> {
        Context::load_with(cli, |_| None)
    }

    /// [`Context::load`], taking the store from `opened` when it returns one for the
    /// store's absolute root (one opened ahead, while the workspace was being parsed).
    pub fn load_with(
        cli: &Cli,
        opened: impl FnOnce(&Path) -> Option<Arc<Store>>,
    ) -> Result<Context, Failure> {
        let ws = load_workspace(cli)?;
        let current_package = current_package(cli, &ws)?;
        Context::with_workspace(cli, ws, current_package, opened)
    }

    /// [`Context::load_with`] for a workspace loaded already (with [`load_workspace`]).
    pub fn with_workspace(
        cli: &Cli,
        ws: Workspace,
        current_package: String,
        opened: impl FnOnce(&Path) -> Option<Arc<Store>>,
    ) -> Result<Context, Failure> {
        let store_root = store_root(cli, &ws.config);
        let reused = std::path::absolute(&store_root)
            .ok()
            .and_then(|abs| opened(&abs).filter(|s| s.root() == abs));
        let store = match reused {
            Some(store) => store,
            None => Arc::new(Store::open(&store_root)?),
        };
        Ok(Context {
            ws: Arc::new(ws),
            store,
            current_package,
        })
    }

    /// Expands labels and patterns; no arguments means `//...`.
    pub fn resolve(&self, patterns: &[String]) -> Result<Vec<Label>, Failure> {
        resolve(&self.ws, &self.current_package, patterns)
    }

    /// Exactly one target.
    pub fn resolve_one(&self, text: &str) -> Result<Label, Failure> {
        let label = Label::parse(text, &self.current_package)?;
        Ok(self
            .ws
            .resolve(&[label.to_string()], &self.current_package)?
            .remove(0))
    }
}

/// Expands labels and patterns against `ws` as seen from `current_package`; no arguments
/// means `//...`.
pub fn resolve(
    ws: &Workspace,
    current_package: &str,
    patterns: &[String],
) -> Result<Vec<Label>, Failure> {
    let all = ["//...".to_string()];
    let patterns = if patterns.is_empty() {
        &all[..]
    } else {
        patterns
    };
    Ok(ws.resolve(patterns, current_package)?)
}

/// The package of the directory mlbuild was started in, for `:name` labels.
pub fn current_package(cli: &Cli, ws: &Workspace) -> Result<String, Failure> {
    Ok(ws.package_of_dir(&start_dir(cli)?))
}

/// The parse cache's directory inside a store (see `mlbuild_workspace::Workspace::load_cached`).
pub const PARSE_CACHE_DIR: &str = "parsed";

/// Where the store is: `--store` or `MLBUILD_STORE`, else `[workspace] store`, else the
/// user's cache directory.
pub fn store_root(cli: &Cli, config: &WorkspaceConfig) -> PathBuf {
    cli.store
        .clone()
        .or_else(|| config.store.clone())
        .unwrap_or_else(Store::default_root)
}

/// The store for a command that checks or repairs it (`fsck`), found without loading the
/// workspace: `--store` or `MLBUILD_STORE`, else `[workspace] store` of the enclosing
/// `MLBUILD.toml` (only that file is read, so a broken `BUILD.toml` cannot stand in the
/// way of a repair), else the user's cache directory, also outside any workspace.
pub fn maintenance_store_root(cli: &Cli) -> Result<PathBuf, Failure> {
    if let Some(store) = &cli.store {
        return Ok(store.clone());
    }
    let Ok(root) = Workspace::discover(&start_dir(cli)?) else {
        return Ok(Store::default_root());
    };
    let path = root.join(mlbuild_workspace::WORKSPACE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Failure::bad_input(miette::miette!("cannot read `{}`: {e}", path.display()))
    })?;
    let source = Arc::new(mlbuild_workspace::SourceText {
        name: mlbuild_workspace::WORKSPACE_FILE.to_owned(),
        text,
    });
    let config = WorkspaceConfig::parse(&source, &root)?;
    Ok(store_root(cli, &config))
}

pub fn start_dir(cli: &Cli) -> Result<PathBuf, Failure> {
    let dir = match &cli.directory {
        Some(d) => d.clone(),
        None => std::env::current_dir().map_err(|e| {
            Failure::bad_input(miette::miette!("cannot read the current directory: {e}"))
        })?,
    };
    std::fs::canonicalize(&dir).map_err(|e| {
        Failure::bad_input(miette::miette!(
            "cannot use directory `{}`: {e}",
            dir.display()
        ))
    })
}

/// Loads and checks the workspace without opening the store (for commands that only read
/// the graph).
pub fn load_workspace(cli: &Cli) -> Result<Workspace, Failure> {
    let start = start_dir(cli)?;
    let root = Workspace::discover(&start)?;
    let overrides = cli
        .set
        .iter()
        .map(|s| ParamOverride::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    // The parse cache lives in the store, used only once the store exists: a query in a
    // fresh checkout creates nothing.
    let (mut ws, _) = Workspace::load_cached(&root, &overrides, |config| {
        let store = store_root(cli, config);
        store.is_dir().then(|| store.join(PARSE_CACHE_DIR))
    })?;
    ws.check_deps()?;
    crate::signing::configure(&mut ws)?;
    Ok(ws)
}
