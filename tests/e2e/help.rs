//! Help text: each subcommand lists its own options, the global ones apart under their
//! own heading, and the environment does not change what is shown as required.

use std::process::Command;

use crate::support::Ws;

/// `mlbuild ARGS` with `MLBUILD_STORE` and `MLBUILD_REMOTE_SIGNING_KEY` set to `env`, or
/// unset: (exit code, stdout, stderr).
fn mlbuild(args: &[&str], env: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlbuild"));
    cmd.args(args).env("NO_COLOR", "1");
    for var in ["MLBUILD_STORE", "MLBUILD_REMOTE_SIGNING_KEY"] {
        match env {
            Some(value) => cmd.env(var, value),
            None => cmd.env_remove(var),
        };
    }
    let out = cmd.output().expect("run mlbuild");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each command lists, under "Global options", the shared options it takes and no other.
#[test]
fn help_of_each_command_is_its_own() {
    const ALL: &[&str] = &["-C <DIR>", "--store", "--json", "--set"];
    for (name, args, shared) in [
        ("help_top", &["--help"][..], ALL),
        ("help_build", &["build", "--help"], ALL),
        (
            "help_verify",
            &["verify", "--help"],
            &["-C <DIR>", "--json"][..],
        ),
        (
            "help_cache_serve",
            &["cache", "serve", "--help"],
            &["--json"],
        ),
        (
            "help_history",
            &["history", "--help"],
            &["-C <DIR>", "--store", "--json"],
        ),
        ("help_completions", &["completions", "--help"], &[]),
    ] {
        let (code, help, _) = mlbuild(args, None);
        assert_eq!(code, 0, "{args:?}");
        let (_, with_env, _) = mlbuild(args, Some("/somewhere/store"));
        assert_eq!(help, with_env, "{args:?}: the environment changed the help");
        insta::assert_snapshot!(name, help);
        let (own, global) = help.split_once("Global options:").unwrap_or((&help, ""));
        let lists = |text: &str, flag: &str| text.lines().any(|l| l.trim().starts_with(flag));
        for flag in ALL {
            assert!(!lists(own, flag), "{args:?}: {flag} among its own options");
            assert_eq!(
                lists(global, flag),
                shared.contains(flag),
                "{args:?}: {flag} listed or not"
            );
        }
    }
}

/// The shared options keep working before the command, as scripts and docs write them,
/// and after it where they apply.
#[test]
fn shared_options_before_or_after_the_command() {
    let ws = Ws::new();
    ws.write("a/BUILD.toml", "[target.x]\ncmd = [\"true\"]\n");
    for args in [&["--json", "history"][..], &["history", "--json"]] {
        let run = ws.run(args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout.trim(), "[]", "{args:?}");
    }
    // Given where it does not apply: refused, before the command as after it.
    for args in [
        &["--set", "a=1", "history"][..],
        &["history", "--set", "a=1"],
    ] {
        let run = ws.run(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
    }
    let run = ws.run(&["--set", "a=1", "history"]);
    assert!(
        run.stderr
            .contains("`--set` does not apply to `mlbuild history`"),
        "{}",
        run.stderr
    );
    let run = ws.run(&["--json", "metrics", "plot", "--out", "x.svg"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("`--json` does not apply to `mlbuild metrics plot`"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_environment_makes_no_option_look_required() {
    for args in [
        &["verify"][..],
        &["build"],
        &["cache", "serve", "--dir", "d"],
    ] {
        let (code, _, without) = mlbuild(args, None);
        assert_eq!(code, 2, "{args:?}");
        let (_, _, with) = mlbuild(args, Some("/somewhere"));
        assert_eq!(without, with, "{args:?}");
        assert!(!with.contains("--store"), "{args:?}: {with}");
        assert!(!with.contains("--remote-signing-key"), "{args:?}: {with}");
    }
    let (_, _, usage) = mlbuild(&["verify"], Some("/somewhere"));
    insta::assert_snapshot!("usage_verify_with_env", usage);
}

/// The variables still count, though clap no longer reads them.
#[test]
fn remote_signing_key_comes_from_the_environment() {
    let ws = Ws::new();
    ws.write("a/BUILD.toml", "[target.x]\ncmd = [\"true\"]\n");
    let missing = ws.dir.path().join("no-such-key.pem");
    let out = ws
        .command(&["build", "//a:x", "--remote", "http://127.0.0.1:9"])
        .env("MLBUILD_REMOTE_SIGNING_KEY", &missing)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot load the remote signing key"),
        "{stderr}"
    );
}
