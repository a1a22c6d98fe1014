//! The real tools the bridge tests talk to: an MLflow tracking server and DVC, from the
//! venv `.ci/run` makes with `tests/e2e/bridges/requirements.txt`.
//!
//! MLflow's server takes about a minute to start on a loaded 2-core machine, so one server
//! serves the whole test binary (each test uses its own experiment); it runs in its own
//! process group, which is killed when the test binary exits, workers included. The venv
//! is `$MLBUILD_BRIDGES_VENV`, else `<repo>/target/bridges-venv`; tests fail, rather than
//! skip, when it is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The venv holding `mlflow` and `dvc`.
pub fn venv() -> PathBuf {
    let dir = match std::env::var_os("MLBUILD_BRIDGES_VENV") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bridges-venv"),
    };
    for tool in ["mlflow", "dvc"] {
        assert!(
            dir.join("bin").join(tool).exists(),
            "`{}` has no `{tool}`: create the bridges venv with `bash .ci/run`, or \
             `python3 -m venv {0} && {0}/bin/pip install -r tests/e2e/bridges/requirements.txt` \
             (or point MLBUILD_BRIDGES_VENV at one)",
            dir.display()
        );
    }
    dir
}

/// `dvc ARGS` in `dir`, which must succeed; the venv's `bin` comes first on `PATH` so the
/// stages' `python3` is the venv's, as a DVC user's would be.
pub fn dvc(dir: &Path, args: &[&str]) -> String {
    let bin = venv().join("bin");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(bin.join("dvc"))
        .args(args)
        .current_dir(dir)
        .env("PATH", path)
        .env("DVC_NO_ANALYTICS", "1")
        .env("DVC_SITE_CACHE_DIR", dir.join(".dvc-site-cache"))
        .output()
        .expect("run dvc");
    assert!(
        out.status.success(),
        "dvc {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The process group and directory of the shared server, for the exit handler.
static SERVER: OnceLock<(i32, PathBuf)> = OnceLock::new();

/// The shared MLflow server's URL, started on first use.
pub fn mlflow_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(start_mlflow)
}

extern "C" fn stop_mlflow() {
    if let Some((pgid, dir)) = SERVER.get() {
        // SAFETY: signals a process group this binary created; no memory is involved.
        unsafe {
            libc::killpg(*pgid, libc::SIGTERM);
        }
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: as above.
        unsafe {
            libc::killpg(*pgid, libc::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_mlflow() -> String {
    use std::os::unix::process::CommandExt;
    let venv = venv();
    let dir = tempfile::Builder::new()
        .prefix("mlbuild-mlflow-")
        .tempdir()
        .unwrap()
        .keep();
    let port = free_port();
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let child = Command::new(venv.join("bin/mlflow"))
        .arg("server")
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
        .arg("--artifacts-destination")
        .arg(dir.join("artifacts"))
        .arg("--serve-artifacts")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--workers", "1"])
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", venv.join("bin").display()),
        )
        .env("HOME", &dir)
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("start mlflow server");
    let pgid = child.id() as i32;
    SERVER.set((pgid, dir.clone())).ok();
    // The exit handler does not run when the test binary is killed (a timeout, Ctrl-C):
    // a watchdog in the server's group then ends the group, itself included. It outlives
    // this process by design, so nothing here waits for it.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {} 2>/dev/null; do sleep 2; done; kill -KILL -- -{pgid}",
            std::process::id()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(pgid)
        .spawn()
        .expect("start the server's watchdog");
    // SAFETY: registers a plain function to run at exit.
    unsafe {
        libc::atexit(stop_mlflow);
    }
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let mut child = child;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "mlflow server exited with {status}: {}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            );
        }
        if ureq::get(&format!("{url}/health"))
            .call()
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "mlflow server did not answer in 5 minutes: {}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    url
}

/// A GET of MLflow's REST API (`/api/2.0/mlflow/ENDPOINT`), which must succeed.
pub fn api_get(endpoint: &str, query: &[(&str, &str)]) -> serde_json::Value {
    let mut req = ureq::get(&format!("{}/api/2.0/mlflow/{endpoint}", mlflow_url()));
    for (k, v) in query {
        req = req.query(*k, *v);
    }
    let body = req
        .call()
        .unwrap_or_else(|e| panic!("GET {endpoint}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&body).unwrap()
}

/// A POST of MLflow's REST API, which must succeed.
pub fn api_post(endpoint: &str, body: &serde_json::Value) -> serde_json::Value {
    let text = ureq::post(&format!("{}/api/2.0/mlflow/{endpoint}", mlflow_url()))
        .header("content-type", "application/json")
        .send(body.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("POST {endpoint}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The bytes of a run's artifact, downloaded through the server's artifact proxy.
pub fn artifact(artifact_uri: &str, path: &str) -> Vec<u8> {
    let rest = artifact_uri
        .strip_prefix("mlflow-artifacts:/")
        .unwrap_or_else(|| panic!("not a proxied artifact URI: {artifact_uri}"));
    let mut resp = ureq::get(&format!(
        "{}/api/2.0/mlflow-artifacts/artifacts/{rest}/{path}",
        mlflow_url()
    ))
    .call()
    .unwrap_or_else(|e| panic!("GET artifact {path}: {e}"));
    resp.body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap()
}
