//! The relay's wire protocol, shared by the communicator (the client) and
//! `fsm-relay` (a local relay for the demo and the tests).
//!
//! | call | request | answer |
//! |---|---|---|
//! | `POST /v2/instance/login` | no body; `Authorization: Bearer <`[`bearer`]`(auth_token)>` | 200 [`LoginResponse`] with the JWT in the `token` cookie (no cookie: invalid token); 401/403 invalid token; 404 instance deleted |
//! | `GET /v2/instance/pull` | cookie `token` | 204 nothing; 200 [`Messages`], removed from the relay's queue |
//! | `POST /v2/instance/push` | cookie `token`; body [`Messages`], each `umhInstance` the authenticated uuid | any status ≥ 400 is an error |

use serde::{Deserialize, Serialize};
use sha3::{Digest, Sha3_256};

/// The login call's path.
pub const LOGIN_PATH: &str = "/v2/instance/login";
/// The pull call's path.
pub const PULL_PATH: &str = "/v2/instance/pull";
/// The push call's path.
pub const PUSH_PATH: &str = "/v2/instance/push";
/// The cookie that carries the JWT.
pub const TOKEN_COOKIE: &str = "token";

/// One message between an instance and the management console.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UmhMessage {
    /// The instance's uuid (set to the authenticated one on push).
    #[serde(rename = "umhInstance")]
    pub umh_instance: String,
    /// The payload.
    pub content: String,
    /// The user the message is for or from.
    pub email: String,
    /// The trace the message belongs to, if any.
    #[serde(rename = "traceId", default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// The body of a pull answer and of a push request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Messages {
    /// The messages, in order.
    #[serde(rename = "UMHMessages")]
    pub messages: Vec<UmhMessage>,
}

/// The body of a successful login.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResponse {
    /// The instance's uuid.
    pub uuid: String,
    /// The instance's name.
    pub name: String,
}

/// What the login's `Authorization: Bearer` header carries for `auth_token`:
/// `hex(SHA3-256(hex(SHA3-256(auth_token))))`, lower-case hex.
///
/// ```
/// let bearer = fsm_examples::protocol::bearer("secret");
/// assert_eq!(bearer.len(), 64);
/// assert_ne!(bearer, fsm_examples::protocol::bearer("other"));
/// ```
#[must_use]
pub fn bearer(auth_token: &str) -> String {
    let once = hex(&Sha3_256::digest(auth_token.as_bytes()));
    hex(&Sha3_256::digest(once.as_bytes()))
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_is_the_double_sha3_of_the_token_in_hex() {
        // SHA3-256("") is a published test vector.
        assert_eq!(
            hex(&Sha3_256::digest(b"")),
            "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a"
        );
        let inner = hex(&Sha3_256::digest(b"token"));
        assert_eq!(bearer("token"), hex(&Sha3_256::digest(inner.as_bytes())));
    }

    #[test]
    fn messages_use_the_relays_field_names() {
        let body = r#"{"UMHMessages":[{"umhInstance":"u-1","content":"hi","email":"a@b"}]}"#;
        let parsed: Messages = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(parsed.messages.len(), 1);
        assert_eq!(parsed.messages[0].umh_instance, "u-1");
        assert_eq!(parsed.messages[0].trace_id, None);
        let back = serde_json::to_string(&parsed).unwrap_or_default();
        assert_eq!(back, body);
    }
}
