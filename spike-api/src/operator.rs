//! Operator and cipher routes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::shard::ShardBytes;

/// `/v1/operator/recover`: `{}` → [`RecoverResponse`] (recover role).
pub type RecoverRequest = crate::Empty;

/// `{shards:{"1":[32 ints], …}}`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecoverResponse {
    /// Every share, keyed by its id as a string.
    pub shards: BTreeMap<String, ShardBytes>,
}

/// `/v1/operator/restore`: `{id, shard:[32 ints]}` (restore role).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// The share's id (1..=shares).
    pub id: u8,
    /// The share's value.
    pub shard: ShardBytes,
}

/// `{collected, remaining, restored}`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreResponse {
    /// Shares collected so far.
    pub collected: usize,
    /// Shares still needed.
    pub remaining: usize,
    /// Whether Nexus is now restored (unsealed).
    pub restored: bool,
}

/// `/v1/cipher/encrypt`: `{plaintext}` (base64) → [`CipherEncryptResponse`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CipherEncryptRequest {
    /// Standard base64 of the bytes to encrypt.
    pub plaintext: String,
}

/// `{ciphertext}` (base64).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CipherEncryptResponse {
    /// Standard base64 of the ciphertext.
    pub ciphertext: String,
}

/// `/v1/cipher/decrypt`: `{ciphertext}` (base64) → [`CipherDecryptResponse`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CipherDecryptRequest {
    /// Standard base64 of the ciphertext.
    pub ciphertext: String,
}

/// `{plaintext}` (base64).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CipherDecryptResponse {
    /// Standard base64 of the plaintext.
    pub plaintext: String,
}
