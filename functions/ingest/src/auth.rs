//! Komet's Basic or Bearer credentials, checked in constant time.

use base64::Engine;
use lambda_http::http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use po_sync::config::ingest::{AuthScheme, Credentials};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a request was not authenticated. The label goes to the log; the caller sees only a generic error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum AuthFailure {
    Missing,
    WrongScheme,
    Malformed,
    WrongCredentials,
}

impl AuthFailure {
    pub fn label(self) -> &'static str {
        self.into()
    }
}

/// Checks the `Authorization` header against the configured credentials.
///
/// Only a SHA-256 digest of the expected credential is kept, and the presented one is digested too before
/// a constant-time comparison: neither content nor length of the secret leaks through timing.
#[derive(Clone)]
pub struct Verifier {
    scheme: AuthScheme,
    /// The digest stands in for the credential, so it is kept as secret as the credential itself.
    expected: SecretSlice<u8>,
}

/// Names the scheme only: the digest is not shown at all, not even redacted.
impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("scheme", &self.scheme).finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(credentials: &Credentials) -> Self {
        let expected = match credentials {
            // What Basic carries, base64-decoded: `user:password`.
            Credentials::Basic { username, password } => Sha256::new()
                .chain_update(username)
                .chain_update(b":")
                .chain_update(password.expose_secret())
                .finalize(),
            Credentials::Bearer { token } => Sha256::digest(token.expose_secret()),
        };
        Verifier { scheme: credentials.scheme(), expected: expected.to_vec().into() }
    }

    pub fn scheme(&self) -> AuthScheme {
        self.scheme
    }

    /// The `WWW-Authenticate` challenge sent with a 401.
    pub fn challenge(&self) -> HeaderValue {
        HeaderValue::from_static(match self.scheme {
            AuthScheme::Basic => "Basic realm=\"po-sync\", charset=\"UTF-8\"",
            AuthScheme::Bearer => "Bearer realm=\"po-sync\"",
        })
    }

    pub fn verify(&self, headers: &HeaderMap) -> Result<(), AuthFailure> {
        let value = headers.get(AUTHORIZATION).ok_or(AuthFailure::Missing)?;
        let value = value.to_str().map_err(|_| AuthFailure::Malformed)?.trim();
        let (scheme, credential) = value.split_once(' ').unwrap_or((value, ""));
        let credential = credential.trim();
        let presented = match self.scheme {
            AuthScheme::Basic if scheme.eq_ignore_ascii_case("basic") => {
                base64::engine::general_purpose::STANDARD.decode(credential).map_err(|_| AuthFailure::Malformed)?
            }
            AuthScheme::Bearer if scheme.eq_ignore_ascii_case("bearer") => credential.as_bytes().to_vec(),
            _ => return Err(AuthFailure::WrongScheme),
        };
        if credential.is_empty() {
            return Err(AuthFailure::Malformed);
        }
        let presented: [u8; 32] = Sha256::digest(&presented).into();
        if bool::from(presented.as_slice().ct_eq(self.expected.expose_secret())) {
            Ok(())
        } else {
            Err(AuthFailure::WrongCredentials)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(authorization).unwrap());
        headers
    }

    use po_sync_test_support::basic_authorization as basic;

    #[test]
    fn basic_accepts_only_the_exact_pair() {
        let verifier = Verifier::new(&Credentials::Basic { username: "komet".into(), password: "pa:ss wörd".into() });
        assert_eq!(verifier.verify(&headers(&basic("komet", "pa:ss wörd"))), Ok(()));
        // Scheme names are case-insensitive (RFC 9110).
        assert_eq!(verifier.verify(&headers(&basic("komet", "pa:ss wörd").replacen("Basic", "bAsIc", 1))), Ok(()));
        assert_eq!(verifier.verify(&headers(&basic("komet", "pa:ss"))), Err(AuthFailure::WrongCredentials));
        assert_eq!(verifier.verify(&headers(&basic("Komet", "pa:ss wörd"))), Err(AuthFailure::WrongCredentials));
        assert_eq!(verifier.verify(&headers(&basic("komet", "pa:ss wörd "))), Err(AuthFailure::WrongCredentials));
        assert_eq!(verifier.verify(&headers(&basic("", "komet:pa:ss wörd"))), Err(AuthFailure::WrongCredentials));
        assert_eq!(verifier.verify(&headers("Basic !!!")), Err(AuthFailure::Malformed));
        assert_eq!(verifier.verify(&headers("Basic")), Err(AuthFailure::Malformed));
        assert_eq!(verifier.verify(&headers("Bearer komet")), Err(AuthFailure::WrongScheme));
        assert_eq!(verifier.verify(&HeaderMap::new()), Err(AuthFailure::Missing));
    }

    #[test]
    fn bearer_accepts_only_the_exact_token() {
        let verifier = Verifier::new(&Credentials::Bearer { token: "t0k.en-_~+/=".into() });
        assert_eq!(verifier.verify(&headers("Bearer t0k.en-_~+/=")), Ok(()));
        assert_eq!(verifier.verify(&headers("bearer  t0k.en-_~+/= ")), Ok(()));
        assert_eq!(verifier.verify(&headers("Bearer t0k.en-_~+/")), Err(AuthFailure::WrongCredentials));
        assert_eq!(verifier.verify(&headers("Bearer")), Err(AuthFailure::Malformed));
        assert_eq!(verifier.verify(&headers(&basic("u", "t0k.en-_~+/="))), Err(AuthFailure::WrongScheme));
        assert_eq!(verifier.challenge(), "Bearer realm=\"po-sync\"");
    }

    #[test]
    fn debug_shows_no_digest() {
        let verifier = Verifier::new(&Credentials::Bearer { token: "secret".into() });
        assert_eq!(format!("{verifier:?}"), "Verifier { scheme: Bearer, .. }");
    }
}
