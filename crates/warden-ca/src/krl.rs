//! OpenSSH Key Revocation Lists (PROTOCOL.krl), for plain sshd servers'
//! `RevokedKeys`: certificates of a user CA revoked by key id (Warden puts
//! the user name there) and by serial.

use ssh_key::PublicKey;

const KRL_MAGIC: u64 = 0x5353_484b_524c_0a00;
const KRL_FORMAT_VERSION: u32 = 1;
const SECTION_CERTIFICATES: u8 = 1;
const CERT_SERIAL_LIST: u8 = 0x20;
const CERT_KEY_ID: u8 = 0x23;

fn put_string(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// What to revoke.
#[derive(Clone, Debug, Default)]
pub struct Revocations {
    /// Certificate key ids (user names) to revoke.
    pub key_ids: Vec<String>,
    /// Certificate serials to revoke.
    pub serials: Vec<u64>,
}

/// A KRL revoking `r` for certificates signed by each of `ca_keys`.
pub fn build(
    ca_keys: &[PublicKey],
    r: &Revocations,
    version: u64,
    now: u64,
    comment: &str,
) -> crate::Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(&KRL_MAGIC.to_be_bytes());
    out.extend_from_slice(&KRL_FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&now.to_be_bytes());
    out.extend_from_slice(&0u64.to_be_bytes()); // flags
    put_string(&mut out, b""); // reserved
    put_string(&mut out, comment.as_bytes());
    let mut key_ids: Vec<&String> = r.key_ids.iter().collect();
    key_ids.sort();
    key_ids.dedup();
    let mut serials = r.serials.clone();
    serials.sort_unstable();
    serials.dedup();
    for ca in ca_keys {
        // The public key blob in wire format, as in authorized_keys.
        let blob = ca
            .to_bytes()
            .map_err(|e| crate::CaError::Ssh(e.to_string()))?;
        let mut section = Vec::new();
        put_string(&mut section, &blob);
        put_string(&mut section, b""); // reserved
        if !serials.is_empty() {
            let mut list = Vec::new();
            for s in &serials {
                list.extend_from_slice(&s.to_be_bytes());
            }
            section.push(CERT_SERIAL_LIST);
            put_string(&mut section, &list);
        }
        if !key_ids.is_empty() {
            let mut ids = Vec::new();
            for id in &key_ids {
                put_string(&mut ids, id.as_bytes());
            }
            section.push(CERT_KEY_ID);
            put_string(&mut section, &ids);
        }
        out.push(SECTION_CERTIFICATES);
        put_string(&mut out, &section);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_ssh_keygen_layout() {
        // The CA key and KRL below come from `ssh-keygen -k -s ca.pub` with
        // the spec "id: alice" (OpenSSH 9.2); only the date differs.
        let ca = PublicKey::from_openssh(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINwdb1rtP7ZaUkWkI1OU7CwIpr5H5YbG4joLz2C0R9J0 ca",
        )
        .unwrap();
        let krl = build(
            &[ca],
            &Revocations {
                key_ids: vec!["alice".into()],
                serials: vec![],
            },
            0,
            0x6b01_b4a1,
            "",
        )
        .unwrap();
        let expected = "5353484b524c0a0000000001000000000000000000000000\
6b01b4a1000000000000000000000000000000000100000049000000330000000b7373682d\
6564323535313900000020dc1d6f5aed3fb65a5245a4235394ec2c08a6be47e586c6e23a0b\
cf60b447d27400000000230000000900000005616c696365";
        assert_eq!(data_encoding::HEXLOWER.encode(&krl), expected);
    }
}
