//! VNC Authentication (security type 2): DES of a 16-byte challenge with the
//! password (at most 8 bytes, each byte's bits mirrored, as every VNC does).

use des::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use des::Des;
use subtle::ConstantTimeEq;

/// A VNC password. Only the first 8 bytes count (the protocol's limit).
/// Debug output never shows it.
#[derive(Clone)]
pub struct VncPassword([u8; 8]);

impl std::fmt::Debug for VncPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VncPassword(..)")
    }
}

impl Drop for VncPassword {
    fn drop(&mut self) {
        self.0 = [0; 8];
    }
}

impl VncPassword {
    pub fn new(password: &[u8]) -> VncPassword {
        let mut key = [0u8; 8];
        for (k, p) in key.iter_mut().zip(password) {
            *k = *p;
        }
        VncPassword(key)
    }
}

/// The response a client holding `password` gives to `challenge`.
pub fn vnc_auth_response(password: &VncPassword, challenge: &[u8; 16]) -> [u8; 16] {
    let mut key = [0u8; 8];
    for (k, p) in key.iter_mut().zip(password.0) {
        *k = p.reverse_bits();
    }
    let cipher = Des::new(GenericArray::from_slice(&key));
    let mut out = *challenge;
    for block in out.chunks_exact_mut(8) {
        cipher.encrypt_block(GenericArray::from_mut_slice(block));
    }
    out
}

impl VncPassword {
    /// Is `response` right for `challenge`? Compared in constant time.
    pub fn verify(&self, challenge: &[u8; 16], response: &[u8; 16]) -> bool {
        let expected = vnc_auth_response(self, challenge);
        expected.ct_eq(response).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        // Interoperability with real viewers is proven by the integration
        // tests (vnc-rs, TigerVNC); here: the right password passes, a wrong
        // one does not, and only the first 8 bytes count.
        let pw = VncPassword::new(b"password");
        let challenge: [u8; 16] = core::array::from_fn(|i| i as u8);
        let r = vnc_auth_response(&pw, &challenge);
        assert!(pw.verify(&challenge, &r));
        assert!(!VncPassword::new(b"passwore").verify(&challenge, &r));
        // Only 8 bytes count.
        assert!(VncPassword::new(b"password-and-more").verify(&challenge, &r));
    }
}
