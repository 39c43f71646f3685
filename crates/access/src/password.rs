//! Password hashes: making them (Argon2id, salted, in the PHC string
//! format) and checking a password against one, including the salted
//! SHA-256/SHA-512 hashes RabbitMQ writes into its definitions, so users
//! imported from RabbitMQ can log in (and are re-hashed with Argon2id on
//! their first login).
//!
//! Hashing is deliberately slow (about 20–60 ms of one core): callers run
//! it off the async runtime's worker threads (see [`crate::Access`]).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256, Sha512};

/// `hashing_algorithm` of the hashes this crate makes.
pub const ARGON2ID: &str = "switchyard_argon2id";
/// RabbitMQ's default `hashing_algorithm` (salted SHA-256), accepted on
/// import.
pub const RABBIT_SHA256: &str = "rabbit_password_hashing_sha256";
/// RabbitMQ's salted SHA-512, accepted on import.
pub const RABBIT_SHA512: &str = "rabbit_password_hashing_sha512";

/// Argon2id with one of OWASP's equivalent minimum configurations: 7 MiB,
/// 5 passes, 1 lane (the same strength as 19 MiB and 2 passes, for a
/// third of the memory, which the allocator tends to keep once used).
/// Hashes made with other parameters verify with their own.
fn argon2() -> Argon2<'static> {
    let params = Params::new(7 * 1024, 5, 1, None).expect("valid Argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A fresh salted Argon2id hash of `password`, as a PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
#[must_use]
pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .expect("Argon2 hashing cannot fail with valid parameters and a generated salt")
        .to_string()
}

/// Whether `algorithm` is one [`verify`] understands.
#[must_use]
pub fn known_algorithm(algorithm: &str) -> bool {
    matches!(algorithm, ARGON2ID | RABBIT_SHA256 | RABBIT_SHA512)
}

/// Whether `password` matches `stored`, a hash made with `algorithm`. An
/// empty `stored` hash matches nothing (a user without a password cannot
/// log in with one, as in RabbitMQ).
#[must_use]
pub fn verify(algorithm: &str, stored: &str, password: &str) -> bool {
    if stored.is_empty() {
        return false;
    }
    match algorithm {
        ARGON2ID => PasswordHash::new(stored)
            .is_ok_and(|h| argon2().verify_password(password.as_bytes(), &h).is_ok()),
        RABBIT_SHA256 => rabbit_salted::<Sha256>(stored, password),
        RABBIT_SHA512 => rabbit_salted::<Sha512>(stored, password),
        _ => false,
    }
}

/// RabbitMQ's scheme: base64 of a 4-byte salt followed by
/// `H(salt ++ password)`.
fn rabbit_salted<H: Digest>(stored: &str, password: &str) -> bool {
    let Ok(raw) = STANDARD.decode(stored) else {
        return false;
    };
    if raw.len() != 4 + <H as Digest>::output_size() {
        return false;
    }
    let (salt, expected) = raw.split_at(4);
    let mut h = H::new();
    h.update(salt);
    h.update(password.as_bytes());
    constant_time_eq(&h.finalize(), expected)
}

/// Compares without an early exit, so timing tells nothing about where two
/// digests differ.
#[must_use]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// RabbitMQ's salted SHA-256 hash of `password` with `salt`, for tests of
/// the import path.
#[cfg(test)]
pub(crate) fn rabbit_sha256(salt: [u8; 4], password: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    let mut raw = salt.to_vec();
    raw.extend_from_slice(&h.finalize());
    STANDARD.encode(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_hashes_are_salted_and_verify() {
        let a = hash("s3cret");
        let b = hash("s3cret");
        assert!(a.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{a}");
        assert_ne!(a, b, "two hashes of one password differ by their salt");
        assert!(verify(ARGON2ID, &a, "s3cret"));
        assert!(!verify(ARGON2ID, &a, "s3cret "));
        assert!(!verify(ARGON2ID, &a, ""));
    }

    #[test]
    fn rabbitmq_sha256_hashes_verify() {
        let stored = rabbit_sha256([1, 2, 3, 4], "guest");
        assert!(verify(RABBIT_SHA256, &stored, "guest"));
        assert!(!verify(RABBIT_SHA256, &stored, "Guest"));
        assert!(!verify(RABBIT_SHA512, &stored, "guest"), "wrong length");
    }

    #[test]
    fn a_known_rabbitmq_hash_verifies() {
        // RabbitMQ's documentation example: salt 908D C60A, password
        // "test12".
        let salt = [0x90, 0x8D, 0xC6, 0x0A];
        let stored = rabbit_sha256(salt, "test12");
        assert_eq!(stored, "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR");
        assert!(verify(RABBIT_SHA256, &stored, "test12"));
    }

    #[test]
    fn garbage_and_empty_hashes_match_nothing() {
        for alg in [ARGON2ID, RABBIT_SHA256, RABBIT_SHA512, "md5"] {
            assert!(!verify(alg, "", ""));
            assert!(!verify(alg, "not a hash", "not a hash"));
        }
        assert!(!known_algorithm("rabbit_password_hashing_md5"));
    }
}
