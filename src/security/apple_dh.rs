//! Apple's Diffie-Hellman authentication (security type 30, "ARD auth"),
//! the type Screen Sharing.app prefers.
//!
//! As described in rfbproto (section "Diffie-Hellman Authentication") and
//! implemented by libvncclient (`HandleARDAuth`) and neatvnc
//! (`src/auth/apple-dh.c`):
//!
//! 1. The server sends its generator (u16), the key length in bytes (u16),
//!    the prime modulus and its public key (key length bytes each,
//!    big-endian).
//! 2. The client sends 128 bytes: a username and a password, 64 bytes
//!    each, NUL-terminated and padded with random bytes, encrypted with
//!    AES-128 in ECB mode under the MD5 of the shared secret (key length
//!    bytes, big-endian, zero-padded on the left); then its own public key
//!    (key length bytes).
//! 3. The server answers with the usual SecurityResult.
//!
//! It protects the password from whoever watches the connection (not from
//! whoever sits in the middle: nothing authenticates the server's key), and
//! nothing after it: pixels, keys and clipboard travel in clear. That is why
//! it is offered off loopback only with `--allow-apple-dh`.
//!
//! The group is RFC 3526's 2048-bit MODP group (group 14, generator 2),
//! as neatvnc uses. The server's private exponent has 256 random bits (RFC
//! 3526 section 8 asks for at least twice the group's ~110-bit strength);
//! exponentiation is constant-time (crypto-bigint's Montgomery ladder with
//! a fixed-width exponent).

use aes::cipher::{BlockCipherDecrypt, KeyInit};
use aes::Aes128;
use crypto_bigint::modular::{FixedMontyForm, FixedMontyParams};
use crypto_bigint::{Odd, U2048, U256};
use md5::{Digest, Md5};
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

/// Bytes of the prime, of each public key and of the shared secret.
pub const KEY_LEN: usize = 256;
/// The generator sent to the client.
pub const GENERATOR: u16 = 2;
/// The encrypted username and password block.
pub const CREDENTIALS_LEN: usize = 128;
/// One field (username or password) of the credentials block, its NUL
/// included: names and passwords have at most 63 bytes.
pub const FIELD_LEN: usize = 64;
/// What the client sends in answer: the credentials, then its public key.
pub const RESPONSE_LEN: usize = CREDENTIALS_LEN + KEY_LEN;

/// RFC 3526 section 3, the 2048-bit MODP group's prime
/// 2^2048 - 2^1984 - 1 + 2^64 * ([2^1918 pi] + 124476).
const PRIME_HEX: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1",
    "29024E088A67CC74020BBEA63B139B22514A08798E3404DD",
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245",
    "E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3D",
    "C2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F",
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D",
    "670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9",
    "DE2BCBF6955817183995497CEA956AE515D2261898FA0510",
    "15728E5A8AACAA68FFFFFFFFFFFFFFFF",
);

const PRIME: U2048 = U2048::from_be_hex(PRIME_HEX);

/// The Montgomery parameters of the prime, computed once.
fn params() -> &'static FixedMontyParams<{ U2048::LIMBS }> {
    static PARAMS: std::sync::OnceLock<FixedMontyParams<{ U2048::LIMBS }>> =
        std::sync::OnceLock::new();
    PARAMS.get_or_init(|| {
        let odd = Odd::new(PRIME).expect("the RFC 3526 prime is odd");
        FixedMontyParams::new_vartime(odd)
    })
}

/// The prime as sent on the wire.
pub fn prime_bytes() -> [u8; KEY_LEN] {
    be_bytes(&PRIME)
}

fn be_bytes(v: &U2048) -> [u8; KEY_LEN] {
    let enc = v.to_be_bytes();
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(enc.as_ref());
    out
}

/// `base ^ exponent mod p`, constant time in `exponent`.
fn modpow(base: &U2048, exponent: &U256) -> U2048 {
    FixedMontyForm::new(base, params()).pow(exponent).retrieve()
}

/// Why a response could not be opened.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AppleDhError {
    /// The client's public key is 0, 1, p-1 or not below p: it would force
    /// a known shared secret.
    #[error("invalid Apple DH public key from the client")]
    BadPublicKey,
}

/// The server's key pair for one connection. The private exponent is
/// zeroed when it is dropped.
pub struct ServerKey {
    private: U256,
    public: [u8; KEY_LEN],
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey(..)")
    }
}

impl Drop for ServerKey {
    fn drop(&mut self) {
        self.private.zeroize();
    }
}

/// What the client proved it knows: the username (bytes before its NUL)
/// and the password (bytes before its NUL, zeroed on drop). A field
/// without a NUL in its 64 bytes is `None`: the client was not
/// following the protocol, or the keys did not agree.
pub struct Credentials {
    pub username: Option<Vec<u8>>,
    pub password: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

fn field(block: &[u8]) -> Option<&[u8]> {
    block.iter().position(|&b| b == 0).map(|n| &block[..n])
}

impl ServerKey {
    /// A key pair from 32 random bytes (the private exponent). An all-zero
    /// exponent (which a real random source never gives) is replaced by 1
    /// so the key is never the identity.
    pub fn generate(mut random: [u8; 32]) -> ServerKey {
        if random == [0u8; 32] {
            random[31] = 1;
        }
        let private = U256::from_be_slice(&random);
        random.zeroize();
        let public = be_bytes(&modpow(&U2048::from(GENERATOR as u64), &private));
        ServerKey { private, public }
    }

    pub fn public(&self) -> &[u8; KEY_LEN] {
        &self.public
    }

    /// The server's message: generator, key length, prime, public key.
    pub fn offer(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&GENERATOR.to_be_bytes());
        out.extend_from_slice(&(KEY_LEN as u16).to_be_bytes());
        out.extend_from_slice(&prime_bytes());
        out.extend_from_slice(&self.public);
    }

    /// The AES key both sides derive: MD5 of the shared secret
    /// (`client_public ^ private mod p`, [`KEY_LEN`] bytes big-endian).
    pub fn shared_key(
        &self,
        client_public: &[u8; KEY_LEN],
    ) -> Result<Zeroizing<[u8; 16]>, AppleDhError> {
        let y = U2048::from_be_slice(client_public);
        let p_minus_1 = PRIME.wrapping_sub(&U2048::ONE);
        // 1 < y < p - 1: 0, 1 and p - 1 give a shared secret the client
        // knows without the exchange (and >= p is not in the group).
        if y <= U2048::ONE || y >= p_minus_1 {
            return Err(AppleDhError::BadPublicKey);
        }
        let mut secret = Zeroizing::new(be_bytes(&modpow(&y, &self.private)));
        let digest = Md5::digest(secret.as_ref());
        secret.zeroize();
        let mut key = Zeroizing::new([0u8; 16]);
        key.copy_from_slice(&digest);
        Ok(key)
    }

    /// Open the client's response ([`RESPONSE_LEN`] bytes: the encrypted
    /// credentials, then the client's public key).
    pub fn open(&self, response: &[u8; RESPONSE_LEN]) -> Result<Credentials, AppleDhError> {
        let (encrypted, public) = response.split_at(CREDENTIALS_LEN);
        let public: &[u8; KEY_LEN] = public.try_into().expect("split at CREDENTIALS_LEN");
        let key = self.shared_key(public)?;
        let cipher = Aes128::new((&*key).into());
        let mut plain = Zeroizing::new([0u8; CREDENTIALS_LEN]);
        plain.copy_from_slice(encrypted);
        for block in plain.chunks_exact_mut(16) {
            cipher.decrypt_block(block.try_into().expect("chunks of 16"));
        }
        let (user, pass) = plain.split_at(FIELD_LEN);
        Ok(Credentials {
            username: field(user).map(<[u8]>::to_vec),
            password: field(pass).map(|p| Zeroizing::new(p.to_vec())),
        })
    }
}

/// A client for unit tests elsewhere in the crate.
#[cfg(test)]
pub(crate) mod test_client {
    use super::*;
    use aes::cipher::BlockCipherEncrypt;

    /// A client as the public description has it (tests/apple_dh.rs has
    /// the one that talks to the real server; libvncclient cross-checks).
    pub(crate) fn client(
        server_public: &[u8; KEY_LEN],
        private: [u8; 32],
        user: &[u8],
        pass: &[u8],
    ) -> [u8; RESPONSE_LEN] {
        let x = U256::from_be_slice(&private);
        let public = be_bytes(&modpow(&U2048::from(2u64), &x));
        let shared = be_bytes(&modpow(&U2048::from_be_slice(server_public), &x));
        let key = Md5::digest(shared);
        let mut block = [0xA5u8; CREDENTIALS_LEN];
        block[..user.len()].copy_from_slice(user);
        block[user.len()] = 0;
        block[FIELD_LEN..FIELD_LEN + pass.len()].copy_from_slice(pass);
        block[FIELD_LEN + pass.len()] = 0;
        let cipher = Aes128::new(&key);
        for b in block.chunks_exact_mut(16) {
            cipher.encrypt_block(b.try_into().unwrap());
        }
        let mut out = [0u8; RESPONSE_LEN];
        out[..CREDENTIALS_LEN].copy_from_slice(&block);
        out[CREDENTIALS_LEN..].copy_from_slice(&public);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::test_client::client;
    use super::*;
    use aes::cipher::BlockCipherEncrypt;

    #[test]
    fn the_prime_is_rfc_3526_group_14() {
        let p = prime_bytes();
        assert_eq!(p.len(), 256);
        // Starts and ends with 64 one bits, as every RFC 3526 prime.
        assert_eq!(&p[..8], &[0xFF; 8]);
        assert_eq!(&p[248..], &[0xFF; 8]);
        // A typo in the hex would not survive Fermat: 3^(p-1) = 1 mod p.
        let p_minus_1 = PRIME.wrapping_sub(&U2048::ONE);
        let pow = |b: u64, e: &U2048| {
            FixedMontyForm::new(&U2048::from(b), params())
                .pow(e)
                .retrieve()
        };
        assert_eq!(pow(3, &p_minus_1), U2048::ONE);
        // 2 generates the subgroup of order q = (p-1)/2 (it is a quadratic
        // residue, p being 7 mod 8): 2^q = 1.
        assert_eq!(PRIME.as_words()[0] & 7, 7);
        assert_eq!(pow(2, &p_minus_1.shr_vartime(1)), U2048::ONE);
    }

    #[test]
    fn round_trip() {
        let t = std::time::Instant::now();
        let server = ServerKey::generate([3u8; 32]);
        let keygen = t.elapsed();
        let r = client(server.public(), [9u8; 32], b"anna", b"s3cret!");
        let t = std::time::Instant::now();
        let c = server.open(&r).unwrap();
        println!(
            "server key pair {keygen:?}, opening a response {:?}",
            t.elapsed()
        );
        assert_eq!(c.username.as_deref(), Some(&b"anna"[..]));
        assert_eq!(c.password.as_deref().map(|p| &p[..]), Some(&b"s3cret!"[..]));
        // Another server key cannot read it.
        let other = ServerKey::generate([4u8; 32]);
        let c = other.open(&r).unwrap();
        assert!(c.password.as_deref().map(|p| &p[..]) != Some(&b"s3cret!"[..]));
    }

    #[test]
    fn degenerate_public_keys_are_refused() {
        let server = ServerKey::generate([3u8; 32]);
        let p = prime_bytes();
        let p_minus_1 = be_bytes(&PRIME.wrapping_sub(&U2048::ONE));
        let mut one = [0u8; KEY_LEN];
        one[KEY_LEN - 1] = 1;
        for bad in [[0u8; KEY_LEN], one, p_minus_1, p, [0xFF; KEY_LEN]] {
            let mut r = [0u8; RESPONSE_LEN];
            r[CREDENTIALS_LEN..].copy_from_slice(&bad);
            assert_eq!(server.open(&r).unwrap_err(), AppleDhError::BadPublicKey);
        }
    }

    #[test]
    fn fields_without_nul_are_none() {
        let server = ServerKey::generate([3u8; 32]);
        let full = [b'x'; 64];
        let r = client(server.public(), [9u8; 32], b"anna", b"pw");
        // Re-encrypt a block whose username field has no NUL.
        let x = U256::from_be_slice(&[9u8; 32]);
        let shared = be_bytes(&modpow(&U2048::from_be_slice(server.public()), &x));
        let cipher = Aes128::new(&Md5::digest(shared));
        let mut block = [0u8; CREDENTIALS_LEN];
        block[..64].copy_from_slice(&full);
        block[64..67].copy_from_slice(b"pw\0");
        for b in block.chunks_exact_mut(16) {
            cipher.encrypt_block(b.try_into().unwrap());
        }
        let mut r2 = r;
        r2[..CREDENTIALS_LEN].copy_from_slice(&block);
        let c = server.open(&r2).unwrap();
        assert!(c.username.is_none());
        assert_eq!(c.password.as_deref().map(|p| &p[..]), Some(&b"pw"[..]));
    }
}
