//! JWT (HS256) verification for `OP_AUTH` and issuing for `POST /v1/tokens`.
//!
//! Owns the server secret and the token rules of protocol section 2. It is
//! sans-IO: the caller passes `now`, so expiry is tested without a clock.
//! Signature checking is left to `jsonwebtoken`; this module only decides
//! which claims a token must carry. Token length limits are the codec's.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::ids::UserId;

/// Why a token was rejected. Every variant ends in `OP_ERROR AUTH_FAILED`;
/// the distinction is for logs and tests.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// The token bytes are not UTF-8, so not a compact JWT.
    #[error("token is not UTF-8")]
    NotUtf8,
    /// Not a well-formed JWT (segments, base64, JSON).
    #[error("token is malformed")]
    Malformed,
    /// The HS256 signature does not match the server secret.
    #[error("bad token signature")]
    BadSignature,
    /// `alg` is not HS256 (including `none` and other HMAC sizes).
    #[error("token algorithm is not HS256")]
    WrongAlgorithm,
    /// `exp` is absent or not a number.
    #[error("token has no numeric exp claim")]
    MissingExp,
    /// `exp <= now`.
    #[error("token expired")]
    Expired,
    /// `sub` is absent, not a decimal string, zero or over u64.
    #[error("token sub is not a non-zero decimal user id")]
    BadSubject,
}

/// The claims this server reads. Both are kept as raw JSON so that a missing
/// or mistyped claim is reported precisely instead of as a generic decode
/// failure.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<serde_json::Value>,
    #[serde(default)]
    exp: Option<serde_json::Value>,
}

/// The claims this server issues.
#[derive(Serialize)]
struct IssuedClaims {
    sub: String,
    exp: u64,
}

/// Verifies and issues tokens with one HS256 secret.
pub struct Authenticator {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl Authenticator {
    /// An authenticator for `secret` (the raw HMAC key bytes).
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is compared with the caller's `now` below, with no leeway;
        // the crate would read the system clock and allow 60 s of slack.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        // Presence of `exp`/`sub` is checked below so that each failure
        // gets its own error.
        validation.required_spec_claims.clear();
        Self {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            validation,
        }
    }

    /// Verifies an `OP_AUTH` token at time `now_unix_secs`. Returns the user
    /// id from `sub`.
    pub fn verify(&self, token: &[u8], now_unix_secs: u64) -> Result<UserId, AuthError> {
        let token = std::str::from_utf8(token).map_err(|_| AuthError::NotUtf8)?;
        match jsonwebtoken::decode_header(token) {
            Ok(header) if header.alg != Algorithm::HS256 => return Err(AuthError::WrongAlgorithm),
            Ok(_) => {}
            // The crate cannot parse algorithms it does not know ("none"):
            // look at the header ourselves only to name the error right.
            Err(_) => {
                return Err(match header_alg(token) {
                    Some(alg) if alg != "HS256" => AuthError::WrongAlgorithm,
                    _ => AuthError::Malformed,
                })
            }
        }
        let data = jsonwebtoken::decode::<RawClaims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm,
                _ => AuthError::Malformed,
            })?;
        let claims = data.claims;
        check_exp(claims.exp.as_ref(), now_unix_secs)?;
        match claims.sub {
            Some(serde_json::Value::String(s)) => parse_id(&s).ok_or(AuthError::BadSubject),
            _ => Err(AuthError::BadSubject),
        }
    }

    /// Issues a token for `user` expiring `ttl_secs` after `now_unix_secs`.
    pub fn issue(&self, user: UserId, now_unix_secs: u64, ttl_secs: u64) -> String {
        let claims = IssuedClaims {
            sub: user.to_string(),
            exp: now_unix_secs.saturating_add(ttl_secs),
        };
        // HS256 with an HMAC key of any length always signs, and the claims
        // always serialize, so an error here is a bug, not an input error.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }
}

/// `exp` must be a JSON number strictly after `now` (an expiry at exactly
/// `now` has passed). Fractional NumericDates (RFC 7519) are allowed.
fn check_exp(exp: Option<&serde_json::Value>, now: u64) -> Result<(), AuthError> {
    let Some(serde_json::Value::Number(n)) = exp else {
        return Err(AuthError::MissingExp);
    };
    let live = if let Some(exp) = n.as_u64() {
        exp > now
    } else if let Some(exp) = n.as_f64() {
        // Negative or fractional: u64 -> f64 rounding cannot matter for a
        // value that is not an integer within a second of `now`.
        exp > now as f64
    } else {
        false
    };
    if live {
        Ok(())
    } else {
        Err(AuthError::Expired)
    }
}

/// Parses a decimal id as the protocol writes them: ASCII digits only (no
/// sign, no spaces, no fraction), fits in u64, and not 0 (0 is
/// `INVALID_USERID` / `INVALID_HANDLE`). Shared with the admin API.
pub fn parse_id(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // `parse` alone would accept a leading '+'.
    s.parse::<u64>().ok().filter(|&id| id != 0)
}

/// The `alg` of a compact JWT's header, read without the crate; only used to
/// classify a header `jsonwebtoken` refused.
fn header_alg(token: &str) -> Option<String> {
    let header = base64url_decode(token.split('.').next()?)?;
    let value: serde_json::Value = serde_json::from_slice(&header).ok()?;
    value.get("alg")?.as_str().map(str::to_owned)
}

/// Unpadded base64url (RFC 4648 section 5), enough to read a JWT header.
fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"test secret";
    const NOW: u64 = 1_700_000_000;

    fn sign(alg: Algorithm, secret: &[u8], claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn verify(token: &str) -> Result<UserId, AuthError> {
        Authenticator::new(SECRET).verify(token.as_bytes(), NOW)
    }

    #[test]
    fn issued_token_verifies_to_its_user() {
        let auth = Authenticator::new(SECRET);
        let token = auth.issue(42, NOW, 60);
        assert_eq!(auth.verify(token.as_bytes(), NOW), Ok(42));
        assert_eq!(auth.verify(token.as_bytes(), NOW + 59), Ok(42));
    }

    #[test]
    fn token_expires_exactly_at_exp_without_leeway() {
        let auth = Authenticator::new(SECRET);
        let token = auth.issue(42, NOW, 60);
        assert_eq!(
            auth.verify(token.as_bytes(), NOW + 60),
            Err(AuthError::Expired)
        );
        assert_eq!(
            auth.verify(token.as_bytes(), NOW + 61),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn hand_signed_hs256_token_is_accepted() {
        let t = sign(
            Algorithm::HS256,
            SECRET,
            &json!({"sub": "7", "exp": NOW + 1}),
        );
        assert_eq!(verify(&t), Ok(7));
        let max = u64::MAX.to_string();
        let t = sign(
            Algorithm::HS256,
            SECRET,
            &json!({"sub": max, "exp": NOW + 1}),
        );
        assert_eq!(verify(&t), Ok(u64::MAX));
    }

    #[test]
    fn token_signed_with_another_secret_is_rejected() {
        let t = sign(
            Algorithm::HS256,
            b"other",
            &json!({"sub": "7", "exp": NOW + 100}),
        );
        assert_eq!(verify(&t), Err(AuthError::BadSignature));
    }

    #[test]
    fn tampered_claims_are_rejected() {
        let t = sign(
            Algorithm::HS256,
            SECRET,
            &json!({"sub": "7", "exp": NOW + 100}),
        );
        let parts: Vec<&str> = t.split('.').collect();
        let other = sign(
            Algorithm::HS256,
            SECRET,
            &json!({"sub": "8", "exp": NOW + 100}),
        );
        let other_claims = other.split('.').nth(1).unwrap();
        let forged = format!("{}.{}.{}", parts[0], other_claims, parts[2]);
        assert_eq!(verify(&forged), Err(AuthError::BadSignature));
    }

    #[test]
    fn other_hmac_algorithms_with_the_same_secret_are_rejected() {
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let t = sign(alg, SECRET, &json!({"sub": "7", "exp": NOW + 100}));
            assert_eq!(verify(&t), Err(AuthError::WrongAlgorithm), "{alg:?}");
        }
    }

    #[test]
    fn alg_none_is_rejected() {
        // {"alg":"none","typ":"JWT"} . {"sub":"1","exp":4102444800} . (empty)
        let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        let claims = "eyJzdWIiOiIxIiwiZXhwIjo0MTAyNDQ0ODAwfQ";
        assert_eq!(
            verify(&format!("{header}.{claims}.")),
            Err(AuthError::WrongAlgorithm)
        );
        // Same with the HS256 signature of another token glued on.
        let real = sign(
            Algorithm::HS256,
            SECRET,
            &json!({"sub": "1", "exp": NOW + 100}),
        );
        let sig = real.split('.').nth(2).unwrap();
        assert_eq!(
            verify(&format!("{header}.{claims}.{sig}")),
            Err(AuthError::WrongAlgorithm)
        );
    }

    #[test]
    fn missing_or_non_numeric_exp_is_rejected() {
        for claims in [
            json!({"sub": "7"}),
            json!({"sub": "7", "exp": null}),
            json!({"sub": "7", "exp": "4102444800"}),
        ] {
            let t = sign(Algorithm::HS256, SECRET, &claims);
            assert_eq!(verify(&t), Err(AuthError::MissingExp), "{claims}");
        }
        // The crate's own claim pre-parse chokes on a nested value there.
        let t = sign(Algorithm::HS256, SECRET, &json!({"sub": "7", "exp": [1]}));
        assert_eq!(verify(&t), Err(AuthError::Malformed));
    }

    #[test]
    fn past_or_negative_exp_is_expired() {
        for exp in [
            json!(NOW),
            json!(NOW - 1),
            json!(0),
            json!(-5),
            json!(NOW as f64),
        ] {
            let t = sign(Algorithm::HS256, SECRET, &json!({"sub": "7", "exp": exp}));
            assert_eq!(verify(&t), Err(AuthError::Expired), "{exp}");
        }
        let t = sign(
            Algorithm::HS256,
            SECRET,
            &json!({"sub": "7", "exp": NOW as f64 + 0.5}),
        );
        assert_eq!(verify(&t), Ok(7));
    }

    #[test]
    fn bad_subjects_are_rejected() {
        let over = "18446744073709551616"; // u64::MAX + 1
        for sub in [
            json!(null),
            json!("abc"),
            json!("-1"),
            json!("1.5"),
            json!(" 1"),
            json!("1 "),
            json!("+1"),
            json!("0"),
            json!(""),
            json!(over),
            json!(7),
        ] {
            let t = sign(
                Algorithm::HS256,
                SECRET,
                &json!({"sub": sub, "exp": NOW + 100}),
            );
            assert_eq!(verify(&t), Err(AuthError::BadSubject), "{sub}");
        }
        let t = sign(Algorithm::HS256, SECRET, &json!({"exp": NOW + 100}));
        assert_eq!(verify(&t), Err(AuthError::BadSubject));
    }

    #[test]
    fn garbage_is_malformed_and_non_utf8_is_named() {
        for t in [
            "",
            "abc",
            "a.b.c",
            "a.b",
            "....",
            "eyJhbGciOiJIUzI1NiJ9.!!.x",
        ] {
            assert_eq!(verify(t), Err(AuthError::Malformed), "{t:?}");
        }
        let auth = Authenticator::new(SECRET);
        assert_eq!(auth.verify(&[0xff, 0xfe], NOW), Err(AuthError::NotUtf8));
    }

    #[test]
    fn parse_id_accepts_only_plain_non_zero_decimals() {
        assert_eq!(parse_id("1"), Some(1));
        assert_eq!(parse_id("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "0",
            "+1",
            "-1",
            " 1",
            "1.0",
            "0x1",
            "18446744073709551616",
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }
}
