//! The realm's token signing keys: RS256 with a `kid`, rotation that keeps old keys in the
//! JWKS, and a "foreign key" mode that signs with a key the JWKS does not hold.

use std::sync::{Mutex, MutexGuard, PoisonError};

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

struct Key {
    kid: String,
    encoding: EncodingKey,
    jwk: Jwk,
}

struct Keys {
    current: Key,
    retired: Vec<Key>,
    foreign: Option<Key>,
    /// Sign with HS256 over this secret instead (issue 12: a realm set to HS256).
    hs256: Option<EncodingKey>,
}

/// Signs the realm's tokens.
pub struct Signer {
    keys: Mutex<Keys>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

fn new_key() -> Result<Key, String> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).map_err(|e| e.to_string())?;
    let encoding =
        EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).map_err(|e| e.to_string())?;
    let kid = uuid::Uuid::new_v4().simple().to_string();
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).map_err(|e| e.to_string())?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);
    Ok(Key { kid, encoding, jwk })
}

impl Signer {
    pub fn generate() -> Result<Self, String> {
        Ok(Self {
            keys: Mutex::new(Keys {
                current: new_key()?,
                retired: Vec::new(),
                foreign: None,
                hs256: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn rotate(&self) -> Result<(), String> {
        let fresh = new_key()?;
        let mut keys = self.lock();
        let old = std::mem::replace(&mut keys.current, fresh);
        keys.retired.push(old);
        Ok(())
    }

    pub fn set_foreign(&self, on: bool) -> Result<(), String> {
        let foreign = if on { Some(new_key()?) } else { None };
        self.lock().foreign = foreign;
        Ok(())
    }

    pub fn set_hs256(&self, on: bool) {
        self.lock().hs256 = on.then(|| EncodingKey::from_secret(uuid::Uuid::new_v4().as_bytes()));
    }

    /// Signs `claims` with the current key (or the foreign one, under the current `kid`; or
    /// HS256 when set so).
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String, String> {
        let keys = self.lock();
        if let Some(secret) = &keys.hs256 {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(keys.current.kid.clone());
            header.typ = Some("JWT".to_owned());
            return jsonwebtoken::encode(&header, claims, secret).map_err(|e| e.to_string());
        }
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(keys.current.kid.clone());
        header.typ = Some("JWT".to_owned());
        let key = keys.foreign.as_ref().unwrap_or(&keys.current);
        jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|e| e.to_string())
    }

    /// The JWKS document: every signing key, and an encryption key as Keycloak also publishes.
    pub fn jwks(&self) -> serde_json::Value {
        let keys = self.lock();
        let set = JwkSet {
            keys: std::iter::once(&keys.current)
                .chain(keys.retired.iter())
                .map(|k| k.jwk.clone())
                .collect(),
        };
        let mut doc = serde_json::to_value(set).unwrap_or_default();
        let mut enc = serde_json::to_value(&keys.current.jwk).unwrap_or_default();
        if let (Some(list), Some(obj)) = (
            doc.get_mut("keys").and_then(|k| k.as_array_mut()),
            enc.as_object_mut(),
        ) {
            obj.insert("kid".into(), "enc-key".into());
            obj.insert("use".into(), "enc".into());
            obj.insert("alg".into(), "RSA-OAEP".into());
            list.push(enc);
        }
        doc
    }
}
