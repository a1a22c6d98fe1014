//! The parse cache (`Workspace::load_cached`): a hit returns exactly what parsing returns,
//! and every input that can change the result turns it into a miss.

use std::fs;
use std::path::{Path, PathBuf};

use mlbuild_workspace::{prune_parse_cache, CacheUse, ParamOverride, Workspace};

fn write(root: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
}

/// A workspace using every kind of value the cache stores: params of each TOML type
/// (datetimes, nested tables, arrays, floats), a params file, a sweep with a selection,
/// gates with a baseline, a built-in kind, env, resources and a timeout.
fn example(root: &Path) {
    write(
        root,
        &[
            (
                "MLBUILD.toml",
                "[workspace]\nparams = \"params.toml\"\n[resources]\ngpu = 1\n",
            ),
            ("params.toml", "[train]\nlr = 0.1\nepochs = 3\n"),
            ("data/raw.csv", "a,b\n1,2\n"),
            ("data/schema.toml", "[columns.a]\ntype = \"int\"\n"),
            (
                "data/BUILD.toml",
                r#"
[target.raw]
kind = "filegroup"
srcs = ["raw.csv"]

[target.check]
kind = "validate"
data = "raw.csv"
schema = "schema.toml"
"#,
            ),
            ("models/train.py", "print(1)\n"),
            (
                "models/BUILD.toml",
                r#"
[target.fit]
kind = "train"
srcs = ["train.py"]
deps = ["//data:raw"]
cmd = ["python3", "train.py", "{deps.raw}", "{out}", "{params.train.lr}"]
outs = ["model.bin", "metrics.json"]
param_keys = ["train.lr"]
params = { when = 1979-05-27T07:32:00Z, nested = { list = [1, 2.5, "x", true] }, neg = -4 }
sweep = { "train.l2" = [0.0, 0.01], seed = [1, 2] }
select = { metric = "f1", goal = "max", file = "metrics.json" }
env = { MODE = "fast" }
resources = { gpu = 1 }
timeout = 300
metrics = ["metrics.json"]
gates = ["f1 >= 0.5", "f1 >= baseline.f1 - 0.01"]
baseline = "build:prod"
"#,
            ),
        ],
    );
}

fn load(root: &Path, cache: &Path) -> (Workspace, CacheUse) {
    load_with(root, cache, &[])
}

fn load_with(root: &Path, cache: &Path, overrides: &[ParamOverride]) -> (Workspace, CacheUse) {
    let dir = cache.to_path_buf();
    Workspace::load_cached(root, overrides, |_| Some(dir)).unwrap()
}

fn entries(cache: &Path) -> Vec<PathBuf> {
    match fs::read_dir(cache) {
        Ok(dir) => dir.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn a_hit_returns_what_parsing_returns() {
    let ws_dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    example(ws_dir.path());
    let parsed = Workspace::load(ws_dir.path()).unwrap();

    let (first, used) = load(ws_dir.path(), cache.path());
    assert_eq!(used, CacheUse::Miss);
    assert_eq!(first, parsed);
    assert_eq!(entries(cache.path()).len(), 1);

    let (second, used) = load(ws_dir.path(), cache.path());
    assert_eq!(used, CacheUse::Hit);
    assert_eq!(second, parsed);
    // Sweep variants, the datetime and the params-file value survived the round trip.
    let fit = second
        .targets()
        .find(|t| t.label.to_string() == "//models:fit[seed=2,train.l2=0.01]")
        .expect("a sweep variant");
    assert_eq!(fit.params["when"].to_string(), "1979-05-27T07:32:00Z");
    assert_eq!(fit.params["train"]["lr"].as_float(), Some(0.1));
    // Sources are shared with the package, as parsing leaves them.
    for package in second.packages.values() {
        for target in package.targets.values() {
            assert!(std::sync::Arc::ptr_eq(&target.source, &package.source));
        }
    }
}

#[test]
fn every_input_that_changes_the_result_is_a_miss() {
    let ws_dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let root = ws_dir.path();
    example(root);
    load(root, cache.path());

    let lr = |ws: &Workspace| {
        ws.targets()
            .find(|t| t.label.name.starts_with("fit["))
            .expect("a sweep variant")
            .params["train"]["lr"]
            .as_float()
    };
    type Change<'a> = Box<dyn Fn() + 'a>;
    let steps: Vec<(&str, Change<'_>)> = vec![
        (
            "a BUILD.toml edit",
            Box::new(|| {
                let path = root.join("data/BUILD.toml");
                let text = fs::read_to_string(&path).unwrap();
                fs::write(path, text + "\n[target.extra]\ncmd = [\"true\"]\n").unwrap();
            }),
        ),
        (
            "a params file edit",
            Box::new(|| write(root, &[("params.toml", "[train]\nlr = 0.2\nepochs = 3\n")])),
        ),
        (
            "a new package",
            Box::new(|| {
                write(
                    root,
                    &[("new/BUILD.toml", "[target.n]\ncmd = [\"true\"]\n")],
                )
            }),
        ),
        (
            "an MLBUILD.toml edit",
            Box::new(|| {
                write(
                    root,
                    &[(
                        "MLBUILD.toml",
                        "[workspace]\nparams = \"params.toml\"\n[resources]\ngpu = 2\n",
                    )],
                )
            }),
        ),
        (
            "a removed package",
            Box::new(|| fs::remove_file(root.join("new/BUILD.toml")).unwrap()),
        ),
    ];
    for (what, change) in steps {
        change();
        let (cached, used) = load(root, cache.path());
        assert_eq!(used, CacheUse::Miss, "{what}");
        assert_eq!(cached, Workspace::load(root).unwrap(), "{what}");
        let (again, used) = load(root, cache.path());
        assert_eq!(used, CacheUse::Hit, "{what}, loaded again");
        assert_eq!(again, cached, "{what}, loaded again");
    }
    assert_eq!(lr(&Workspace::load(root).unwrap()), Some(0.2));
    assert!(Workspace::load(root)
        .unwrap()
        .targets()
        .any(|t| t.label.to_string() == "//data:extra"));
    assert_eq!(entries(cache.path()).len(), 1, "one entry per workspace");

    // `--set` overrides are part of the key.
    let set = [ParamOverride::parse("train.lr=0.3").unwrap()];
    let (overridden, used) = load_with(root, cache.path(), &set);
    assert_eq!(used, CacheUse::Miss);
    assert_eq!(lr(&overridden), Some(0.3));
    assert_eq!(load_with(root, cache.path(), &set).1, CacheUse::Hit);
    let (plain, used) = load(root, cache.path());
    assert_eq!(used, CacheUse::Miss);
    assert_eq!(lr(&plain), Some(0.2));
}

#[test]
fn a_damaged_entry_is_a_miss_and_is_rewritten() {
    let ws_dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    example(ws_dir.path());
    let parsed = Workspace::load(ws_dir.path()).unwrap();
    load(ws_dir.path(), cache.path());
    let entry = entries(cache.path()).remove(0);
    let good = fs::read(&entry).unwrap();

    let mut flipped = good.clone();
    let last = flipped.len() - 10;
    flipped[last] ^= 0x40;
    let damaged: [(&str, Vec<u8>); 4] = [
        ("a flipped payload byte", flipped),
        ("a truncated entry", good[..good.len() / 2].to_vec()),
        (
            "another format",
            [b"MLBPRS99".as_slice(), &good[8..]].concat(),
        ),
        ("garbage", b"not a cache entry".to_vec()),
    ];
    for (what, bytes) in damaged {
        fs::write(&entry, &bytes).unwrap();
        let (ws, used) = load(ws_dir.path(), cache.path());
        assert_eq!(used, CacheUse::Miss, "{what}");
        assert_eq!(ws, parsed, "{what}");
        assert_eq!(fs::read(&entry).unwrap(), good, "{what}: rewritten");
    }
}

#[test]
fn errors_are_not_cached_and_an_unwritable_cache_only_costs_a_parse() {
    let ws_dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let root = ws_dir.path();
    write(
        root,
        &[
            ("MLBUILD.toml", ""),
            ("BUILD.toml", "[target.a]\ncmd = [\"true\"]\nbogus = 1\n"),
        ],
    );
    let dir = cache.path().to_path_buf();
    for _ in 0..2 {
        let d = dir.clone();
        assert!(Workspace::load_cached(root, &[], |_| Some(d)).is_err());
    }
    assert!(entries(cache.path()).is_empty());

    write(root, &[("BUILD.toml", "[target.a]\ncmd = [\"true\"]\n")]);
    // A cache directory that cannot be created (a file is in the way).
    let blocked = cache.path().join("file");
    fs::write(&blocked, "").unwrap();
    for _ in 0..2 {
        let (ws, used) = load(root, &blocked.join("sub"));
        assert_eq!(used, CacheUse::Miss);
        assert_eq!(ws, Workspace::load(root).unwrap());
    }
    // No cache directory: the cache is off.
    let (_, used) = Workspace::load_cached(root, &[], |_| None).unwrap();
    assert_eq!(used, CacheUse::Off);
}

#[test]
fn pruning_drops_entries_of_workspaces_that_are_gone() {
    let cache = tempfile::tempdir().unwrap();
    let kept = tempfile::tempdir().unwrap();
    let gone = tempfile::tempdir().unwrap();
    for ws in [kept.path(), gone.path()] {
        write(
            ws,
            &[
                ("MLBUILD.toml", ""),
                ("BUILD.toml", "[target.a]\ncmd = [\"true\"]\n"),
            ],
        );
        load(ws, cache.path());
    }
    fs::write(cache.path().join("junk"), "junk").unwrap();
    assert_eq!(entries(cache.path()).len(), 3);
    let gone_root = gone.path().to_path_buf();
    drop(gone);
    assert!(!gone_root.exists());

    assert_eq!(prune_parse_cache(cache.path(), true).unwrap(), 2);
    assert_eq!(entries(cache.path()).len(), 3, "a dry run removes nothing");
    assert_eq!(prune_parse_cache(cache.path(), false).unwrap(), 2);
    assert_eq!(entries(cache.path()).len(), 1);
    assert_eq!(load(kept.path(), cache.path()).1, CacheUse::Hit);
    assert_eq!(
        prune_parse_cache(&cache.path().join("missing"), false).unwrap(),
        0
    );
}
