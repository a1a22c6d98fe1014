//! `mlbuild params diff|show`: the params each build's targets resolved to, compared
//! across builds; and recording them (plus the build's `--name`) after every build.
//!
//! Builds are found by name (`mlbuild build --name v1`) or by invocation id (reported as
//! `invocation_id` in `--json` build summaries), in this workspace's history only.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use mlbuild_exec::BuildSummary;
use mlbuild_graph::BuildGraph;
use mlbuild_store::{BuildParams, InvocationRecord};
use mlbuild_workspace::Workspace;
use serde::Serialize;

use crate::cli::Cli;
use crate::context::Context;
use crate::exit::{CmdResult, Code, Failure};
use crate::table::{self, Align};

#[derive(Debug, Args)]
pub struct ParamsArgs {
    #[command(subcommand)]
    pub command: ParamsCommand,
}

#[derive(Debug, Subcommand)]
pub enum ParamsCommand {
    /// Compare the params of two builds (default: the last two), per target and key.
    Diff(DiffArgs),
    /// Print the params of one build (default: the last), per target and key.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older build: a name given with `build --name`, or an invocation id
    /// (default: the build before B).
    pub a: Option<String>,
    /// The newer build (default: the last build).
    pub b: Option<String>,
    /// Also list params that did not change.
    #[arg(long)]
    pub all: bool,
    /// Print a Markdown table (for pull-request comments).
    #[arg(long)]
    pub md: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A build name or invocation id (default: the last build).
    pub build: Option<String>,
    /// Print a Markdown table (for pull-request comments).
    #[arg(long)]
    pub md: bool,
}

/// How many recent builds to search for ones that recorded params.
const SEARCH_DEPTH: usize = 1000;

/// Build names share the history with invocation ids, so a name may not be a number.
pub(crate) fn check_build_name(name: &str) -> Result<(), Failure> {
    let ok = !name.is_empty()
        && !name.bytes().all(|b| b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Failure::bad_input(miette::miette!(
            help = "names may contain `A-Z a-z 0-9 _ . + -` and may not be a number (numbers are invocation ids)",
            "invalid build name `{name}`"
        )))
    }
}

/// The params that enter each target's key in a build of `graph`, as recorded: JSON of
/// label -> params, leaving out targets without params to keep history small. Depends
/// only on the workspace, so it can be encoded while the build runs.
///
/// Written straight from the targets' TOML params: the same bytes as [`params_json`] of
/// the [`BuildParams`] map (keys sorted at every level, compact), without building that
/// map, whose 10,000 JSON trees were a fifth of the memory a large no-op build touched.
pub(crate) fn params_document(ws: &Workspace, graph: &BuildGraph) -> String {
    let mut entries: Vec<_> = graph
        .topo_order()
        .filter_map(|label| ws.target(label))
        .filter(|target| !target.params.is_empty())
        .map(|target| (target.label.to_string(), &target.params))
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(64 * entries.len() + 2);
    out.push(b'{');
    for (i, (label, params)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, label).expect("writing to a Vec cannot fail");
        out.push(b':');
        serde_json::to_writer(&mut out, params).expect("TOML values are representable as JSON");
    }
    out.push(b'}');
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// After a build: record its params document (from [`params_document`]), and name the
/// build if asked.
pub(crate) fn record_build(
    ctx: &Context,
    params: &str,
    summary: &BuildSummary,
    name: Option<&str>,
) -> Result<(), Failure> {
    ctx.store
        .record_params_json(summary.invocation_id, params)?;
    if let Some(name) = name {
        ctx.store
            .name_invocation(&ws_id(ctx), summary.invocation_id, name)?;
    }
    Ok(())
}

fn ws_id(ctx: &Context) -> String {
    ctx.ws.root.to_string_lossy().into_owned()
}

pub fn run(cli: &Cli, args: &ParamsArgs) -> CmdResult {
    let md = match &args.command {
        ParamsCommand::Diff(a) => a.md,
        ParamsCommand::Show(a) => a.md,
    };
    if md && cli.json {
        return Err(Failure::bad_input(miette::miette!(
            "`--md` and `--json` cannot be used together"
        )));
    }
    let ctx = Context::load(cli)?;
    match &args.command {
        ParamsCommand::Diff(diff) => run_diff(cli, &ctx, diff),
        ParamsCommand::Show(show) => run_show(cli, &ctx, show),
    }
}

/// A build picked for comparison, with its params.
struct Picked {
    record: InvocationRecord,
    name: Option<String>,
    params: BuildParams,
}

#[derive(Serialize)]
struct BuildInfo {
    id: i64,
    name: Option<String>,
    command: String,
    started_at: i64,
}

impl Picked {
    fn info(&self) -> BuildInfo {
        BuildInfo {
            id: self.record.id,
            name: self.name.clone(),
            command: self.record.invocation.command.clone(),
            started_at: self.record.invocation.started_at,
        }
    }

    fn title(&self) -> String {
        match &self.name {
            Some(n) => format!("build {} ({n})", self.record.id),
            None => format!("build {}", self.record.id),
        }
    }
}

fn find(ctx: &Context, text: &str) -> Result<Picked, Failure> {
    let ws = ws_id(ctx);
    let Some(record) = ctx.store.find_invocation(&ws, text)? else {
        return Err(Failure::bad_input(miette::miette!(
            help = "name builds with `mlbuild build --name NAME`; `mlbuild params show` and `--json` build summaries give invocation ids",
            "no build `{text}` in this workspace's history"
        )));
    };
    let Some(params) = ctx.store.params_of(record.id)? else {
        return Err(Failure::bad_input(miette::miette!(
            help = "params are recorded by `mlbuild build`; other commands leave none",
            "build `{text}` recorded no params"
        )));
    };
    let name = ctx.store.invocation_name(record.id)?;
    Ok(Picked {
        record,
        name,
        params,
    })
}

/// The most recent builds that recorded params, newest first, skipping `skip` of them.
fn recent(ctx: &Context, want: usize, older_than: Option<i64>) -> Result<Vec<Picked>, Failure> {
    let mut out = Vec::new();
    for record in ctx.store.recent_invocations(&ws_id(ctx), SEARCH_DEPTH)? {
        if older_than.is_some_and(|id| record.id >= id) {
            continue;
        }
        if let Some(params) = ctx.store.params_of(record.id)? {
            let name = ctx.store.invocation_name(record.id)?;
            out.push(Picked {
                record,
                name,
                params,
            });
            if out.len() == want {
                break;
            }
        }
    }
    Ok(out)
}

/// Flatten params to `(label, dotted key) -> value`; arrays are compared whole.
fn flatten(params: &BuildParams) -> BTreeMap<(String, String), serde_json::Value> {
    fn walk(
        label: &str,
        prefix: &str,
        v: &serde_json::Value,
        out: &mut BTreeMap<(String, String), serde_json::Value>,
    ) {
        match v.as_object() {
            Some(obj) if !obj.is_empty() || prefix.is_empty() => {
                for (k, child) in obj {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(label, &path, child, out);
                }
            }
            _ => {
                out.insert((label.to_owned(), prefix.to_owned()), v.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    for (label, v) in params {
        walk(label, "", v, &mut out);
    }
    out
}

fn show_value(v: Option<&serde_json::Value>) -> String {
    match v {
        None => "-".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => mlbuild_digest::canonical_json(other),
    }
}

#[derive(Serialize)]
struct Change {
    label: String,
    param: String,
    a: Option<serde_json::Value>,
    b: Option<serde_json::Value>,
    changed: bool,
}

fn run_diff(cli: &Cli, ctx: &Context, args: &DiffArgs) -> CmdResult {
    let (a, b) = match (&args.a, &args.b) {
        (Some(a), Some(b)) => (find(ctx, a)?, find(ctx, b)?),
        (Some(a), None) => {
            let a = find(ctx, a)?;
            let Some(b) = recent(ctx, 1, None)?.into_iter().next() else {
                return Err(too_few(0));
            };
            (a, b)
        }
        (None, Some(b)) => {
            let b = find(ctx, b)?;
            let Some(a) = recent(ctx, 1, Some(b.record.id))?.into_iter().next() else {
                return Err(Failure::bad_input(miette::miette!(
                    "no build with params before `{}`",
                    b.title()
                )));
            };
            (a, b)
        }
        (None, None) => {
            let mut two = recent(ctx, 2, None)?;
            if two.len() < 2 {
                return Err(too_few(two.len()));
            }
            let b = two.remove(0);
            (two.remove(0), b)
        }
    };
    let fa = flatten(&a.params);
    let fb = flatten(&b.params);
    let mut keys: Vec<&(String, String)> = fa.keys().chain(fb.keys()).collect();
    keys.sort();
    keys.dedup();
    let changes: Vec<Change> = keys
        .into_iter()
        .map(|k| Change {
            label: k.0.clone(),
            param: k.1.clone(),
            a: fa.get(k).cloned(),
            b: fb.get(k).cloned(),
            changed: fa.get(k) != fb.get(k),
        })
        .filter(|c| args.all || c.changed)
        .collect();
    if cli.json {
        super::print_json(&serde_json::json!({
            "a": a.info(),
            "b": b.info(),
            "changes": changes,
        }));
        return Ok(Code::Ok);
    }
    if changes.is_empty() {
        println!("no params differ between {} and {}", a.title(), b.title());
        return Ok(Code::Ok);
    }
    let rows: Vec<[String; 4]> = changes
        .iter()
        .map(|c| {
            [
                c.label.clone(),
                c.param.clone(),
                show_value(c.a.as_ref()),
                show_value(c.b.as_ref()),
            ]
        })
        .collect();
    print_table(["target", "param", &a.title(), &b.title()], &rows, args.md);
    Ok(Code::Ok)
}

fn run_show(cli: &Cli, ctx: &Context, args: &ShowArgs) -> CmdResult {
    let picked = match &args.build {
        Some(text) => find(ctx, text)?,
        None => match recent(ctx, 1, None)?.into_iter().next() {
            Some(p) => p,
            None => return Err(too_few(0)),
        },
    };
    if cli.json {
        super::print_json(&serde_json::json!({
            "build": picked.info(),
            "params": picked.params,
        }));
        return Ok(Code::Ok);
    }
    let title = format!("{}: {}", picked.title(), picked.record.invocation.command);
    if args.md {
        println!("**{}**\n", table::md_escape(&title));
    } else {
        println!("{title}");
    }
    let rows: Vec<[String; 3]> = flatten(&picked.params)
        .into_iter()
        .map(|((label, key), v)| [label, key, show_value(Some(&v))])
        .collect();
    if rows.is_empty() {
        println!("no target of this build has params");
    } else {
        print_table(["target", "param", "value"], &rows, args.md);
    }
    Ok(Code::Ok)
}

fn too_few(found: usize) -> Failure {
    Failure::bad_input(miette::miette!(
        help =
            "params are recorded by every `mlbuild build`; build, change a param, and build again",
        "need two builds with recorded params to compare, this workspace has {found}"
    ))
}

/// A table of params: text, or Markdown with `--md`. Values are JSON or strings of any
/// kind, so every column is left-aligned.
fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]], md: bool) {
    let align = [Align::Left; N];
    if md {
        print!("{}", table::markdown(&header, rows, &align));
    } else {
        print!("{}", table::text(&header, rows, &align));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlbuild_graph::params_to_json;
    use mlbuild_store::params_json;

    #[test]
    fn flattens_nested_params() {
        let p: BuildParams = BTreeMap::from([(
            "//m:t".to_owned(),
            serde_json::json!({"train": {"lr": 0.1, "layers": [1, 2]}, "seed": 1, "e": {}}),
        )]);
        let f = flatten(&p);
        let keys: Vec<&str> = f.keys().map(|(_, k)| k.as_str()).collect();
        assert_eq!(keys, ["e", "seed", "train.layers", "train.lr"]);
    }

    #[test]
    fn params_document_is_the_canonical_json_of_the_params_map() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("MLBUILD.toml"), "").unwrap();
        for (pkg, build) in [
            (
                "",
                r#"
[target.z]
cmd = ["true"]
params = { b = 1, a = { y = [1.5, "s"], x = 1979-05-27T07:32:00Z }, "q\"k" = true }
[target.none]
cmd = ["true"]
"#,
            ),
            (
                "a",
                "[target.t]\ncmd = [\"true\"]\nparams = { lr = 0.1, n = -3, f = nan }\n",
            ),
            ("a/b", "[target.u]\ncmd = [\"true\"]\nparams = { e = {} }\n"),
        ] {
            std::fs::create_dir_all(dir.path().join(pkg)).unwrap();
            std::fs::write(dir.path().join(pkg).join("BUILD.toml"), build).unwrap();
        }
        let ws = Workspace::load(dir.path()).unwrap();
        let labels: Vec<_> = ws.targets().map(|t| t.label.clone()).collect();
        let graph = BuildGraph::new(&ws, &labels).unwrap();
        // What `BuildParams` gives: labels sorted as strings (`//a/b:u` before `//a:t`).
        let expected: BuildParams = ws
            .targets()
            .filter(|t| !t.params.is_empty())
            .map(|t| (t.label.to_string(), params_to_json(&t.params)))
            .collect();
        let document = params_document(&ws, &graph);
        assert_eq!(document, params_json(&expected));
        assert!(document.starts_with(r#"{"//:z":"#), "{document}");
    }

    #[test]
    fn build_names() {
        for ok in ["v1", "release-2.0", "a_b"] {
            assert!(check_build_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "12", "a b", "a/b"] {
            assert!(check_build_name(bad).is_err(), "{bad}");
        }
    }
}
