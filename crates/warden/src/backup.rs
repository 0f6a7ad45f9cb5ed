//! `warden admin backup` and `warden admin restore`: the cluster state as
//! one YAML file whose secrets are encrypted to a passphrase, and back.

use crate::admin::Admin;
use anyhow::Context;
use std::path::{Path, PathBuf};
use warden_types::api::{Backup, BackupRequest};
use warden_types::endpoints;
use zeroize::Zeroizing;

/// The largest backup read back from auth.
const MAX_BACKUP: usize = 1 << 30;

/// Where the passphrase comes from.
#[derive(clap::Args)]
pub struct Passphrase {
    /// A file holding the passphrase (its first line) [default: the
    /// WARDEN_BACKUP_PASSPHRASE environment variable].
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

impl Passphrase {
    fn read(&self) -> anyhow::Result<Zeroizing<String>> {
        crate::prompt::secret_from_file_or_env(
            self.passphrase_file.as_deref(),
            "--passphrase-file",
            "WARDEN_BACKUP_PASSPHRASE",
            "a backup's secrets are encrypted to a passphrase: give --passphrase-file FILE or set WARDEN_BACKUP_PASSPHRASE",
        )
    }
}

/// `warden admin restore` options: the stores to fill, as `warden start`
/// names them.
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The backup file.
    file: PathBuf,
    /// The (empty) stores to fill, named as for 'warden start'.
    #[command(flatten)]
    state: crate::start::StateArgs,
    #[command(flatten)]
    passphrase: Passphrase,
}

pub async fn backup(admin: &Admin, output: &Path, passphrase: &Passphrase) -> anyhow::Result<()> {
    let passphrase = passphrase.read()?;
    // Every user's credentials and every document: more than the usual
    // bound on an answer in a large cluster.
    let backup: Backup = admin
        .api
        .call_large(
            &endpoints::BACKUP,
            &BackupRequest {
                passphrase: passphrase.to_string(),
            },
            MAX_BACKUP,
        )
        .await?;
    let created = backup.created_rfc3339();
    let text = format!(
        "# Warden backup of cluster {:?}, {created}. Documents are in the clear;\n# the secrets (CA key encryption key, credentials, connector and webhook\n# secrets, tokens) are encrypted to the passphrase. Restore into an empty\n# backend with: warden admin restore FILE\n{}",
        backup.cluster,
        serde_norway::to_string(&backup)?
    );
    warden_ca::keystore::write_private_file(output, text.as_bytes())
        .with_context(|| format!("cannot write {}", output.display()))?;
    println!(
        "wrote {} ({} documents, secrets encrypted); keep it, and the passphrase, apart",
        output.display(),
        backup.documents.len() + backup.raw.len()
    );
    Ok(())
}

pub async fn restore(data_dir: &Path, a: &RestoreArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read {}", a.file.display()))?;
    let backup: Backup = serde_norway::from_str(&text)
        .with_context(|| format!("{} is not a Warden backup", a.file.display()))?;
    let passphrase = a.passphrase.read()?;
    let stores = a.state.stores(None, None);
    let r = warden_auth::backup::restore(&backup, &passphrase, data_dir, &stores).await?;
    println!(
        "restored cluster {:?}: {} documents; audit event {} marks the restore{}",
        backup.cluster,
        r.documents,
        r.audit_index,
        if r.new_chain {
            " and starts a new chain"
        } else {
            ""
        }
    );
    println!(
        "next: start the auth server(s) on it ('warden start --data-dir {} ...'); nodes reconnect on their own, users log in again",
        data_dir.display()
    );
    Ok(())
}
