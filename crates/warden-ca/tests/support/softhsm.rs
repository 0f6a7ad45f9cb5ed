//! SoftHSM2 tokens for tests (Debian package `softhsm2`, which `.ci/run`
//! installs): a token directory and config of their own per test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's SoftHSM2 PKCS#11 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A fresh SoftHSM2 token directory with one token, `label`.
pub fn softhsm_token(dir: &Path, label: &str, pin: &str) -> PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            pin,
            "--so-pin",
            "000000",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util (Debian package softhsm2) must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    conf
}
