//! `mlbuild verify <artifact> --key <public key>`: check a signed artifact's signature and
//! every file.
//!
//! An artifact is a directory holding `model.sig` (the OpenSSF `model_signing` format), or
//! a `.tar.zst` of one, which is unpacked with the hostile-archive-safe extractor into a
//! temporary directory first. Every problem is printed on its own line naming the file, so
//! a tampered, missing or extra file is found in one run. Exit codes: 0 verified, 1
//! verification failed (including a truncated or hostile archive), 2 bad input (unreadable
//! key, not an artifact). Main type: [`VerifyArgs`].

use std::path::{Path, PathBuf};

use clap::Args;
use mlbuild_rules::archive::{self, ArchiveError, ExtractLimits};
use mlbuild_sign::model::{self, FileProblem, VerifyError, SIGNATURE_FILE};
use mlbuild_sign::PublicKey;
use serde::Serialize;

use crate::cli::Cli;
use crate::exit::{CmdResult, Code, Failure};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The artifact: a directory holding `model.sig`, or a `.tar.zst` of one.
    #[arg(value_name = "ARTIFACT")]
    pub artifact: PathBuf,
    /// The signer's public key (PEM, from `mlbuild key generate` or `openssl ec -pubout`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The signature file (default: `model.sig` inside the artifact).
    #[arg(long, value_name = "FILE")]
    pub signature: Option<PathBuf>,
}

/// The `--json` result.
#[derive(Debug, Serialize)]
struct Outcome {
    artifact: PathBuf,
    verified: bool,
    key_id: String,
    /// Signed files with their SHA-256, when verified.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<model::ModelResource>,
    /// Files that do not match the signature.
    problems: Vec<FileProblem>,
    /// Why the signature or archive itself was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn run(cli: &Cli, args: &VerifyArgs) -> CmdResult {
    let key = PublicKey::load(&resolve(cli, &args.key)).map_err(Failure::bad_input)?;
    let signature = args.signature.as_ref().map(|p| resolve(cli, p));
    let checked = check(
        &resolve(cli, &args.artifact),
        &args.artifact,
        &key,
        signature.as_deref().zip(args.signature.as_deref()),
    )?;
    Ok(report(cli, args, &key, checked.result))
}

/// An artifact checked against its signature.
pub(crate) struct Checked {
    /// The artifact's files: the directory given, or where the archive was unpacked
    /// (`None` when the archive itself was rejected).
    pub dir: Option<PathBuf>,
    pub result: Result<model::VerifiedModel, Rejection>,
    /// Keeps an unpacked archive's temporary directory alive as long as `dir` is used.
    _unpacked: Option<tempfile::TempDir>,
}

/// Verifies `artifact` (a directory holding `model.sig`, or a `.tar.zst` of one) with
/// `key`; `shown` is the path as typed, for messages. `signature` is (path, as typed) of
/// a signature kept outside the artifact. A damaged or hostile archive and files that do
/// not match are verdicts in [`Checked::result`]; an unreadable path is bad input.
pub(crate) fn check(
    artifact: &Path,
    shown: &Path,
    key: &PublicKey,
    signature: Option<(&Path, &Path)>,
) -> Result<Checked, Failure> {
    let meta = artifact.metadata().map_err(|e| {
        Failure::bad_input(miette::miette!("cannot read `{}`: {e}", shown.display()))
    })?;

    // For an archive, `unpacked` keeps the temporary directory alive until we are done.
    let (dir, unpacked) = if meta.is_dir() {
        (artifact.to_owned(), None)
    } else if is_tar_zst(artifact) {
        match unpack(artifact) {
            Ok(tmp) => (tmp.path().to_owned(), Some(tmp)),
            Err(Unpack::BadInput(report)) => return Err(Failure::bad_input(report)),
            Err(Unpack::Rejected(error)) => {
                let message = format!("`{}`: {error}", shown.display());
                return Ok(Checked {
                    dir: None,
                    result: Err(Rejection::Whole(message)),
                    _unpacked: None,
                });
            }
        }
    } else {
        return Err(Failure::bad_input(miette::miette!(
            help = "pass the artifact directory (holding `model.sig`) or its `.tar.zst`",
            "`{}` is not an artifact",
            shown.display()
        )));
    };

    let signature_path = match signature {
        Some((path, _)) => path.to_owned(),
        None => dir.join(SIGNATURE_FILE),
    };
    if !signature_path.is_file() {
        return Err(Failure::bad_input(match signature {
            Some((_, typed)) => miette::miette!("signature `{}` does not exist", typed.display()),
            None => miette::miette!(
                help = "sign it (a `package` target does), or pass `--signature`",
                "`{}` holds no `{SIGNATURE_FILE}`: not a signed artifact",
                shown.display()
            ),
        }));
    }

    let result = match model::verify_dir(&dir, &signature_path, key) {
        Ok(verified) => Ok(verified),
        Err(VerifyError::Files { problems, .. }) => Err(Rejection::Files(problems)),
        Err(VerifyError::Signature { source, .. }) => {
            // Name the signature as the user can find it: an archive's is one of its
            // members, not a path on disk.
            let name = match signature {
                Some((_, typed)) => format!("`{}`", typed.display()),
                None if unpacked.is_some() => {
                    format!("`{}` member `{SIGNATURE_FILE}`", shown.display())
                }
                None => format!("`{}`", shown.join(SIGNATURE_FILE).display()),
            };
            Err(Rejection::Whole(format!("{name}: {source}")))
        }
    };
    Ok(Checked {
        dir: Some(dir),
        result,
        _unpacked: unpacked,
    })
}

/// Why an artifact failed verification.
pub(crate) enum Rejection {
    /// The signature or archive as a whole.
    Whole(String),
    /// Individual files.
    Files(Vec<FileProblem>),
}

fn report(
    cli: &Cli,
    args: &VerifyArgs,
    key: &PublicKey,
    result: Result<model::VerifiedModel, Rejection>,
) -> Code {
    let code = if result.is_ok() {
        Code::Ok
    } else {
        Code::BuildFailed
    };
    let shown_artifact = args.artifact.display();
    if cli.json {
        let mut outcome = Outcome {
            artifact: args.artifact.clone(),
            verified: result.is_ok(),
            key_id: key.key_id(),
            files: Vec::new(),
            problems: Vec::new(),
            error: None,
        };
        match result {
            Ok(verified) => outcome.files = verified.files,
            Err(Rejection::Files(problems)) => outcome.problems = problems,
            Err(Rejection::Whole(message)) => outcome.error = Some(message),
        }
        super::print_json(&outcome);
        return code;
    }
    match result {
        Ok(verified) => println!(
            "verified `{shown_artifact}`: {} file{} signed by key {}",
            verified.files.len(),
            if verified.files.len() == 1 { "" } else { "s" },
            verified.key_id
        ),
        Err(Rejection::Files(problems)) => {
            for problem in &problems {
                println!("{problem}");
            }
            eprintln!(
                "error: `{shown_artifact}` failed verification: {} file{} not as signed",
                problems.len(),
                if problems.len() == 1 { " is" } else { "s are" }
            );
        }
        Err(Rejection::Whole(message)) => {
            println!("{message}");
            eprintln!("error: `{shown_artifact}` failed verification");
        }
    }
    code
}

enum Unpack {
    /// The archive could not be read at all, or unpacking failed locally.
    BadInput(miette::Report),
    /// The archive is damaged or hostile: the artifact fails verification.
    Rejected(ArchiveError),
}

fn is_tar_zst(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".tar.zst") || n.ends_with(".tzst"))
}

fn unpack(archive_path: &Path) -> Result<tempfile::TempDir, Unpack> {
    let tmp = tempfile::Builder::new()
        .prefix("mlbuild-verify-")
        .tempdir()
        .map_err(|e| {
            Unpack::BadInput(miette::miette!("cannot create a temporary directory: {e}"))
        })?;
    let dest = cap_std::fs::Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority())
        .map_err(|e| Unpack::BadInput(miette::miette!("cannot open a temporary directory: {e}")))?;
    match archive::extract(archive_path, &dest, &ExtractLimits::default()) {
        Ok(_) => Ok(tmp),
        Err(e @ (ArchiveError::Read { .. } | ArchiveError::Extract { .. })) => {
            Err(Unpack::BadInput(miette::Report::new(e)))
        }
        Err(e) => Err(Unpack::Rejected(e)),
    }
}

/// A path from the command line: relative to `-C DIR` when given (as `git -C` does), else
/// as typed, so messages show the path the user wrote.
pub(crate) fn resolve(cli: &Cli, path: &Path) -> PathBuf {
    match &cli.directory {
        Some(dir) => dir.join(path),
        None => path.to_owned(),
    }
}
