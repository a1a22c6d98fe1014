//! Loading whole temp workspaces: discovery, defaults, queries, srcs and diagnostics.

use std::fs;
use std::path::Path;

use mlbuild_workspace::{render_plain, ErrorKind, Label, Workspace, WorkspaceError};

fn write(root: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
}

fn ws(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Workspace, WorkspaceError>) {
    let dir = tempfile::tempdir().unwrap();
    if !files.iter().any(|(p, _)| *p == "MLBUILD.toml") {
        write(dir.path(), &[("MLBUILD.toml", "")]);
    }
    write(dir.path(), files);
    let loaded = Workspace::load(dir.path());
    (dir, loaded)
}

fn l(s: &str) -> Label {
    Label::parse(s, "").unwrap()
}

/// Render and check the parts every located diagnostic must show.
fn rendered(err: &WorkspaceError, file: &str, line_col: &str) -> String {
    let text = render_plain(err);
    assert!(
        text.contains(&format!("{file}:{line_col}")),
        "missing {file}:{line_col} in:\n{text}"
    );
    assert!(
        text.contains('┬') || text.contains('▲'),
        "no marker in:\n{text}"
    );
    text
}

const GOOD: &[(&str, &str)] = &[
    (
        "MLBUILD.toml",
        "[workspace]\nname = \"demo\"\nstore = \"store\"\n[resources]\ngpu = 1\ntpu = 2\n",
    ),
    (
        "data/BUILD.toml",
        r#"
[target.raw]
kind = "data"
srcs = ["gen.py"]
cmd = ["python3", "gen.py", "--out", "{out}/raw.csv", "--seed", "{params.seed}"]
outs = ["raw.csv"]
params = { seed = 42 }

[target.files]
kind = "filegroup"
srcs = ["csv/*.csv"]
"#,
    ),
    ("data/gen.py", "print(1)\n"),
    ("data/csv/a.csv", "a\n"),
    ("data/csv/b.csv", "b\n"),
    (
        "models/BUILD.toml",
        r#"
[target.fraud]
kind = "train"
srcs = ["train.py", "**/*.yaml"]
deps = ["//data:raw", ":prep"]
cmd = ["python3", "train.py", "{deps.raw}/raw.csv", "{params.model.lr}", "{params_file}", "{{literal}}"]
outs = ["model.json", "plots/"]
params = { model = { lr = 0.05 } }
env = { OMP_NUM_THREADS = "1" }
secret_env = ["API_TOKEN"]
tools = ["sh"]
resources = { cpu = 2, tpu = 1 }
timeout = 600
network = true

[target.prep]
cmd = ["sh", "-c", "echo"]
"#,
    ),
    ("models/train.py", ""),
    ("models/conf/a.yaml", ""),
    ("models/b.yaml", ""),
    ("models/.hidden/c.yaml", ""),
    ("models/.d.yaml", ""),
    ("models/mlbuild-out/d.yaml", ""),
    ("models/sub/BUILD.toml", "[target.sub]\ncmd = [\"true\"]\n"),
    ("models/sub/e.yaml", ""),
    ("models/nested_ws/MLBUILD.toml", ""),
    (
        "models/nested_ws/BUILD.toml",
        "[target.x]\ncmd = [\"true\"]\n",
    ),
    ("models/nested_ws/f.yaml", ""),
    ("node_modules/BUILD.toml", "[target.nm]\ncmd = [\"true\"]\n"),
    (".git/BUILD.toml", "garbage ["),
    ("BUILD.toml", "[target.root]\ncmd = [\"true\"]\n"),
];

#[test]
fn loads_a_workspace() {
    let (dir, w) = ws(GOOD);
    let w = w.unwrap();
    assert_eq!(w.root, dir.path().canonicalize().unwrap());
    assert_eq!(w.config.name.as_deref(), Some("demo"));
    assert_eq!(w.config.store, Some(w.root.join("store")));
    assert_eq!(w.config.capacity["gpu"], 1.0);
    assert_eq!(w.config.capacity["tpu"], 2.0);
    assert!(w.config.capacity["cpu"] >= 1.0);
    let names: Vec<&str> = w.packages.keys().map(String::as_str).collect();
    assert_eq!(names, ["", "data", "models", "models/sub"]);
    assert_eq!(
        w.packages["models"].build_file,
        w.root.join("models/BUILD.toml")
    );

    let labels: Vec<String> = w.targets().map(|t| t.label.to_string()).collect();
    assert_eq!(
        labels,
        [
            "//:root",
            "//data:files",
            "//data:raw",
            "//models:fraud",
            "//models:prep",
            "//models/sub:sub"
        ]
    );
    let fraud = w.target(&l("//models:fraud")).unwrap();
    assert_eq!(fraud.kind, "train");
    assert_eq!(fraud.deps, [l("//data:raw"), l("//models:prep")]);
    assert_eq!(fraud.outs, ["model.json", "plots/"]);
    assert_eq!(fraud.resources["cpu"], 2.0);
    assert_eq!(fraud.timeout, Some(std::time::Duration::from_secs(600)));
    assert!(fraud.network);
    assert_eq!(fraud.env["OMP_NUM_THREADS"], "1");
    assert_eq!(fraud.secret_env, ["API_TOKEN"]);
    let prep = w.target(&l("//models:prep")).unwrap();
    assert_eq!(prep.kind, "command");
    assert_eq!(prep.resources["cpu"], 1.0);
    assert_eq!(prep.timeout, None);
    assert!(!prep.network);
    // Targets of one file share its text instead of copying it.
    assert!(std::sync::Arc::ptr_eq(&fraud.source, &prep.source));

    w.check_deps().unwrap();

    let srcs: Vec<String> = w
        .expand_srcs(fraud)
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect();
    assert_eq!(
        srcs,
        ["models/b.yaml", "models/conf/a.yaml", "models/train.py"]
    );
    let files = w
        .expand_srcs(w.target(&l("//data:files")).unwrap())
        .unwrap();
    assert_eq!(files[0].path, "data/csv/a.csv");
    assert_eq!(files[0].abs, w.root.join("data/csv/a.csv"));
    assert_eq!(files.len(), 2);
}

#[test]
fn discover_walks_up() {
    let (dir, _) = ws(GOOD);
    let root = dir.path().canonicalize().unwrap();
    assert_eq!(
        Workspace::discover(&root.join("models/conf")).unwrap(),
        root
    );
    assert_eq!(Workspace::discover(&root).unwrap(), root);
    // A nested workspace is its own root.
    assert_eq!(
        Workspace::discover(&root.join("models/nested_ws")).unwrap(),
        root.join("models/nested_ws")
    );

    let empty = tempfile::tempdir().unwrap();
    if Workspace::discover(empty.path()).is_err() {
        let e = Workspace::discover(empty.path()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoWorkspace);
        assert!(render_plain(&e).contains("help:"), "{}", render_plain(&e));
    }
    let e = Workspace::load(empty.path()).unwrap_err();
    assert!(render_plain(&e).contains("MLBUILD.toml"));
}

#[test]
fn package_of_dir() {
    let (dir, w) = ws(GOOD);
    let w = w.unwrap();
    let root = dir.path();
    assert_eq!(w.package_of_dir(&root.join("models")), "models");
    assert_eq!(w.package_of_dir(&root.join("models/conf")), "models");
    assert_eq!(w.package_of_dir(&root.join("models/sub")), "models/sub");
    assert_eq!(w.package_of_dir(&root.join("data/csv")), "data");
    assert_eq!(w.package_of_dir(root), "");
    assert_eq!(w.package_of_dir(Path::new("/")), "");
}

#[test]
fn resolve_patterns() {
    let (_d, w) = ws(GOOD);
    let w = w.unwrap();
    let r = |pats: &[&str], cur: &str| {
        w.resolve(&pats.iter().map(|s| s.to_string()).collect::<Vec<_>>(), cur)
    };
    let strs = |v: Vec<Label>| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(strs(r(&["//..."], "").unwrap()).len(), 6);
    assert_eq!(
        strs(r(&["//models/..."], "").unwrap()),
        ["//models:fraud", "//models:prep", "//models/sub:sub"]
    );
    assert_eq!(
        strs(r(&["//models:all"], "").unwrap()),
        ["//models:fraud", "//models:prep"]
    );
    assert_eq!(
        strs(r(&[":prep", "//models:prep", "//data:raw"], "models").unwrap()),
        ["//data:raw", "//models:prep"]
    );
    assert_eq!(
        strs(r(&["//models/sub"], "").unwrap()),
        ["//models/sub:sub"]
    );

    let e = r(&["//models:frud"], "").unwrap_err();
    assert!(
        render_plain(&e).contains("did you mean `//models:fraud`?"),
        "{}",
        render_plain(&e)
    );
    let e = r(&["//model:fraud"], "").unwrap_err();
    assert!(
        render_plain(&e).contains("did you mean `//models:fraud`?"),
        "{}",
        render_plain(&e)
    );
    let e = r(&["//modls/..."], "").unwrap_err();
    assert!(
        render_plain(&e).contains("did you mean `//models/...`?"),
        "{}",
        render_plain(&e)
    );
    assert!(r(&["//nope:all"], "").is_err());
    assert!(r(&["//data/csv/..."], "").is_err());
    assert!(r(&["//bad//label"], "").is_err());
    assert!(r(&[":raw"], "").is_err());
}

/// (files, expected file in the diagnostic, expected line:col, expected text)
type Case = (
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
    &'static str,
);

const LOAD_ERRORS: &[Case] = &[
    (
        &[("m/BUILD.toml", "[target.a\ncmd = [\"x\"]\n")],
        "m/BUILD.toml",
        "1:10",
        "expected",
    ),
    (
        &[("m/BUILD.toml", "[target.a]\ncmd = [\"x\"]\nsrc = [\"a\"]\n")],
        "m/BUILD.toml",
        "3:1",
        "unknown field `src`",
    ),
    (
        &[("m/BUILD.toml", "[target.a]\ncmd = \"x y\"\n")],
        "m/BUILD.toml",
        "2:7",
        "`cmd` in target `a` must be an array, not a string",
    ),
    (
        &[("m/BUILD.toml", "[package]\n")],
        "m/BUILD.toml",
        "1:2",
        "unknown field `package`",
    ),
    (
        &[("MLBUILD.toml", "[workspace]\nnmae = 1\n")],
        "MLBUILD.toml",
        "2:1",
        "unknown field `nmae`",
    ),
    (
        &[(
            "m/BUILD.toml",
            "[target.a]\ncmd = [\"x\"]\ndeps = [\"//m/../x:y\"]\n",
        )],
        "m/BUILD.toml",
        "3:9",
        "invalid label `//m/../x:y`",
    ),
    (
        &[(
            "m/BUILD.toml",
            "[target.a]\nkind = \"trian\"\ncmd = [\"x\"]\n",
        )],
        "m/BUILD.toml",
        "2:8",
        "did you mean `train`?",
    ),
    (
        &[("m/BUILD.toml", "[target.a]\nkind = \"train\"\n")],
        "m/BUILD.toml",
        "1:9",
        "has no `cmd`",
    ),
    (
        &[(
            "m/BUILD.toml",
            "[target.a]\nkind = \"filegroup\"\nsrcs = [\"x\"]\ncmd = [\"x\"]\n",
        )],
        "m/BUILD.toml",
        "4:8",
        "cannot have a `cmd`",
    ),
    (
        &[("m/BUILD.toml", "[target.a]\nkind = \"filegroup\"\n")],
        "m/BUILD.toml",
        "1:9",
        "has no `srcs`",
    ),
    (
        &[("m/BUILD.toml", "[target.\"a b\"]\ncmd = [\"x\"]\n")],
        "m/BUILD.toml",
        "1:9",
        "invalid target name",
    ),
    (
        &[(
            "m/BUILD.toml",
            "[target.a]\ncmd = [\"x\"]\nenv = { PATH = \"/x\" }\n",
        )],
        "m/BUILD.toml",
        "3:9",
        "`PATH` is set by mlbuild",
    ),
    (
        &[(
            "m/BUILD.toml",
            "[target.a]\ncmd = [\"x\"]\nenv = { \"1X\" = \"/x\" }\n",
        )],
        "m/BUILD.toml",
        "3:9",
        "invalid environment variable name",
    ),
    (
        &[(
            "m/BUILD.toml",
            "[target.a]\ncmd = [\"x\"]\nsecret_env = [\"HOME\"]\n",
        )],
        "m/BUILD.toml",
        "3:15",
        "`HOME` is set by mlbuild",
    ),
    (
        &[("m/BUILD.toml", "[target.a]\ncmd = [\"x\"]\ntimeout = 0\n")],
        "m/BUILD.toml",
        "3:11",
        "positive number of seconds",
    ),
    (
        &[("m/BUILD.toml", "[target.a]\ncmd = [\"x\"]\ntimeout = -5\n")],
        "m/BUILD.toml",
        "3:11",
        "positive number of seconds",
    ),
    (
        &[(
            "m/BUILD.toml",
            "[target.a]\ncmd = [\"x\"]\nresources = { cpu = -1 }\n",
        )],
        "m/BUILD.toml",
        "3:21",
        "finite number >= 0",
    ),
    (
        &[(
            "m/BUILD.toml",
            "[target.a]\ncmd = [\"x\"]\nresources = { gpus = 1 }\n",
        )],
        "m/BUILD.toml",
        "3:15",
        "did you mean `gpu`?",
    ),
    (
        &[(
            "m/BUILD.toml",
            "[target.a]\ncmd = [\"x\"]\nouts = [\"../x\"]\n",
        )],
        "m/BUILD.toml",
        "3:9",
        "invalid output path `../x`",
    ),
    (
        &[(
            "m/BUILD.toml",
            "[target.a]\ncmd = [\"x\"]\nouts = [\"/etc/x\"]\n",
        )],
        "m/BUILD.toml",
        "3:9",
        "it is absolute",
    ),
    (
        &[("m/BUILD.toml", "[target.a]\ncmd = [\"x\"]\nouts = [\"\"]\n")],
        "m/BUILD.toml",
        "3:9",
        "it is empty",
    ),
    (
        &[(
            "m/BUILD.toml",
            "[target.a]\ncmd = [\"x\"]\nouts = [\"a//b\"]\n",
        )],
        "m/BUILD.toml",
        "3:9",
        "empty component",
    ),
    (
        &[(
            "m/BUILD.toml",
            "[target.a]\ncmd = [\"x\"]\nouts = [\"a\", \"b\", \"a\"]\n",
        )],
        "m/BUILD.toml",
        "3:19",
        "overlaps output `a`",
    ),
    (
        &[(
            "m/BUILD.toml",
            "[target.a]\ncmd = [\"x\"]\nouts = [\"p/\", \"p/x.png\"]\n",
        )],
        "m/BUILD.toml",
        "3:15",
        "overlaps",
    ),
];

#[test]
fn load_errors_point_at_the_toml() {
    for (files, file, line_col, text) in LOAD_ERRORS {
        let (_d, w) = ws(files);
        let e = match w {
            Err(e) => e,
            Ok(_) => panic!("{files:?} should fail to load"),
        };
        let out = rendered(&e, file, line_col);
        assert!(out.contains(text), "{text:?} not in:\n{out}");
    }
}

const CHECK_ERRORS: &[Case] = &[
    (
        &[("m/BUILD.toml", "[target.fraud]\ncmd = [\"x\"]\n[target.eval]\ncmd = [\"x\"]\ndeps = [\":frud\"]\n")],
        "m/BUILD.toml", "5:9", "did you mean `//m:fraud`?",
    ),
    (
        &[("m/BUILD.toml", "[target.a]\ncmd = [\"x\"]\ndeps = [\"//dta:b\"]\n"), ("data/BUILD.toml", "[target.b]\ncmd = [\"x\"]\n")],
        "m/BUILD.toml", "3:9", "did you mean `//data:b`?",
    ),
    (&[("m/BUILD.toml", "[target.a]\ncmd = [\"x\"]\ndeps = [\":a\"]\n")], "m/BUILD.toml", "3:9", "depends on itself"),
    (
        &[
            ("m/BUILD.toml", "[target.a]\ncmd = [\"x\"]\ndeps = [\"//n:b\", \"//o:b\"]\n"),
            ("n/BUILD.toml", "[target.b]\ncmd = [\"x\"]\n"),
            ("o/BUILD.toml", "[target.b]\ncmd = [\"x\"]\n"),
        ],
        "m/BUILD.toml", "3:18", "have the same name `b`",
    ),
    (&[("m/BUILD.toml", "[target.a]\ncmd = [\"x\", \"--o={outt}\"]\n")], "m/BUILD.toml", "2:18", "unknown placeholder `{outt}`"),
    (&[("m/BUILD.toml", "[target.a]\ncmd = [\"x\", \"{out\"]\n")], "m/BUILD.toml", "2:14", "unclosed `{`"),
    (&[("m/BUILD.toml", "[target.a]\ncmd = [\"x\", \"a}b\"]\n")], "m/BUILD.toml", "2:15", "unmatched `}`"),
    (
        &[("m/BUILD.toml", "[target.a]\ncmd = [\"x\", \"{deps.b}\"]\ndeps = [\":bb\"]\n[target.bb]\ncmd = [\"x\"]\n")],
        "m/BUILD.toml", "2:14", "did you mean `{deps.bb}`?",
    ),
    (
        &[("m/BUILD.toml", "[target.a]\ncmd = [\"x\", \"{params.model.lf}\"]\nparams = { model = { lr = 1 } }\n")],
        "m/BUILD.toml", "2:14", "did you mean `{params.model.lr}`?",
    ),
    (
        &[("m/BUILD.toml", "[target.a]\ncmd = [\"x\", \"{params.seed.x}\"]\nparams = { seed = 1 }\n")],
        "m/BUILD.toml", "2:14", "is not a table",
    ),
];

#[test]
fn check_errors_point_at_the_toml() {
    for (files, file, line_col, text) in CHECK_ERRORS {
        let (_d, w) = ws(files);
        let w = w.unwrap_or_else(|e| panic!("{}", render_plain(&e)));
        let e = w.check_deps().expect_err(files[0].1);
        let out = rendered(&e, file, line_col);
        assert!(out.contains(text), "{text:?} not in:\n{out}");
    }
}

const SRC_ERRORS: &[Case] = &[
    (
        &[
            (
                "m/BUILD.toml",
                "[target.a]\ncmd = [\"x\"]\nsrcs = [\"trian.py\"]\n",
            ),
            ("m/train.py", ""),
        ],
        "m/BUILD.toml",
        "3:9",
        "did you mean `train.py`?",
    ),
    (
        &[(
            "m/BUILD.toml",
            "[target.a]\ncmd = [\"x\"]\nsrcs = [\"../secret\"]\n",
        )],
        "m/BUILD.toml",
        "3:9",
        "`..` is not allowed",
    ),
    (
        &[(
            "m/BUILD.toml",
            "[target.a]\ncmd = [\"x\"]\nsrcs = [\"a/../../b\"]\n",
        )],
        "m/BUILD.toml",
        "3:9",
        "`..` is not allowed",
    ),
    (
        &[(
            "m/BUILD.toml",
            "[target.a]\ncmd = [\"x\"]\nsrcs = [\"/etc/passwd\"]\n",
        )],
        "m/BUILD.toml",
        "3:9",
        "absolute paths are not allowed",
    ),
    (
        &[(
            "m/BUILD.toml",
            "[target.a]\ncmd = [\"x\"]\nsrcs = [\"../**\"]\n",
        )],
        "m/BUILD.toml",
        "3:9",
        "`..` is not allowed",
    ),
    (
        &[
            (
                "m/BUILD.toml",
                "[target.a]\ncmd = [\"x\"]\nsrcs = [\"data\"]\n",
            ),
            ("m/data/x", ""),
        ],
        "m/BUILD.toml",
        "3:9",
        "use a glob like `data/**`",
    ),
    (
        &[
            (
                "m/BUILD.toml",
                "[target.a]\ncmd = [\"x\"]\nsrcs = [\"*.csv\"]\n",
            ),
            ("m/x.txt", ""),
        ],
        "m/BUILD.toml",
        "3:9",
        "glob `*.csv` matches no files",
    ),
    (
        &[
            (
                "m/BUILD.toml",
                "[target.a]\ncmd = [\"x\"]\nsrcs = [\"sub/*.py\"]\n",
            ),
            ("m/sub/BUILD.toml", ""),
            ("m/sub/a.py", ""),
        ],
        "m/BUILD.toml",
        "3:9",
        "matches no files",
    ),
    (
        &[
            (
                "m/BUILD.toml",
                "[target.a]\ncmd = [\"x\"]\nsrcs = [\"sub/a.py\"]\n",
            ),
            ("m/sub/BUILD.toml", ""),
            ("m/sub/a.py", ""),
        ],
        "m/BUILD.toml",
        "3:9",
        "belongs to package `//m/sub`",
    ),
    (
        &[(
            "m/BUILD.toml",
            "[target.a]\ncmd = [\"x\"]\nsrcs = [\"[a\"]\n",
        )],
        "m/BUILD.toml",
        "3:9",
        "invalid glob",
    ),
];

#[test]
fn src_errors_point_at_the_toml() {
    for (files, file, line_col, text) in SRC_ERRORS {
        let (_d, w) = ws(files);
        let w = w.unwrap_or_else(|e| panic!("{}", render_plain(&e)));
        w.check_deps().unwrap();
        let t = w.targets().next().unwrap();
        let e = w.expand_srcs(t).expect_err(files[0].1);
        let out = rendered(&e, file, line_col);
        assert!(out.contains(text), "{text:?} not in:\n{out}");
    }
}

#[cfg(unix)]
#[test]
fn symlinks_escaping_the_workspace_are_refused() {
    use std::os::unix::fs::symlink;
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret.txt"), "s").unwrap();
    fs::create_dir(outside.path().join("dir")).unwrap();
    fs::write(outside.path().join("dir/x.txt"), "s").unwrap();

    let build = "[target.lit]\ncmd = [\"x\"]\nsrcs = [\"link.txt\"]\n\
                 [target.glob]\ncmd = [\"x\"]\nsrcs = [\"*.txt\"]\n\
                 [target.viadir]\ncmd = [\"x\"]\nsrcs = [\"ldir/x.txt\"]\n\
                 [target.inside]\ncmd = [\"x\"]\nsrcs = [\"ok.txt\"]\n";
    let (dir, _) = ws(&[("m/BUILD.toml", build), ("m/real.txt", "r")]);
    let m = dir.path().join("m");
    symlink(outside.path().join("secret.txt"), m.join("link.txt")).unwrap();
    symlink(outside.path().join("dir"), m.join("ldir")).unwrap();
    symlink(m.join("real.txt"), m.join("ok.txt")).unwrap();
    let w = Workspace::load(dir.path()).unwrap();

    for (name, line_col) in [("lit", "3:9"), ("glob", "6:9"), ("viadir", "9:9")] {
        let t = w.target(&l(&format!("//m:{name}"))).unwrap();
        let e = w.expand_srcs(t).expect_err(name);
        let out = rendered(&e, "m/BUILD.toml", line_col);
        assert!(out.contains("outside the workspace"), "{out}");
    }
    // A symlink that stays inside the workspace is fine.
    let t = w.target(&l("//m:inside")).unwrap();
    assert_eq!(w.expand_srcs(t).unwrap()[0].path, "m/ok.txt");
}

/// A symlink is no way around the rule that packages do not read each other's files:
/// `..` is refused in srcs, and so is a link to another package's file, through a
/// literal, a glob, or a directory on the path; so is one into `mlbuild-out/`.
#[cfg(unix)]
#[test]
fn symlinks_into_other_packages_are_refused() {
    use std::os::unix::fs::symlink;
    let build = "[target.lit]\ncmd = [\"x\"]\nsrcs = [\"link.csv\"]\n\
                 [target.glob]\ncmd = [\"x\"]\nsrcs = [\"*.csv\"]\n\
                 [target.viadir]\ncmd = [\"x\"]\nsrcs = [\"ldir/d.csv\"]\n\
                 [target.sub]\ncmd = [\"x\"]\nsrcs = [\"lsub.txt\"]\n\
                 [target.out]\ncmd = [\"x\"]\nsrcs = [\"lout.txt\"]\n\
                 [target.inside]\ncmd = [\"x\"]\nsrcs = [\"own.txt\", \"ldeep/x.txt\"]\n";
    let (dir, _) = ws(&[
        ("m/BUILD.toml", build),
        ("m/real.txt", "r"),
        ("m/deep/x.txt", "x"),
        ("m/sub/BUILD.toml", ""),
        ("m/sub/s.txt", "s"),
        ("data/BUILD.toml", ""),
        ("data/d.csv", "1,2"),
        ("mlbuild-out/m/t/o.txt", "o"),
    ]);
    let root = dir.path();
    let m = root.join("m");
    symlink(root.join("data/d.csv"), m.join("link.csv")).unwrap();
    symlink("../data", m.join("ldir")).unwrap();
    symlink("sub/s.txt", m.join("lsub.txt")).unwrap();
    symlink(root.join("mlbuild-out/m/t/o.txt"), m.join("lout.txt")).unwrap();
    symlink("real.txt", m.join("own.txt")).unwrap();
    symlink("deep", m.join("ldeep")).unwrap();
    let w = Workspace::load(root).unwrap();

    for (name, line_col, text) in [
        (
            "lit",
            "3:9",
            "src `link.csv` is a symlink to `data/d.csv`, a file of package `//data`",
        ),
        (
            "glob",
            "6:9",
            "src `link.csv` is a symlink to `data/d.csv`, a file of package `//data`",
        ),
        (
            "viadir",
            "9:9",
            "src `ldir/d.csv` is a symlink to `data/d.csv`, a file of package `//data`",
        ),
        (
            "sub",
            "12:9",
            "src `lsub.txt` is a symlink to `m/sub/s.txt`, a file of package `//m/sub`",
        ),
        (
            "out",
            "15:9",
            "src `lout.txt` is a symlink to `mlbuild-out/m/t/o.txt`, an output of a build",
        ),
    ] {
        let t = w.target(&l(&format!("//m:{name}"))).unwrap();
        let e = w.expand_srcs(t).expect_err(name);
        let out = rendered(&e, "m/BUILD.toml", line_col);
        assert!(out.contains(text), "{name}: {out}");
        if name != "out" {
            assert!(out.contains("reaches into `//"), "{name}: {out}");
            assert!(
                out.contains("export it with a `filegroup` in `"),
                "{name}: {out}"
            );
        }
    }
    // Links that stay inside the package are fine.
    let t = w.target(&l("//m:inside")).unwrap();
    let paths: Vec<String> = w
        .expand_srcs(t)
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(paths, ["m/ldeep/x.txt", "m/own.txt"]);
}

#[test]
fn never_panics_on_odd_input() {
    for text in [
        "\u{feff}",
        "[target]\n",
        "target = 1\n",
        "[target.a]\ncmd = []\n",
        "[target.a]\ncmd = [\"\"]\n",
        "[target.a]\ncmd = [\"x\", \"\\u00e9{\"]\n",
        "[target.a]\ncmd = [\"\"\"\n{bad}\"\"\"]\n",
        "[target.a]\ncmd = ['{bad}']\n",
        "[target.a]\ncmd = [\"x\"]\ntimeout = 1e300\n",
        "[target.a]\ncmd = [\"x\"]\ntimeout = inf\n",
        "[target.a]\ncmd = [\"x\"]\nresources = { cpu = nan }\n",
        "[target.a]\ncmd = [\"x\"]\nsrcs = [\"\"]\n",
        "[target.a]\ncmd = [\"x\", \"{params.}\"]\n",
        "[[target]]\n",
    ] {
        let (_d, w) = ws(&[("BUILD.toml", text)]);
        let outcome = w.and_then(|w| {
            w.check_deps()?;
            for t in w.targets() {
                w.expand_srcs(t)?;
            }
            Ok(())
        });
        if let Err(e) = outcome {
            let _ = render_plain(&e);
        }
    }
}
