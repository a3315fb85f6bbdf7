//! The domain signing key: an Ed25519 key pair (openssl) generated the first
//! time the Configuration Database is opened, with the private key sealed at
//! rest ([`crate::db::seal`]). Every IT policy and IT admin command is signed
//! with it; a device keeps the public key from its first policy and rejects
//! anything not signed by it ([`verify`]).

use openssl::pkey::{Id, PKey, Private, Public};
use openssl::sign::{Signer, Verifier};

use crate::db::models::domain_key::{StoredDomainKey, SEAL_CONTEXT};
use crate::db::{Conn, DbError, DbResult, Sealer};

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// The domain's key pair, private half in memory only while signing.
pub struct DomainKey {
    private: PKey<Private>,
    public: Vec<u8>,
}

impl std::fmt::Debug for DomainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainKey")
            .field("public", &hex(&self.public))
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn crypto(e: openssl::error::ErrorStack) -> DbError {
    DbError::Seal(e.into())
}

impl DomainKey {
    /// A fresh key pair, not stored.
    pub fn generate() -> DbResult<DomainKey> {
        let private = PKey::generate_ed25519().map_err(crypto)?;
        let public = private.raw_public_key().map_err(crypto)?;
        Ok(DomainKey { private, public })
    }

    /// The domain key of this Configuration Database, generated and stored
    /// (private key sealed) on first use. If two processes race, both end
    /// with the key stored first.
    pub fn load_or_create(conn: &mut Conn, sealer: &Sealer) -> DbResult<DomainKey> {
        let stored = match StoredDomainKey::find(conn)? {
            Some(stored) => stored,
            None => {
                let fresh = DomainKey::generate()?;
                let raw = zeroizing(fresh.private.raw_private_key().map_err(crypto)?);
                let sealed = sealer.seal(SEAL_CONTEXT, &raw.0)?;
                StoredDomainKey::save_if_absent(conn, &fresh.public, &sealed)?
            }
        };
        DomainKey::unseal(&stored, sealer)
    }

    fn unseal(stored: &StoredDomainKey, sealer: &Sealer) -> DbResult<DomainKey> {
        let raw = zeroizing(sealer.unseal(SEAL_CONTEXT, &stored.sealed_private_key)?);
        let private = PKey::private_key_from_raw_bytes(&raw.0, Id::ED25519).map_err(crypto)?;
        let public = private.raw_public_key().map_err(crypto)?;
        if public != stored.public_key {
            return Err(DbError::Damaged(
                "the stored domain signing key does not match its public key; restore the database and its key file together".into(),
            ));
        }
        Ok(DomainKey { private, public })
    }

    /// The raw public key (32 bytes) a device stores.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// Signs `bytes`.
    pub fn sign(&self, bytes: &[u8]) -> DbResult<Vec<u8>> {
        let mut signer = Signer::new_without_digest(&self.private).map_err(crypto)?;
        signer.sign_oneshot_to_vec(bytes).map_err(crypto)
    }
}

struct Zeroizing(Vec<u8>);

fn zeroizing(bytes: Vec<u8>) -> Zeroizing {
    Zeroizing(bytes)
}

impl Drop for Zeroizing {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

/// Whether `signature` over `bytes` was made by the key whose raw public
/// half is `public_key`. Malformed keys or signatures are simply "no".
pub fn verify(public_key: &[u8], bytes: &[u8], signature: &[u8]) -> bool {
    if signature.len() != SIGNATURE_LEN {
        return false;
    }
    let Ok(key): Result<PKey<Public>, _> = PKey::public_key_from_raw_bytes(public_key, Id::ED25519)
    else {
        return false;
    };
    let Ok(mut verifier) = Verifier::new_without_digest(&key) else {
        return false;
    };
    verifier.verify_oneshot(signature, bytes).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::test_db;

    #[test]
    fn generated_once_and_sealed_at_rest() {
        let (_dir, db) = test_db();
        let sealer = db.sealer();
        db.run_blocking(|conn| {
            // The server makes the key when it starts (`Server::start`);
            // here the first call does.
            let first = DomainKey::load_or_create(conn, sealer)?;
            let stored = StoredDomainKey::find(conn)?.unwrap();
            let again = DomainKey::load_or_create(conn, sealer)?;
            assert_eq!(first.public_key(), again.public_key(), "one key per domain");
            assert_eq!(first.public_key(), stored.public_key.as_slice());
            let rows = StoredDomainKey::count(conn)?;
            assert_eq!(rows, 1);

            let raw = first.private.raw_private_key().unwrap();
            assert!(
                !stored
                    .sealed_private_key
                    .windows(16)
                    .any(|w| w == &raw[..16]),
                "the private key is not stored in clear"
            );
            let other = Sealer::from_key([9u8; 32]);
            assert!(
                DomainKey::load_or_create(conn, &other).is_err(),
                "another master key cannot open it"
            );
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn a_database_with_a_lost_key_file_is_refused_not_rekeyed() {
        let (dir, db) = test_db();
        let path = db.path().to_path_buf();
        db.run_blocking(|conn| DomainKey::load_or_create(conn, db.sealer()))
            .unwrap();
        drop(db);
        std::fs::remove_file(crate::db::key_path(&path)).unwrap();
        let e = crate::db::Database::open_path(&path, 2, 5_000).unwrap_err();
        assert_eq!(e.code(), "DB_KEY_MISSING", "{e}");
        assert!(
            !crate::db::key_path(&path).exists(),
            "no new key replaces the lost one"
        );
        drop(dir);
    }

    #[test]
    fn signatures_verify_only_for_the_signing_key_and_bytes() {
        let key = DomainKey::generate().unwrap();
        let other = DomainKey::generate().unwrap();
        let policy = br#"{"rules":{"MinimumPasswordLength":8}}"#;
        let sig = key.sign(policy).unwrap();
        assert_eq!(sig.len(), SIGNATURE_LEN);
        assert!(verify(key.public_key(), policy, &sig));
        let tampered = br#"{"rules":{"MinimumPasswordLength":4}}"#;
        assert!(!verify(key.public_key(), tampered, &sig));
        assert!(!verify(other.public_key(), policy, &sig));
        let mut flipped = sig.clone();
        flipped[10] ^= 1;
        assert!(!verify(key.public_key(), policy, &flipped));
        assert!(!verify(b"short", policy, &sig));
        assert!(!verify(key.public_key(), policy, &sig[..63]));
        assert!(!format!("{key:?}").contains("private"));
    }
}
