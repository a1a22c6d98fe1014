//! Command-line definitions; the doc comments are the `--help` text.
//!
//! Main type: [`Cli`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// mlbuild: a content-addressed, sandboxed build system for ML pipelines.
///
/// Exit codes: 0 success, 1 a build failed (or `status` found stale targets), 2 bad input
/// (TOML, labels, cycles, usage), 3 store error, 130 interrupted.
#[derive(Debug, Parser)]
#[command(name = "mlbuild", version, propagate_version = true)]
pub struct Cli {
    // The shared options are declared per subcommand by `crate::options`, which fills
    // these fields from wherever they were given.
    /// `-C DIR`: run as if started in this directory.
    #[arg(skip)]
    pub directory: Option<PathBuf>,
    /// `--store DIR`, else `MLBUILD_STORE`.
    #[arg(skip)]
    pub store: Option<PathBuf>,
    /// `--json`: machine-readable JSON on stdout.
    #[arg(skip)]
    pub json: bool,
    /// `--set KEY=VALUE` overrides, in the order given.
    #[arg(skip)]
    pub set: Vec<String>,

    #[command(subcommand)]
    pub command: Command,
}

/// Names the store directory when `--store` is not given.
pub const STORE_ENV: &str = "MLBUILD_STORE";

/// A path from the environment variable `name`; unset and empty are the same.
pub fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build targets: labels (`//models:fraud`, `:name`) or patterns (`//...`, `//pkg/...`, `//pkg:all`).
    ///
    /// With `--json`, stdout carries one JSON event per line (see the README).
    Build(BuildArgs),
    /// Show which targets are stale and the first reason for each.
    Status(PatternArgs),
    /// Explain, field by field, why a target's key differs from its last build.
    Why(LabelArg),
    /// Query the target graph.
    Query(QueryArgs),
    /// Print the target graph as Graphviz dot or Mermaid.
    Graph(GraphArgs),
    /// Print the stdout and stderr of a target's last run.
    Log(LogArgs),
    /// Remove the workspace's `mlbuild-out/` (the store is kept).
    Clean,
    /// Remove store entries not used by any workspace's latest build or a named build.
    Gc(GcArgs),
    /// Check the store: SQLite's integrity check of the index, and every blob re-hashed
    /// (corrupt ones and the cache entries using them are removed).
    Fsck(FsckArgs),
    /// Show or compare the metrics targets recorded in the build history.
    Metrics(MetricsArgs),
    /// Per-target pipeline statistics from the build history: runs, median duration,
    /// cache hit rate, success rate and last failure.
    Stats(StatsArgs),
    /// List the workspace's recent builds: id, name, start time (UTC), duration, how many
    /// targets executed, were cached or failed, and the outcome.
    History(crate::commands::history::HistoryArgs),
    /// Compare the params of two builds.
    Params(crate::commands::params::ParamsArgs),
    /// Experiments: sweep variants and recent builds side by side.
    Exp(crate::commands::exp::ExpArgs),
    /// Generate signing keys (ECDSA P-256 PEM, readable by openssl and model_signing).
    Key(crate::commands::key::KeyArgs),
    /// Verify a signed artifact (directory or `.tar.zst`): its signature and every file.
    Verify(crate::commands::verify::VerifyArgs),
    /// Run every action of the targets' closure again without the cache and report which
    /// are not reproducible (file by file, JSON value by value); with `--artifact`,
    /// rebuild a signed artifact from this workspace's sources and compare its bytes.
    Audit(crate::commands::audit::AuditArgs),
    /// Serve a remote cache, or show cache statistics.
    Cache(crate::commands::cache::CacheArgs),
    /// Promote a package target's artifact to a release channel, after checking every
    /// rule of the channel (signature, provenance, `from`, gates, approvals).
    Promote(crate::commands::promote::PromoteArgs),
    /// Record a signed approval of an artifact for a channel.
    Approve(crate::commands::promote::ApproveArgs),
    /// Return a channel to an earlier generation's artifact (as a new generation).
    Rollback(crate::commands::rollout::RollbackArgs),
    /// Read release channels: list, show, history, verify, render.
    Channel(crate::commands::channel::ChannelArgs),
    /// Move traffic to a channel's new generation step by step: start, advance, abort,
    /// status.
    Rollout(crate::commands::rollout::RolloutArgs),
    /// Print a shell completion script (e.g. `mlbuild completions bash >
    /// ~/.local/share/bash-completion/completions/mlbuild`).
    Completions(crate::commands::completions::CompletionsArgs),
    /// Print the man page (roff), or write one page per subcommand into a directory.
    Man(crate::commands::man::ManArgs),
    /// Push a signed `package` artifact (a target, built first, or a path) to an OCI
    /// registry: one layer per file, signature and provenance attached.
    Push(crate::commands::push::PushArgs),
    /// Pull a signed artifact from an OCI registry into a new directory, written only
    /// once its signature verifies with the given key.
    Pull(crate::commands::pull::PullArgs),
    /// Export builds to an MLflow tracking server: targets as runs, package artifacts as
    /// registered model versions.
    Mlflow(crate::commands::mlflow::MlflowArgs),
    /// Write BUILD.toml files for a project of another tool (`dvc`).
    Import(crate::commands::import_dvc::ImportArgs),
    /// Run a built-in rule (validate, drift, package). Build actions of built-in kinds
    /// call this inside their sandbox; it is not meant to be typed by hand.
    #[command(hide = true)]
    Rule(RuleArgs),
}

#[derive(Debug, Args)]
pub struct RuleArgs {
    /// The built-in kind.
    pub kind: String,
    /// The rule's own arguments, parsed by the rule.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Targets or patterns to build.
    #[arg(required = true, value_name = "TARGETS")]
    pub targets: Vec<String>,
    /// Maximum number of actions running at once (default: number of cores).
    #[arg(short, long)]
    pub jobs: Option<usize>,
    /// Keep building what does not depend on a failed target.
    #[arg(short, long)]
    pub keep_going: bool,
    #[command(flatten)]
    pub remote: crate::commands::cache::RemoteArgs,
    /// Write a JUnit XML report (one test case per target and per gate) to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Name this build in the history (e.g. `v1`), for `mlbuild params diff` and
    /// baselines; a name given again moves to the new build.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct MetricsArgs {
    #[command(subcommand)]
    pub command: MetricsCommand,
}

#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// The latest metrics recorded for a target.
    Show(MetricsShowArgs),
    /// Compare a target's latest metrics with the previous build that recorded them, or
    /// with a named build (every target with metrics when no label is given).
    Diff(MetricsDiffArgs),
    /// Draw metrics across recent builds and sweep variants into an SVG or a
    /// self-contained HTML report.
    Plot(crate::commands::plot::PlotArgs),
}

#[derive(Debug, Args)]
pub struct MetricsShowArgs {
    /// A target label.
    pub label: String,
    /// Print a Markdown table.
    #[arg(long)]
    pub md: bool,
}

#[derive(Debug, Args)]
pub struct MetricsDiffArgs {
    /// A target label (default: every target with recorded metrics).
    pub label: Option<String>,
    /// Compare against this build (a name from `build --name`, or an id) instead of the
    /// previous one.
    #[arg(long, value_name = "NAME|ID")]
    pub against: Option<String>,
    /// Also list metrics that did not change, and targets with no changed metric.
    #[arg(long)]
    pub all: bool,
    /// Print Markdown tables.
    #[arg(long)]
    pub md: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Targets or patterns (default: every target in the history).
    #[arg(value_name = "TARGETS")]
    pub targets: Vec<String>,
    /// Only builds started within this window (e.g. `7d`, `1w`, `12h`).
    #[arg(long, value_parser = parse_age, default_value = "7d", value_name = "AGE")]
    pub since: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct PatternArgs {
    /// Targets or patterns (default: `//...`).
    #[arg(value_name = "TARGETS")]
    pub targets: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LabelArg {
    /// A target label.
    pub label: String,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[arg(value_enum)]
    pub kind: QueryKind,
    /// A label or pattern.
    pub expr: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum QueryKind {
    /// Every target the expression depends on, transitively (including itself).
    Deps,
    /// Every target in the workspace that depends on the expression, transitively (including itself).
    Rdeps,
    /// The targets the expression names.
    Targets,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Targets or patterns (default: `//...`).
    #[arg(value_name = "TARGETS")]
    pub targets: Vec<String>,
    /// The text format (default: `dot`); `--json` prints nodes and edges instead.
    // An `Option` rather than a default so that `--json` can refuse an explicit format:
    // clap's `conflicts_with` misses a global flag given before the subcommand.
    #[arg(long, value_enum)]
    pub format: Option<GraphFormat>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// A target label.
    pub label: String,
    /// Only stdout.
    #[arg(long, conflicts_with = "stderr")]
    pub stdout: bool,
    /// Only stderr.
    #[arg(long)]
    pub stderr: bool,
}

#[derive(Debug, Args)]
pub struct FsckArgs {
    /// Also repair a damaged index: move it aside and start an empty one. Every blob is
    /// kept; cached results, build history and metrics are lost, so the next build
    /// re-executes (or downloads) what it needs.
    #[arg(long)]
    pub repair: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Shrink the store to at most this size (e.g. `20GB`, `500MiB`; `k`, `M`, `G`, `T` are
    /// powers of 1000, `Ki`, `Mi`, `Gi`, `Ti` of 1024), oldest entries first.
    #[arg(long, value_parser = parse_size)]
    pub max_size: Option<u64>,
    /// Remove entries not used for this long (e.g. `30d`, `1w`, `12h`, `0s`).
    #[arg(long, value_parser = parse_age)]
    pub max_age: Option<std::time::Duration>,
    /// Show what would be removed (counts, bytes, the named builds kept) and remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// A byte size as `bytesize` reads it: `123` (bytes), `500MB` or `500M` (10^6), `2GiB` or
/// `2Gi` (2^30), `1.5T`; units ignore case, so `k`, `K`, `kB` and `KB` all mean 1000.
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| {
            format!(
                "`{text}` is not a size like `500MB`, `20G` or `2GiB` \
                 (`k`, `M`, `G`, `T` are powers of 1000; `Ki`, `Mi`, `Gi`, `Ti` of 1024)"
            )
        })
}

/// An age or window as `humantime` reads it: `30d`, `1w`, `12h`, `15m` (minutes), `90s`,
/// `1h 30m`; `M` is a month of 30.44 days and `y` a year of 365.25 days.
pub fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not an age like `30d`, `1w` or `12h`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (text, bytes) in [
            ("123", 123),
            ("0", 0),
            ("1k", 1000),
            ("1K", 1000),
            ("1kB", 1000),
            ("1kb", 1000),
            ("1KiB", 1024),
            ("1Ki", 1024),
            ("500M", 500_000_000),
            ("500MiB", 500 << 20),
            ("10G", 10_000_000_000),
            ("10 GB", 10_000_000_000),
            ("10GiB", 10 << 30),
            ("1.5KiB", 1536),
            ("2T", 2_000_000_000_000),
            // Integers are exact, however large (no detour through f64).
            ("9007199254740993", 9_007_199_254_740_993),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in ["ten", "1X", "-1", "", "1.5.5G", "G"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ages() {
        const DAY: u64 = 86_400;
        for (text, secs) in [
            ("2d", 2 * DAY),
            ("0s", 0),
            ("0", 0),
            ("90s", 90),
            ("15m", 15 * 60),
            ("12h", 12 * 3600),
            ("1w", 7 * DAY),
            ("2weeks", 14 * DAY),
            ("1h 30m", 5400),
            ("1y", 365 * DAY + DAY / 4),
        ] {
            assert_eq!(parse_age(text).map(|d| d.as_secs()), Ok(secs), "{text}");
        }
        for bad in ["", "7", "d", "-1d", "5q", "week"] {
            assert!(parse_age(bad).is_err(), "{bad:?} accepted");
        }
    }
}
