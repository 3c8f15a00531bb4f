//! Authentication: who is calling.
//!
//! Three modes ([`Auth`]): none, credentials (Basic handshake issuing signed bearer tokens, plus
//! configured static tokens) and identity pass-through (the caller's bearer token is its own
//! Databricks token). Passwords and tokens are kept only as salted / keyed hashes.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use dbfed_databricks::SecretString;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;

use crate::error::FlightSqlError;
use crate::ticket::{Kind, Payload, Signer, TicketError};

/// Who is calling, after authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    /// The principal's name: the user name, the name given to a static token, `anonymous`
    /// without authentication, or `token-<hash prefix>` in pass-through mode.
    pub name: String,
    /// In identity pass-through mode, the caller's Databricks token (never printed).
    pub databricks_token: Option<SecretString>,
}

impl Principal {
    /// A principal without a Databricks token.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            databricks_token: None,
        }
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("name", &self.name)
            .field(
                "databricks_token",
                &self.databricks_token.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

/// How callers authenticate. Default: [`Auth::None`].
#[derive(Debug, Clone, Default)]
pub enum Auth {
    /// Every caller is the principal `anonymous` (local use, trusted networks).
    #[default]
    None,
    /// User names with passwords for the Basic handshake (which returns a signed bearer token)
    /// and static bearer tokens.
    Basic(Credentials),
    /// The caller's bearer token (or the password of a Basic handshake) is its own Databricks
    /// token: Unity Catalog grants decide what each caller sees. Use with
    /// [`PassThroughSessions`](crate::PassThroughSessions).
    PassThrough,
}

/// Users and static tokens accepted by [`Auth::Basic`]. Only hashes are stored.
#[derive(Clone, Default)]
pub struct Credentials {
    users: HashMap<String, PasswordHash>,
    tokens: HashMap<[u8; 32], String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<_> = self.users.keys().collect();
        users.sort();
        f.debug_struct("Credentials")
            .field("users", &users)
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl Credentials {
    /// No users and no tokens.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accept user `name` with `password` in the Basic handshake (repeatable; the password is
    /// stored as a salted PBKDF2-HMAC-SHA256 hash).
    pub fn user(mut self, name: impl Into<String>, password: impl AsRef<str>) -> Self {
        self.users
            .insert(name.into(), PasswordHash::new(password.as_ref()));
        self
    }

    /// Accept the static bearer `token` as principal `principal` (repeatable; stored as a
    /// SHA-256 hash).
    pub fn token(mut self, token: impl AsRef<str>, principal: impl Into<String>) -> Self {
        self.tokens
            .insert(sha256(token.as_ref().as_bytes()), principal.into());
        self
    }

    fn check_password(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(hash) => hash.matches(password),
            None => {
                // Spend the same time for unknown users.
                let _ = PasswordHash::derive(password, &[0u8; 16]);
                false
            }
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

const PBKDF2_ROUNDS: u32 = 4096;

#[derive(Clone)]
struct PasswordHash {
    salt: [u8; 16],
    hash: [u8; 32],
}

impl PasswordHash {
    fn new(password: &str) -> Self {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        Self {
            hash: Self::derive(password, &salt),
            salt,
        }
    }

    /// PBKDF2-HMAC-SHA256, one block.
    fn derive(password: &str, salt: &[u8]) -> [u8; 32] {
        let Ok(prf) = Hmac::<Sha256>::new_from_slice(password.as_bytes()) else {
            return [0u8; 32];
        };
        let mut u = prf.clone();
        u.update(salt);
        u.update(&1u32.to_be_bytes());
        let mut block: [u8; 32] = u.finalize().into_bytes().into();
        let mut out = block;
        for _ in 1..PBKDF2_ROUNDS {
            let mut mac = prf.clone();
            mac.update(&block);
            block = mac.finalize().into_bytes().into();
            for (o, b) in out.iter_mut().zip(block.iter()) {
                *o ^= b;
            }
        }
        out
    }

    fn matches(&self, password: &str) -> bool {
        let candidate = Self::derive(password, &self.salt);
        candidate
            .iter()
            .zip(self.hash.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// Checks credentials on every call and issues bearer tokens.
#[derive(Debug, Clone)]
pub(crate) struct Authenticator {
    auth: Auth,
    signer: Signer,
    token_ttl: Duration,
}

/// Prefix of the bearer tokens this server issues.
const TOKEN_PREFIX: &str = "dbfed1.";

impl Authenticator {
    pub(crate) fn new(auth: Auth, signer: Signer, token_ttl: Duration) -> Self {
        Self {
            auth,
            signer,
            token_ttl,
        }
    }

    /// The principal of a call, from its `authorization` header.
    pub(crate) fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, FlightSqlError> {
        if matches!(self.auth, Auth::None) {
            return Ok(Principal::named("anonymous"));
        }
        match read_authorization(metadata)? {
            None => Err(FlightSqlError::Unauthenticated(
                "no authorization header: send `authorization: Bearer <token>` (or perform the Basic handshake first)".into(),
            )),
            Some(Authorization::Basic { user, password }) => self.basic(&user, &password),
            Some(Authorization::Bearer(token)) => self.bearer(&token),
        }
    }

    /// The Basic handshake: checks user and password and returns the principal and the bearer
    /// token to hand back.
    pub(crate) fn handshake(
        &self,
        metadata: &MetadataMap,
        payload_basic: Option<(String, String)>,
    ) -> Result<(Principal, Option<String>), FlightSqlError> {
        if matches!(self.auth, Auth::None) {
            return Ok((Principal::named("anonymous"), None));
        }
        let (user, password) = match read_authorization(metadata)? {
            Some(Authorization::Basic { user, password }) => (user, password),
            Some(Authorization::Bearer(token)) => {
                // Already holding a token: validate it and hand it back.
                let principal = self.bearer(&token)?;
                return Ok((principal, Some(token)));
            }
            None => payload_basic.ok_or_else(|| {
                FlightSqlError::Unauthenticated(
                    "handshake without credentials: send `authorization: Basic ...`".into(),
                )
            })?,
        };
        let principal = self.basic(&user, &password)?;
        let token = match &self.auth {
            Auth::PassThrough => password,
            _ => self.issue_token(&principal),
        };
        Ok((principal, Some(token)))
    }

    fn basic(&self, user: &str, password: &str) -> Result<Principal, FlightSqlError> {
        match &self.auth {
            Auth::None => Ok(Principal::named("anonymous")),
            Auth::Basic(credentials) => {
                if credentials.check_password(user, password) {
                    Ok(Principal::named(user))
                } else {
                    Err(FlightSqlError::Unauthenticated(
                        "invalid user name or password".into(),
                    ))
                }
            }
            Auth::PassThrough => self.pass_through(password),
        }
    }

    fn bearer(&self, token: &str) -> Result<Principal, FlightSqlError> {
        match &self.auth {
            Auth::None => Ok(Principal::named("anonymous")),
            Auth::PassThrough => self.pass_through(token),
            Auth::Basic(credentials) => {
                if let Some(name) = credentials.tokens.get(&sha256(token.as_bytes())) {
                    return Ok(Principal::named(name.clone()));
                }
                let Some(encoded) = token.strip_prefix(TOKEN_PREFIX) else {
                    return Err(FlightSqlError::Unauthenticated(
                        "invalid bearer token".into(),
                    ));
                };
                let bytes = URL_SAFE_NO_PAD
                    .decode(encoded)
                    .map_err(|_| FlightSqlError::Unauthenticated("invalid bearer token".into()))?;
                let payload =
                    self.signer
                        .verify(&bytes, Kind::BearerToken)
                        .map_err(|e| match e {
                            TicketError::Expired { .. } => FlightSqlError::Unauthenticated(
                                "bearer token expired: perform the handshake again".into(),
                            ),
                            _ => FlightSqlError::Unauthenticated("invalid bearer token".into()),
                        })?;
                if !credentials.users.contains_key(&payload.principal) {
                    return Err(FlightSqlError::Unauthenticated(
                        "bearer token of a user that no longer exists".into(),
                    ));
                }
                Ok(Principal::named(payload.principal))
            }
        }
    }

    fn pass_through(&self, token: &str) -> Result<Principal, FlightSqlError> {
        if token.is_empty() {
            return Err(FlightSqlError::Unauthenticated(
                "empty token: pass-through mode needs the caller's Databricks token".into(),
            ));
        }
        let hash = self.signer.keyed_hash(token.as_bytes());
        let prefix: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
        Ok(Principal {
            name: format!("token-{prefix}"),
            databricks_token: Some(SecretString::new(token)),
        })
    }

    fn issue_token(&self, principal: &Principal) -> String {
        let payload = Payload {
            principal: principal.name.clone(),
            ..Default::default()
        };
        let bytes = self
            .signer
            .issue(payload, Kind::BearerToken, self.token_ttl);
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The identity binding of a principal: a keyed hash of its Databricks token (empty
    /// without one).
    pub(crate) fn token_hash(&self, principal: &Principal) -> Vec<u8> {
        principal
            .databricks_token
            .as_ref()
            .map(|t| self.signer.keyed_hash(t.expose().as_bytes()))
            .unwrap_or_default()
    }
}

enum Authorization {
    Basic { user: String, password: String },
    Bearer(String),
}

fn read_authorization(metadata: &MetadataMap) -> Result<Option<Authorization>, FlightSqlError> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| FlightSqlError::Unauthenticated("authorization header is not ASCII".into()))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        Ok(Some(Authorization::Bearer(rest.to_owned())))
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD.decode(rest).map_err(|_| {
            FlightSqlError::Unauthenticated("Basic credentials are not base64".into())
        })?;
        let text = String::from_utf8(decoded).map_err(|_| {
            FlightSqlError::Unauthenticated("Basic credentials are not UTF-8".into())
        })?;
        let (user, password) = text.split_once(':').ok_or_else(|| {
            FlightSqlError::Unauthenticated("Basic credentials lack `user:password`".into())
        })?;
        Ok(Some(Authorization::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        }))
    } else {
        Err(FlightSqlError::Unauthenticated(
            "unsupported authorization scheme (use Bearer or Basic)".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().expect("ascii"));
        m
    }

    fn basic(user: &str, password: &str) -> MetadataMap {
        metadata(&format!(
            "Basic {}",
            STANDARD.encode(format!("{user}:{password}"))
        ))
    }

    fn authenticator(auth: Auth) -> Authenticator {
        Authenticator::new(auth, Signer::new(b"k".to_vec()), Duration::from_secs(60))
    }

    #[test]
    fn basic_handshake_issues_a_token_that_authenticates() {
        let a = authenticator(Auth::Basic(
            Credentials::new()
                .user("alice", "s3cret")
                .token("static-tok", "svc"),
        ));
        let (principal, token) = a
            .handshake(&basic("alice", "s3cret"), None)
            .expect("valid password");
        assert_eq!(principal.name, "alice");
        let token = token.expect("a bearer token");
        assert!(!token.contains("s3cret"));
        let back = a
            .authenticate(&metadata(&format!("Bearer {token}")))
            .expect("issued token");
        assert_eq!(back.name, "alice");
        assert_eq!(
            a.authenticate(&metadata("Bearer static-tok"))
                .expect("static token")
                .name,
            "svc"
        );
        for bad in [
            basic("alice", "wrong"),
            basic("bob", "s3cret"),
            metadata("Bearer nope"),
            metadata("Bearer dbfed1.AAAA"),
            metadata("Digest x"),
            MetadataMap::new(),
        ] {
            let err = a.authenticate(&bad).expect_err("refused");
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
        }
        // A token signed with another secret is refused.
        let other = Authenticator::new(
            Auth::Basic(Credentials::new().user("alice", "s3cret")),
            Signer::new(b"other".to_vec()),
            Duration::from_secs(60),
        );
        assert!(
            other
                .authenticate(&metadata(&format!("Bearer {token}")))
                .is_err()
        );
    }

    #[test]
    fn pass_through_keeps_the_token_secret_in_debug() {
        let a = authenticator(Auth::PassThrough);
        let p = a
            .authenticate(&metadata("Bearer dapi-user-a"))
            .expect("any token");
        assert!(p.name.starts_with("token-"));
        assert_eq!(
            p.databricks_token.as_ref().map(|t| t.expose()),
            Some("dapi-user-a")
        );
        assert!(!format!("{p:?}").contains("dapi-user-a"));
        let q = a
            .authenticate(&metadata("Bearer dapi-user-b"))
            .expect("any token");
        assert_ne!(p.name, q.name);
        assert_ne!(a.token_hash(&p), a.token_hash(&q));
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let c = Credentials::new()
            .user("alice", "pw-123")
            .token("tok-456", "svc");
        let text = format!("{c:?}");
        assert!(text.contains("alice"));
        assert!(
            !text.contains("pw-123") && !text.contains("tok-456"),
            "{text}"
        );
    }
}
