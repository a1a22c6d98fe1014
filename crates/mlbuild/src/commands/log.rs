//! `mlbuild log`: stdout and stderr of a target's last run. Executed runs leave their
//! logs in `mlbuild-out/.logs/`; a target only ever restored from the cache has its logs
//! in the action-cache entry. With `--json`: `{"label", "stdout", "stderr"}`, a stream
//! not asked for left out, one not recorded `null`.

use crate::cli::{Cli, LogArgs};
use crate::context::Context;
use crate::exit::{CmdResult, Code, Failure};

pub fn run(cli: &Cli, args: &LogArgs) -> CmdResult {
    let ctx = Context::load(cli)?;
    let label = ctx.resolve_one(&args.label)?;
    let pkg = if label.package.is_empty() {
        "_root"
    } else {
        &label.package
    };
    let dir = ctx.ws.root.join("mlbuild-out/.logs").join(pkg);
    let want = [("stdout", !args.stderr), ("stderr", !args.stdout)];
    let mut logs = Vec::new();
    for (stream, wanted) in want {
        if !wanted {
            continue;
        }
        let path = dir.join(format!("{}.{stream}", label.name));
        let bytes = match std::fs::read(&path) {
            Ok(b) => Some(b),
            Err(_) => from_cache(&ctx, &label, stream)?,
        };
        logs.push((stream, bytes));
    }
    if logs.iter().all(|(_, bytes)| bytes.is_none()) {
        return Err(Failure::bad_input(miette::miette!(
            help = format!("run `mlbuild build {label}` first"),
            "`{label}` has no recorded run in this workspace"
        )));
    }
    if cli.json {
        // Logs are bytes; JSON strings hold text, so invalid UTF-8 is replaced.
        let mut object = serde_json::Map::new();
        object.insert("label".into(), label.to_string().into());
        for (stream, bytes) in logs {
            let text = bytes.map(|b| String::from_utf8_lossy(&b).into_owned());
            object.insert(stream.into(), text.into());
        }
        super::print_json(&object);
        return Ok(Code::Ok);
    }
    for (stream, bytes) in logs {
        let Some(bytes) = bytes else { continue };
        if !args.stdout && !args.stderr {
            println!("==> {stream} of {label} <==");
        }
        crate::out::write_all(&bytes);
    }
    Ok(Code::Ok)
}

fn from_cache(
    ctx: &Context,
    label: &mlbuild_workspace::Label,
    stream: &str,
) -> Result<Option<Vec<u8>>, Failure> {
    let state = ctx
        .store
        .load_workspace_state(&ctx.ws.root.to_string_lossy())?;
    let Some(result) = state
        .get(&label.to_string())
        .and_then(|r| r.result.as_ref())
    else {
        return Ok(None);
    };
    let digest = if stream == "stdout" {
        result.stdout
    } else {
        result.stderr
    };
    Ok(Some(ctx.store.read_blob(&digest)?))
}
