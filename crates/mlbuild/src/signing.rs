//! The artifact signing key: where it comes from and how `package` actions get it.
//!
//! The key is a secret, so it never enters an action key, a log or the store: its PEM
//! reaches `package` actions as the secret variable `MLBUILD_SIGNING_KEY_PEM` (supplied
//! through `Workspace::secrets`, never the process environment), while only the *public*
//! key id enters their key as the declared variable `MLBUILD_SIGNING_KEY_ID`. So a build
//! with a key never reuses an unsigned artifact cached by a build without one (and vice
//! versa), and changing the key re-signs, and `mlbuild why` says so.

use std::path::PathBuf;

use mlbuild_sign::PrivateKey;
use mlbuild_workspace::Workspace;

use crate::exit::Failure;

/// Names the PEM file of the signing key; overrides `[signing] key` in MLBUILD.toml.
pub const KEY_FILE_ENV: &str = "MLBUILD_SIGNING_KEY";
/// The public key id (hex SHA-256 of the SPKI DER), in the key of every `package` action.
pub const KEY_ID_ENV: &str = "MLBUILD_SIGNING_KEY_ID";

/// Where the signing key comes from, if anywhere: the env var, else MLBUILD.toml.
pub fn key_file(ws: &Workspace) -> Option<PathBuf> {
    match std::env::var_os(KEY_FILE_ENV) {
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => ws.config.signing_key.clone(),
    }
}

/// Loads the signing key (when the workspace has `package` targets and a key is
/// configured) and hands it to every `package` target.
pub fn configure(ws: &mut Workspace) -> Result<(), Failure> {
    let has_packages = ws.targets().any(|t| t.kind == "package");
    let Some(path) = key_file(ws).filter(|_| has_packages) else {
        return Ok(());
    };
    let pem = std::fs::read_to_string(&path).map_err(|e| {
        Failure::bad_input(miette::miette!(
            help = format!("set `{KEY_FILE_ENV}` or `[signing] key` to an ECDSA P-256 PEM file, e.g. one from `mlbuild key generate`"),
            "cannot read the signing key `{}`: {e}",
            path.display()
        ))
    })?;
    let key = PrivateKey::from_pem(&pem).map_err(|e| {
        Failure::bad_input(miette::miette!(
            help = "signing keys are ECDSA P-256 private keys in PEM (PKCS#8 or SEC1), as `mlbuild key generate` or `openssl ecparam -name prime256v1 -genkey` write them",
            "`{}` is not a usable signing key: {e}",
            path.display()
        ))
    })?;
    let key_id = key.public_key().key_id();
    for package in ws.packages.values_mut() {
        for target in package.targets.values_mut().filter(|t| t.kind == "package") {
            target.env.insert(KEY_ID_ENV.to_owned(), key_id.clone());
            if !target
                .secret_env
                .iter()
                .any(|n| n == mlbuild_rules::package::SIGNING_KEY_ENV)
            {
                target
                    .secret_env
                    .push(mlbuild_rules::package::SIGNING_KEY_ENV.to_owned());
            }
        }
    }
    ws.secrets
        .insert(mlbuild_rules::package::SIGNING_KEY_ENV.to_owned(), pem);
    Ok(())
}

/// The signing key [`configure`] accepted, if any.
pub fn loaded_key(ws: &Workspace) -> Option<PrivateKey> {
    let pem = ws.secrets.get(mlbuild_rules::package::SIGNING_KEY_ENV)?;
    PrivateKey::from_pem(pem).ok()
}
