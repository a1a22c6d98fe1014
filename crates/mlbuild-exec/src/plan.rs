//! Planning one target: its input tree, its tools and its action key.
//!
//! Main type: [`Planner`]. Planning never runs anything and touches the disk only to
//! `stat` sources (digests come from the store's file digest cache), so it is cheap enough
//! to do for every target on every build, which is what makes a no-op build fast and
//! `mlbuild status` / `mlbuild why` exact.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mlbuild_digest::Digest;
use mlbuild_graph::{
    expand_argv, params_to_json, ActionPreimage, ArgvContext, InputEntry, KEY_SCHEMA_VERSION,
};
use mlbuild_store::{FileDigest, FileDigestCache, OutputFile};
use mlbuild_workspace::{Label, SourceFile, Target, Workspace};

use crate::outputs::out_dir_rel;
use crate::tools::{ResolvedTool, ToolResolver};
use crate::ExecError;

/// Output files of one target: output-dir-relative path -> file.
pub type Outputs = BTreeMap<String, OutputFile>;

/// A target ready to be looked up or executed.
#[derive(Debug)]
pub struct Planned {
    pub key: Digest,
    pub preimage: ActionPreimage,
    /// Canonical JSON of `preimage`, stored for `mlbuild why`.
    pub preimage_json: String,
    pub srcs: Vec<(SourceFile, FileDigest)>,
    /// The command's program and declared tools, by name.
    pub tools: BTreeMap<String, ResolvedTool>,
    /// Dependency name -> exec-root-relative output directory.
    pub dep_dirs: BTreeMap<String, String>,
    /// The dependencies' outputs, laid out in the exec root.
    pub dep_outputs: Vec<(String, OutputFile)>,
}

/// Computes action keys.
pub struct Planner<'a> {
    pub ws: &'a Workspace,
    pub files: &'a FileDigestCache,
    pub tools: &'a ToolResolver,
}

impl Planner<'_> {
    /// Plans `target` given the recorded outputs of each of its dependencies.
    pub fn plan(
        &self,
        target: &Target,
        dep_outputs: &BTreeMap<Label, &Outputs>,
    ) -> Result<Planned, ExecError> {
        let deps: Vec<&Outputs> = target
            .deps
            .iter()
            .map(|dep| {
                *dep_outputs
                    .get(dep)
                    .expect("dependencies are planned before their dependents")
            })
            .collect();
        self.plan_deps(target, &deps)
    }

    /// [`Planner::plan`] with the dependencies' outputs in the order of `target.deps`.
    pub fn plan_deps(
        &self,
        target: &Target,
        dep_outputs: &[&Outputs],
    ) -> Result<Planned, ExecError> {
        assert_eq!(
            dep_outputs.len(),
            target.deps.len(),
            "one output set per dependency"
        );
        // Formatted only for an error: this runs for every target of every build.
        let label = || target.label.to_string();
        let mut inputs = BTreeMap::new();

        let srcs = self.ws.expand_srcs(target)?;
        let mut hashed = Vec::with_capacity(srcs.len());
        for src in srcs {
            // Expansion already `lstat`ed a non-symlink source: that is its `stat` too.
            let fd = self
                .files
                .digest_with_metadata(&src.abs, src.metadata.as_ref())
                .map_err(|e| {
                    ExecError::io(
                        format!("`{}`: cannot read source `{}`", label(), src.path),
                        e,
                    )
                })?;
            inputs.insert(
                src.path.clone(),
                InputEntry {
                    digest: fd.digest,
                    executable: fd.executable,
                },
            );
            hashed.push((src, fd));
        }

        let mut deps = BTreeMap::new();
        let mut dep_dirs = BTreeMap::new();
        let mut laid_out = Vec::new();
        for (dep, outs) in target.deps.iter().zip(dep_outputs) {
            let dir = out_dir_rel(dep);
            for (path, file) in outs.iter() {
                let rel = format!("{dir}/{path}");
                inputs.insert(
                    rel.clone(),
                    InputEntry {
                        digest: file.digest,
                        executable: file.executable,
                    },
                );
                laid_out.push((rel, *file));
            }
            deps.insert(dep.name.clone(), dep.to_string());
            dep_dirs.insert(dep.name.clone(), dir);
        }

        let params = params_to_json(&target.params);
        // A sweep's selection runs no command: its rule is what it computes.
        let argv = match &target.select {
            Some(select) => Ok(select.argv()),
            None => expand_argv(
                &target.cmd,
                &ArgvContext {
                    out: None,
                    params_file: None,
                    deps: None,
                    params: &params,
                },
            ),
        }
        .map_err(|e| ExecError::Placeholder {
            label: label(),
            message: e.to_string(),
        })?;

        let mut tools = BTreeMap::new();
        let program = target.cmd.first().filter(|p| !p.contains('/'));
        if target.is_builtin() {
            // Built-in kinds run this very binary, whose content is their rule's code.
            let tool = self.tools.resolve_self(self.files)?;
            tools.insert(mlbuild_workspace::BUILTIN_PROGRAM.to_owned(), tool);
        }
        for name in program.into_iter().chain(target.tools.iter()) {
            if !tools.contains_key(name) {
                let tool = self.tools.resolve_with(label, name, self.files)?;
                tools.insert(name.clone(), tool);
            }
        }

        let preimage = ActionPreimage {
            schema: KEY_SCHEMA_VERSION,
            kind: target.kind.clone(),
            cwd: target.label.package.clone(),
            argv,
            env: target.env.clone(),
            params,
            deps,
            inputs,
            tools: tools.iter().map(|(n, t)| (n.clone(), t.digest)).collect(),
            outs: target.outs.clone(),
            network: target.network,
            source_date_epoch: self.ws.config.source_date_epoch,
            platform: ActionPreimage::platform(),
        };
        let (key, preimage_json) = preimage.key();
        Ok(Planned {
            key,
            preimage,
            preimage_json,
            srcs: hashed,
            tools,
            dep_dirs,
            dep_outputs: laid_out,
        })
    }
}

impl Planned {
    /// The resolved program, if `cmd[0]` is a tool name (not a path into the package).
    pub fn program(&self, target: &Target) -> Option<PathBuf> {
        let first = target.cmd.first()?;
        self.tools.get(first).map(|t| t.path.clone())
    }
}
