//! `mlbuild key generate`: create the ECDSA P-256 key pair that signs artifacts,
//! provenance and remote-cache entries.
//!
//! Keys are plain PEM in the formats openssl writes (PKCS#8 private key, SubjectPublicKeyInfo
//! public key), so the same files work with `openssl`, the OpenSSF `model_signing` tool and
//! mlbuild. The private key is created with mode 0600 and never overwrites a file unless
//! `--force` is given. Main type: [`KeyArgs`].

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use mlbuild_sign::PrivateKey;

use crate::cli::Cli;
use crate::exit::{CmdResult, Code, Failure};

#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate an ECDSA P-256 key pair as PEM files (what openssl and model_signing read).
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Where to write the private key (PKCS#8 PEM, created with mode 0600). Keep it secret.
    #[arg(long, value_name = "FILE")]
    pub private_key: PathBuf,
    /// Where to write the public key (PEM); default: the private key's path with the
    /// extension `.pub`.
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

pub fn run(cli: &Cli, args: &KeyArgs) -> CmdResult {
    match &args.command {
        KeyCommand::Generate(args) => generate(cli, args),
    }
}

fn generate(cli: &Cli, args: &GenerateArgs) -> CmdResult {
    let private_shown = args.private_key.clone();
    let public_shown = args
        .public_key
        .clone()
        .unwrap_or_else(|| args.private_key.with_extension("pub"));
    let private_path = super::verify::resolve(cli, &private_shown);
    let public_path = super::verify::resolve(cli, &public_shown);
    if private_path == public_path {
        return Err(Failure::bad_input(miette::miette!(
            help = "pass `--public-key` with another file name",
            "the private and public key would both be written to `{}`",
            private_shown.display()
        )));
    }
    // Check both before writing either, so a refusal leaves nothing half done.
    if !args.force {
        for (path, shown) in [
            (&private_path, &private_shown),
            (&public_path, &public_shown),
        ] {
            if path.symlink_metadata().is_ok() {
                return Err(Failure::bad_input(miette::miette!(
                    help = "pass `--force` to replace it",
                    "`{}` already exists",
                    shown.display()
                )));
            }
        }
    }

    let key = PrivateKey::generate();
    let public = key.public_key();
    write_new(
        &private_path,
        &private_shown,
        key.to_pem().as_bytes(),
        0o600,
        args.force,
    )?;
    write_new(
        &public_path,
        &public_shown,
        public.to_pem().as_bytes(),
        0o644,
        args.force,
    )?;

    if cli.json {
        super::print_json(&serde_json::json!({
            "private_key": private_shown,
            "public_key": public_shown,
            "key_id": public.key_id(),
        }));
    } else {
        println!(
            "wrote private key `{}` (mode 0600) and public key `{}`",
            private_shown.display(),
            public_shown.display()
        );
        println!("key id: {}", public.key_id());
    }
    Ok(Code::Ok)
}

/// Creates `path` (and its missing parent directories) with `mode` from the start (a private key is never readable by others,
/// not even briefly). With `force`, an existing file is removed first rather than
/// truncated, so its old permissions do not carry over.
fn write_new(
    path: &Path,
    shown: &Path,
    bytes: &[u8],
    mode: u32,
    force: bool,
) -> Result<(), Failure> {
    let fail = |e: std::io::Error| {
        Failure::bad_input(miette::miette!("cannot write `{}`: {e}", shown.display()))
    };
    // `--public-key approvers/alice.pub` in a fresh checkout: the directory is part of
    // where the user asked the key to go.
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(fail)?;
    }
    if force {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(e)),
        }
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)
}
