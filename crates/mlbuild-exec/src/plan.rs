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
use mlbuild_workspace::{is_system_path, Label, PythonEnv, SourceFile, Target, Workspace};

use crate::envs::{self, EnvMount};
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
    /// The Python environments the action runs in, in `deps` order.
    pub envs: Vec<EnvMount>,
    /// The `uv` binary on the host, for a locked `python_env` target's own build.
    pub uv: Option<PathBuf>,
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
        let mut env_mounts = Vec::new();
        if let Some(PythonEnv::External { path }) = &target.python_env {
            // Its own tree is what it records: any change to the environment reruns it.
            env_mounts.push(envs::external_mount(
                &self.ws.root,
                target,
                path,
                self.files,
                self.tools,
            )?);
        }
        if let Some(named) = &target.env_target {
            if self.ws.target(named).is_none_or(|t| t.python_env.is_none()) {
                return Err(ExecError::Environment {
                    label: label(),
                    env: named.to_string(),
                    reason: "`env` names a target that is not a `python_env`".into(),
                    help: "give `env` the label of a `kind = \"python_env\"` target, or a table of variables (`env = { NAME = \"value\" }`)".into(),
                });
            }
        }
        for (dep, outs) in target.deps.iter().zip(dep_outputs) {
            let dep_env = self
                .ws
                .target(dep)
                .and_then(|t| Some((t, t.python_env.as_ref()?)));
            if let Some((dep_target, env)) = dep_env {
                // An environment is mounted whole, not laid out file by file, and enters
                // the key as one digest.
                let mount = match env {
                    PythonEnv::Locked { prefix } => {
                        envs::locked_mount(dep, prefix, outs, self.tools)
                    }
                    PythonEnv::External { path } => envs::external_mount(
                        &self.ws.root,
                        dep_target,
                        path,
                        self.files,
                        self.tools,
                    )?,
                };
                deps.insert(dep.name.clone(), dep.to_string());
                dep_dirs.insert(
                    dep.name.clone(),
                    mount.prefix.to_string_lossy().into_owned(),
                );
                env_mounts.push(mount);
                continue;
            }
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
        let mut uv = None;
        // A bare name is looked up; an absolute path is a tool too (its content enters
        // the key); a relative path is a file of the package.
        let program = target
            .cmd
            .first()
            .filter(|p| !p.contains('/') || p.starts_with('/'));
        if let Some(first) = target
            .cmd
            .first()
            .filter(|p| p.contains('/') && target.runs_command())
        {
            self.check_package_program(target, first, &hashed)?;
        }
        if target.is_builtin() {
            // Built-in kinds run this very binary, whose content is their rule's code.
            let tool = self.tools.resolve_self(self.files)?;
            tools.insert(mlbuild_workspace::BUILTIN_PROGRAM.to_owned(), tool);
        }
        let locked_env = matches!(target.python_env, Some(PythonEnv::Locked { .. }));
        for name in program.into_iter().chain(target.tools.iter()) {
            if tools.contains_key(name) {
                continue;
            }
            let tool = if locked_env && name == "uv" {
                let tool =
                    self.tools
                        .resolve_uv(&label(), self.ws.config.uv.as_deref(), self.files)?;
                uv = Some(tool.path.clone());
                tool
            } else if let Some(tool) = envs::find_tool(&env_mounts, name, self.files)? {
                tool
            } else if name.starts_with('/') && !is_system_path(std::path::Path::new(name)) {
                return Err(ExecError::UndeclaredEnvironment {
                    label: label(),
                    path: name.clone(),
                    help: envs::declare_help(std::path::Path::new(name)),
                });
            } else {
                self.tools.resolve_with(label, name, self.files)?
            };
            tools.insert(name.clone(), tool);
        }

        let preimage = ActionPreimage {
            schema: KEY_SCHEMA_VERSION,
            kind: target.kind.clone(),
            cwd: target.label.package.clone(),
            argv,
            env: target.action_env(),
            environments: env_mounts
                .iter()
                .map(|e| (e.name.clone(), e.digest))
                .collect(),
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
            envs: env_mounts,
            uv,
        })
    }

    /// A `cmd[0]` with a `/` that is not absolute names a file of the package (such as
    /// `./run.sh`), which must be among the target's sources to exist in the sandbox.
    fn check_package_program(
        &self,
        target: &Target,
        program: &str,
        srcs: &[(SourceFile, FileDigest)],
    ) -> Result<(), ExecError> {
        if program.starts_with('/') || program.starts_with('{') {
            return Ok(());
        }
        let mut parts: Vec<&str> = Vec::new();
        if !target.label.package.is_empty() {
            parts.extend(target.label.package.split('/'));
        }
        for part in program.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        let path = parts.join("/");
        if srcs.iter().any(|(s, _)| s.path == path) {
            return Ok(());
        }
        let looks_like_env = program.split('/').any(|c| c.contains("venv") || c == "bin");
        let mut help = format!("add `{program}` to `srcs` so the action can run it");
        if looks_like_env {
            help.push_str(
                "; if it belongs to a Python environment, declare that environment as a target \
                 with `kind = \"python_env\"` (`lock` to build it, `path` for an existing one), list \
                 it in `deps` and run `python` (docs/python.md)",
            );
        }
        Err(ExecError::ProgramNotInSrcs {
            label: target.label.to_string(),
            program: program.to_owned(),
            help,
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
