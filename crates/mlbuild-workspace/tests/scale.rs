//! A 10,000-target workspace (100 packages x 100 targets) loads, checks and expands.
//!
//! Not a timed test: it prints durations for a human to read in a release build
//! (`cargo test --release -p mlbuild-workspace --test scale -- --nocapture`).

use std::fmt::Write as _;
use std::time::Instant;

use mlbuild_workspace::Workspace;

#[test]
fn ten_thousand_targets() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("MLBUILD.toml"), "[workspace]\nname = \"scale\"\n").unwrap();
    for p in 0..100 {
        let pkg = root.join(format!("pkg{p:03}"));
        std::fs::create_dir(&pkg).unwrap();
        let mut build = String::new();
        for t in 0..100 {
            let dep = match (p, t) {
                (0, 0) => String::new(),
                (_, 0) => format!("\"//pkg{:03}:t99\"", p - 1),
                _ => format!("\":t{}\"", t - 1),
            };
            writeln!(
                build,
                "[target.t{t}]\nkind = \"transform\"\nsrcs = [\"s{t}.py\"]\ndeps = [{dep}]\n\
                 cmd = [\"python3\", \"s{t}.py\", \"--out\", \"{{out}}/o.txt\"]\nouts = [\"o.txt\"]\n"
            )
            .unwrap();
            std::fs::write(pkg.join(format!("s{t}.py")), "").unwrap();
        }
        std::fs::write(pkg.join("BUILD.toml"), build).unwrap();
    }

    if std::env::var_os("MLBUILD_SCALE_PROFILE").is_some() {
        let text = std::fs::read_to_string(root.join("pkg000/BUILD.toml")).unwrap();
        let t = Instant::now();
        for _ in 0..100 {
            let _: toml::Table = toml::from_str(&text).unwrap();
        }
        println!("toml::Table x100: {:?}", t.elapsed());
        let t = Instant::now();
        for p in 0..100 {
            for i in 0..100 {
                let _ = root.join(format!("pkg{p:03}/s{i}.py")).symlink_metadata();
            }
        }
        println!("10k raw lstat: {:?}", t.elapsed());
        for _ in 0..3 {
            let t = Instant::now();
            let ws = Workspace::load(root).unwrap();
            let a = t.elapsed();
            ws.check_deps().unwrap();
            let b = t.elapsed();
            for target in ws.targets() {
                ws.expand_srcs(target).unwrap();
            }
            println!(
                "warm: load {a:?} check {:?} srcs {:?}",
                b - a,
                t.elapsed() - b
            );
        }
    }
    let start = Instant::now();
    let ws = Workspace::load(root).unwrap();
    let loaded = start.elapsed();
    ws.check_deps().unwrap();
    let checked = start.elapsed();
    let mut files = 0;
    for target in ws.targets() {
        files += ws.expand_srcs(target).unwrap().len();
    }
    let expanded = start.elapsed();
    assert_eq!(ws.targets().count(), 10_000);
    assert_eq!(files, 10_000);
    println!(
        "10k targets: load {loaded:?}, +check_deps {:?}, +expand_srcs {:?}, total {expanded:?}",
        checked - loaded,
        expanded - checked
    );
}
