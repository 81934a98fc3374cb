//! WeChat message crypto (the official "WXBizMsgCrypt" scheme), protocol §3 and §4.
//!
//! Every push WeChat sends to the platform's event URL is AES-256-CBC encrypted with a key derived
//! from the platform's 43-character EncodingAESKey and signed with SHA-1 over the sorted
//! `(token, timestamp, nonce, Encrypt)`. The scheme has three traps that this module handles and
//! its tests pin down with published vectors:
//!
//! - **PKCS#7 with a 32-byte block.** The cipher runs without padding; the padding value `k` is in
//!   `1..=32` and is added and stripped here by hand. A standard (16-byte) unpad rejects about half
//!   of all real pushes.
//! - **Non-canonical base64 keys.** The 43rd character of most real EncodingAESKeys carries
//!   non-zero trailing bits, which the strict `base64` engines reject; the key is decoded with an
//!   engine that allows them.
//! - **The trailing receive id** in the plaintext is always the *component* appid and is checked.
//!
//! The ciphertext is not authenticated by the cipher itself: callers must verify the
//! `msg_signature` (keyed by the secret token) **before** decrypting, which is what
//! [`crate::wechat::events::open_push`] does. That ordering is also why the distinct decryption
//! errors below cannot serve as a padding oracle.

use std::fmt;

use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use base64::{
    Engine as _, alphabet,
    engine::{GeneralPurpose, GeneralPurposeConfig, general_purpose::STANDARD},
};
use sha1::{Digest, Sha1};

use crate::{
    secret::{SecretString, constant_time_eq},
    wechat::ComponentAppId,
};

#[cfg(test)]
mod tests;

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// Length of an EncodingAESKey as configured on the WeChat platform.
const ENCODING_AES_KEY_LEN: usize = 43;
/// Bytes of random prefix in the plaintext.
const RANDOM_LEN: usize = 16;
/// Random prefix plus the big-endian `u32` message length.
const HEADER_LEN: usize = RANDOM_LEN + 4;
/// AES block size: ciphertexts are a multiple of it.
const AES_BLOCK: usize = 16;
/// WeChat's PKCS#7 block size (not the AES block size).
const PAD_BLOCK: usize = 32;

/// Base64 engine for the EncodingAESKey: standard alphabet, but the two leftover bits of the 43rd
/// character may be non-zero (true for three of the four published sample keys).
const KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// Why a message could not be verified, decrypted or the crypto could not be set up.
///
/// Variants carry no data on purpose: nothing from the key, the token or the (attacker-chosen)
/// ciphertext ends up in logs. [`CryptoError::code`] gives the official sample's error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The EncodingAESKey is not 43 base64 characters decoding to 32 bytes.
    #[error("EncodingAESKey must be 43 base64 characters that decode to 32 bytes")]
    InvalidKey,
    /// The `msg_signature` does not match `(token, timestamp, nonce, Encrypt)`.
    #[error("message signature does not match")]
    InvalidSignature,
    /// `Encrypt` is not valid standard base64.
    #[error("ciphertext is not valid base64")]
    Base64,
    /// The decoded ciphertext is empty or not a multiple of the AES block size.
    #[error("ciphertext length is not a non-zero multiple of 16")]
    BadLength,
    /// The 32-byte-block PKCS#7 padding is malformed (usually: wrong key).
    #[error("invalid PKCS#7 padding (block size 32)")]
    Padding,
    /// The plaintext is shorter than its header or its length field points beyond the buffer.
    #[error("decrypted message length field is inconsistent with the buffer")]
    Buffer,
    /// The trailing receive id is not the configured component appid.
    #[error("decrypted message is not addressed to the configured component appid")]
    AppIdMismatch,
    /// The decrypted message is not valid UTF-8.
    #[error("decrypted message is not valid UTF-8")]
    Utf8,
}

impl CryptoError {
    /// The matching error code of the official WXBizMsgCrypt samples (protocol §4.7), handy when
    /// comparing logs with other SDKs.
    pub fn code(self) -> i32 {
        match self {
            CryptoError::InvalidSignature => -40001,
            CryptoError::InvalidKey => -40004,
            CryptoError::AppIdMismatch => -40005,
            CryptoError::Padding => -40007,
            CryptoError::Buffer | CryptoError::Utf8 => -40008,
            CryptoError::Base64 | CryptoError::BadLength => -40010,
        }
    }
}

/// SHA-1 (lowercase hex) of the parts sorted byte-wise and concatenated without separator — the
/// one signature construction WeChat uses everywhere.
fn sorted_sha1(parts: &mut [&str]) -> String {
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for part in parts.iter() {
        hasher.update(part.as_bytes());
    }
    to_hex(&hasher.finalize())
}

/// Lowercase hex encoding.
fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The 4-part `msg_signature`: SHA-1 hex of sorted `(token, timestamp, nonce, encrypt)`.
///
/// This is the signature that covers the encrypted body; it is the one to verify on pushes.
pub fn msg_signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    sorted_sha1(&mut [token, timestamp, nonce, encrypt])
}

/// The 3-part query `signature`: SHA-1 hex of sorted `(token, timestamp, nonce)`.
///
/// It does not cover the body, so it only serves GET `echostr` URL checks and the simulator.
pub fn plain_signature(token: &str, timestamp: &str, nonce: &str) -> String {
    sorted_sha1(&mut [token, timestamp, nonce])
}

/// Decodes a 43-character EncodingAESKey into the 32-byte AES key (protocol §4.1).
fn decode_aes_key(encoding_aes_key: &str) -> Result<[u8; 32], CryptoError> {
    if encoding_aes_key.len() != ENCODING_AES_KEY_LEN {
        return Err(CryptoError::InvalidKey);
    }
    let mut padded = String::with_capacity(ENCODING_AES_KEY_LEN + 1);
    padded.push_str(encoding_aes_key);
    padded.push('=');
    let bytes = KEY_ENGINE
        .decode(padded.as_bytes())
        .map_err(|_| CryptoError::InvalidKey)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| CryptoError::InvalidKey)
}

/// An AES-256 key (IV = its first 16 bytes, per the scheme).
#[derive(Clone)]
struct AesKey([u8; 32]);

impl AesKey {
    /// The IV: the key's first 16 bytes.
    fn iv(&self) -> [u8; AES_BLOCK] {
        let mut iv = [0u8; AES_BLOCK];
        iv.copy_from_slice(&self.0[..AES_BLOCK]);
        iv
    }

    /// AES-256-CBC decryption in place, no cipher-level padding (WeChat's 32-byte PKCS#7 is
    /// stripped by the caller).
    fn decrypt_in_place(&self, buf: &mut [u8]) -> Result<(), CryptoError> {
        let (blocks, rest) = aes::Block::slice_as_chunks_mut(buf);
        if blocks.is_empty() || !rest.is_empty() {
            return Err(CryptoError::BadLength);
        }
        // Key and IV are fixed-size arrays, so construction cannot fail.
        Aes256CbcDec::new(&self.0.into(), &self.iv().into()).decrypt_blocks(blocks);
        Ok(())
    }

    /// AES-256-CBC encryption in place of an already padded buffer (length a multiple of 32).
    fn encrypt_in_place(&self, buf: &mut [u8]) {
        let (blocks, rest) = aes::Block::slice_as_chunks_mut(buf);
        debug_assert!(
            rest.is_empty(),
            "plaintext must be padded before encryption"
        );
        Aes256CbcEnc::new(&self.0.into(), &self.iv().into()).encrypt_blocks(blocks);
    }
}

/// WeChat's WXBizMsgCrypt for one component: verifies signatures, decrypts pushes, encrypts
/// replies (and, for the simulator, pushes).
///
/// Holds the message token, the current AES key, optionally the previous AES key (WeChat lets the
/// platform rotate its EncodingAESKey; pushes signed before the switch may still arrive), and the
/// component appid every plaintext must end with. `Debug` never shows the token or the keys.
///
/// ```
/// use wechat_oauth_proxy::secret::SecretString;
/// use wechat_oauth_proxy::wechat::{ComponentAppId, crypto::MsgCrypt};
///
/// let crypt = MsgCrypt::new(
///     &SecretString::new("token"),
///     &SecretString::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"),
///     ComponentAppId::new("wx0123456789abcdef"),
/// )?;
/// let encrypt = crypt.encrypt("<xml/>");
/// let signature = crypt.sign("1700000000", "42", &encrypt);
/// crypt.verify_msg_signature("1700000000", "42", &encrypt, &signature)?;
/// assert_eq!(crypt.decrypt(&encrypt)?, "<xml/>");
/// # Ok::<(), wechat_oauth_proxy::wechat::crypto::CryptoError>(())
/// ```
#[derive(Clone)]
pub struct MsgCrypt {
    token: SecretString,
    key: AesKey,
    previous_key: Option<AesKey>,
    appid: ComponentAppId,
}

impl fmt::Debug for MsgCrypt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MsgCrypt")
            .field("appid", &self.appid)
            .field("token", &"[redacted]")
            .field("key", &"[redacted]")
            .field(
                "previous_key",
                &self.previous_key.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

impl MsgCrypt {
    /// Builds the crypto for a component from its message token, its EncodingAESKey and its appid.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKey`] if the EncodingAESKey is not 43 base64 characters decoding to
    /// 32 bytes. Non-zero trailing bits in the last character are accepted, as WeChat does.
    pub fn new(
        token: &SecretString,
        encoding_aes_key: &SecretString,
        appid: ComponentAppId,
    ) -> Result<Self, CryptoError> {
        Ok(Self {
            token: token.clone(),
            key: AesKey(decode_aes_key(encoding_aes_key.expose_secret())?),
            previous_key: None,
            appid,
        })
    }

    /// Adds the previous EncodingAESKey: [`decrypt`](Self::decrypt) tries the current key first
    /// and falls back to this one, as the WeChat docs recommend during a key rotation (§4.1.4).
    ///
    /// # Errors
    /// [`CryptoError::InvalidKey`] as for [`new`](Self::new).
    pub fn with_previous_key(
        mut self,
        previous_encoding_aes_key: &SecretString,
    ) -> Result<Self, CryptoError> {
        self.previous_key = Some(AesKey(decode_aes_key(
            previous_encoding_aes_key.expose_secret(),
        )?));
        Ok(self)
    }

    /// The component appid every decrypted message must be addressed to.
    pub fn appid(&self) -> &ComponentAppId {
        &self.appid
    }

    /// The 4-part `msg_signature` over `(token, timestamp, nonce, encrypt)` with this token.
    pub fn sign(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        msg_signature(self.token.expose_secret(), timestamp, nonce, encrypt)
    }

    /// The 3-part query `signature` over `(token, timestamp, nonce)` with this token.
    pub fn sign_plain(&self, timestamp: &str, nonce: &str) -> String {
        plain_signature(self.token.expose_secret(), timestamp, nonce)
    }

    /// Checks a push's `msg_signature` against `(token, timestamp, nonce, encrypt)` in constant
    /// time.
    ///
    /// # Errors
    /// [`CryptoError::InvalidSignature`] if it does not match.
    pub fn verify_msg_signature(
        &self,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
        msg_signature: &str,
    ) -> Result<(), CryptoError> {
        let expected = self.sign(timestamp, nonce, encrypt);
        if constant_time_eq(expected.as_bytes(), msg_signature.as_bytes()) {
            Ok(())
        } else {
            Err(CryptoError::InvalidSignature)
        }
    }

    /// Checks a GET URL-verification `signature` (3 parts) in constant time.
    ///
    /// # Errors
    /// [`CryptoError::InvalidSignature`] if it does not match.
    pub fn verify_plain_signature(
        &self,
        timestamp: &str,
        nonce: &str,
        signature: &str,
    ) -> Result<(), CryptoError> {
        let expected = self.sign_plain(timestamp, nonce);
        if constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
            Ok(())
        } else {
            Err(CryptoError::InvalidSignature)
        }
    }

    /// Decrypts an `Encrypt` value into the message (usually XML), exactly as sent: no trimming.
    ///
    /// Verify the `msg_signature` first; this function only checks the ciphertext's structure.
    /// With a previous key configured, a failure with the current key is retried with it.
    ///
    /// # Errors
    /// [`CryptoError::Base64`], [`CryptoError::BadLength`] for a malformed ciphertext;
    /// [`CryptoError::Padding`], [`CryptoError::Buffer`], [`CryptoError::AppIdMismatch`],
    /// [`CryptoError::Utf8`] for a plaintext that does not have the expected layout (typically a
    /// wrong key) or is addressed to another appid. When both keys fail, the current key's error
    /// is returned.
    pub fn decrypt(&self, encrypt: &str) -> Result<String, CryptoError> {
        let ciphertext = STANDARD
            .decode(encrypt.as_bytes())
            .map_err(|_| CryptoError::Base64)?;
        if ciphertext.is_empty() || ciphertext.len() % AES_BLOCK != 0 {
            return Err(CryptoError::BadLength);
        }
        match &self.previous_key {
            None => self.decrypt_with(&self.key, ciphertext),
            Some(previous) => match self.decrypt_with(&self.key, ciphertext.clone()) {
                Ok(msg) => Ok(msg),
                Err(current_err) => self
                    .decrypt_with(previous, ciphertext)
                    .map_err(|_| current_err),
            },
        }
    }

    /// Decrypts and unpacks one ciphertext with one key (protocol §4.5 steps 5-9).
    fn decrypt_with(&self, key: &AesKey, mut buf: Vec<u8>) -> Result<String, CryptoError> {
        key.decrypt_in_place(&mut buf)?;
        let unpadded = strip_padding(&buf)?;
        let msg = unpack(unpadded, self.appid.as_str().as_bytes())?;
        String::from_utf8(msg.to_vec()).map_err(|_| CryptoError::Utf8)
    }

    /// Encrypts a message with the given 16-byte random prefix. Deterministic, for test vectors
    /// and reproducible fixtures; use [`encrypt`](Self::encrypt) otherwise.
    pub fn encrypt_with_random(&self, msg: &str, random: &[u8; 16]) -> String {
        let msg = msg.as_bytes();
        let appid = self.appid.as_str().as_bytes();
        let full_len = HEADER_LEN + msg.len() + appid.len();
        let pad = PAD_BLOCK - full_len % PAD_BLOCK;
        let mut buf = Vec::with_capacity(full_len + pad);
        buf.extend_from_slice(random);
        // The scheme's length field is a u32; messages beyond 4 GiB cannot be represented and are
        // far beyond anything WeChat carries, so saturate instead of failing.
        let len_field = u32::try_from(msg.len()).unwrap_or(u32::MAX);
        buf.extend_from_slice(&len_field.to_be_bytes());
        buf.extend_from_slice(msg);
        buf.extend_from_slice(appid);
        // `pad` is in 1..=32, so the cast is lossless.
        buf.resize(full_len + pad, pad as u8);
        self.key.encrypt_in_place(&mut buf);
        STANDARD.encode(&buf)
    }

    /// Encrypts a message with a fresh random prefix, giving the `Encrypt` value of a reply or of
    /// a (simulated) push.
    pub fn encrypt(&self, msg: &str) -> String {
        let random: [u8; 16] = rand::random();
        self.encrypt_with_random(msg, &random)
    }
}

/// Strict removal of WeChat's PKCS#7 padding with a 32-byte block: the last byte `k` is in
/// `1..=32` and the last `k` bytes all equal `k`.
fn strip_padding(buf: &[u8]) -> Result<&[u8], CryptoError> {
    let Some(&last) = buf.last() else {
        return Err(CryptoError::Padding);
    };
    let k = usize::from(last);
    if k == 0 || k > PAD_BLOCK || k > buf.len() {
        return Err(CryptoError::Padding);
    }
    let (content, padding) = buf.split_at(buf.len() - k);
    if padding.iter().all(|&b| b == last) {
        Ok(content)
    } else {
        Err(CryptoError::Padding)
    }
}

/// Splits `random || be_u32(len) || msg || appid`, checks the length field and the trailing appid,
/// and returns `msg`.
fn unpack<'a>(plain: &'a [u8], expected_appid: &[u8]) -> Result<&'a [u8], CryptoError> {
    let Some((header, rest)) = plain.split_first_chunk::<HEADER_LEN>() else {
        return Err(CryptoError::Buffer);
    };
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&header[RANDOM_LEN..]);
    let msg_len =
        usize::try_from(u32::from_be_bytes(len_bytes)).map_err(|_| CryptoError::Buffer)?;
    if msg_len > rest.len() {
        return Err(CryptoError::Buffer);
    }
    let (msg, appid) = rest.split_at(msg_len);
    if appid != expected_appid {
        return Err(CryptoError::AppIdMismatch);
    }
    Ok(msg)
}
