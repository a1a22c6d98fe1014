//! `mlbuild pull oci://HOST/REPO[:TAG] --key PUB DIR`: fetch a signed artifact from an
//! OCI registry and write it only once its signature verifies.
//!
//! The work (staging, digests, signature, the final rename) is `mlbuild_oci::pull`; this
//! file reads the key and renders. Exit codes: 0 pulled and verified, 1 the registry
//! failed or the artifact did not verify (nothing written), 2 bad input (reference, key,
//! a destination that exists). Main type: [`PullArgs`].

use std::path::PathBuf;

use clap::Args;
use mlbuild_oci::{ClientOptions, PullOptions, Reference, Registry};
use mlbuild_sign::PublicKey;

use crate::cli::Cli;
use crate::exit::{CmdResult, Code, Failure};

#[derive(Debug, Args)]
pub struct PullArgs {
    /// What to pull: `oci://HOST[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST]`.
    #[arg(value_name = "REFERENCE")]
    pub reference: String,
    /// Where to write the artifact's files: a directory that does not exist yet (or is
    /// empty).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The signer's public key (PEM); nothing is written unless the signature verifies
    /// with it.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Also fetch the attached provenance, verify it with the same key, and write it to
    /// FILE.
    #[arg(long, value_name = "FILE")]
    pub provenance: Option<PathBuf>,
    /// Speak plain HTTP to the registry (registries on `localhost`, `127.0.0.0/8` and
    /// `[::1]` always are).
    #[arg(long)]
    pub plain_http: bool,
}

pub fn run(cli: &Cli, args: &PullArgs) -> CmdResult {
    let reference = Reference::parse(&args.reference).map_err(super::push::failure)?;
    let key =
        PublicKey::load(&super::verify::resolve(cli, &args.key)).map_err(Failure::bad_input)?;
    let registry = Registry::new(
        &reference,
        &ClientOptions {
            plain_http: args.plain_http,
            ..ClientOptions::default()
        }
        .with_env_credentials(),
    );
    let dest = super::verify::resolve(cli, &args.dir);
    let options = PullOptions {
        provenance: args
            .provenance
            .as_ref()
            .map(|p| super::verify::resolve(cli, p)),
    };
    let pulled = mlbuild_oci::pull(&registry, &reference, &key, &dest, &options)
        .map_err(super::push::failure)?;
    if cli.json {
        super::print_json(&pulled);
        return Ok(Code::Ok);
    }
    println!(
        "pulled {} to `{}`: {} files verified, signed by key {}",
        pulled.reference,
        args.dir.display(),
        pulled.files,
        pulled.key_id
    );
    if let Some(path) = &args.provenance {
        println!("  provenance verified: `{}`", path.display());
    }
    Ok(Code::Ok)
}
