//! `mlbuild completions` and `mlbuild man`: generated from the command definition the
//! parser uses, so each subcommand completes and documents its own options only.

use std::process::Command;

fn mlbuild(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mlbuild"))
        .args(args)
        .env_remove("MLBUILD_STORE")
        .output()
        .expect("run mlbuild");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The options bash completes after `mlbuild PATH...`: the `opts="..."` line of the case
/// clap_complete writes for that subcommand.
fn bash_opts<'a>(script: &'a str, path: &str) -> Vec<&'a str> {
    let case = format!("{path})");
    let start = script
        .lines()
        .position(|l| l.trim() == case)
        .unwrap_or_else(|| panic!("no case `{case}` in the bash script"));
    let line = script
        .lines()
        .skip(start)
        .find(|l| l.trim_start().starts_with("opts=\""))
        .unwrap();
    line.trim()
        .trim_start_matches("opts=\"")
        .trim_end_matches('"')
        .split_whitespace()
        .collect()
}

#[test]
fn completions_generate_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _mlbuild"),
        ("zsh", "#compdef mlbuild"),
        ("fish", "complete -c mlbuild"),
    ] {
        let (code, script, stderr) = mlbuild(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {stderr}");
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("exp") && script.contains("plot"), "{shell}");
    }
    // Each shell's own syntax check accepts the script, where the shell is installed.
    let (_, bash, _) = mlbuild(&["completions", "bash"]);
    let checked = Command::new("bash")
        .args(["-n", "-c", &bash])
        .status()
        .unwrap();
    assert!(checked.success());

    let (code, _, stderr) = mlbuild(&["completions", "tcsh"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid value 'tcsh'"), "{stderr}");
}

#[test]
fn completions_offer_only_the_options_of_each_subcommand() {
    let (_, bash, _) = mlbuild(&["completions", "bash"]);
    let serve = bash_opts(&bash, "mlbuild__subcmd__cache__subcmd__serve");
    assert!(
        serve.contains(&"--listen") && serve.contains(&"--json"),
        "{serve:?}"
    );
    for absent in ["--set", "--store", "-C", "--jobs"] {
        assert!(
            !serve.contains(&absent),
            "cache serve completes {absent}: {serve:?}"
        );
    }
    let build = bash_opts(&bash, "mlbuild__subcmd__build");
    for present in ["--set", "--store", "-C", "--json", "--jobs", "--junit"] {
        assert!(build.contains(&present), "build lacks {present}: {build:?}");
    }
    let verify = bash_opts(&bash, "mlbuild__subcmd__verify");
    assert!(
        verify.contains(&"-C") && !verify.contains(&"--set"),
        "{verify:?}"
    );
}

#[test]
fn man_pages_generate() {
    let (code, page, stderr) = mlbuild(&["man"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(page.contains(".TH mlbuild 1"), "{page}");
    assert!(
        page.contains("mlbuild\\-build(1)") || page.contains("build"),
        "{page}"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let (code, _, stderr) = mlbuild(&["man", "--dir", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let read = |name: &str| {
        std::fs::read_to_string(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    assert!(read("mlbuild.1").contains(".TH mlbuild 1"));
    let build = read("mlbuild-build.1");
    assert!(
        build.contains("\\-\\-junit") && build.contains("\\-\\-set"),
        "{build}"
    );
    let serve = read("mlbuild-cache-serve.1");
    assert!(serve.contains("\\-\\-listen"), "{serve}");
    assert!(
        !serve.contains("\\-\\-set"),
        "cache serve documents --set: {serve}"
    );
    read("mlbuild-exp-show.1");

    // A directory that cannot be made is a clear error.
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let (code, _, stderr) = mlbuild(&["man", "--dir", file.join("sub").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot write man pages into"), "{stderr}");
}
