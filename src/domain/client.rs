//! OAuth clients as data: the metadata a client is registered with (RFC 7591 names, used for both
//! `config/clients/*.toml` and dynamic registration) and the validated [`Client`] the protocol uses.

use serde::{Deserialize, Serialize};
use url::Url;

use super::jwk::JwkSet;
use super::scope::{ScopeContext, ScopeSet};
use super::url_rules::{check_https_or_loopback, check_redirect_uri};

/// Grant types carebroker knows (RFC 6749 §4, RFC 8693).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
    TokenExchange,
}

impl GrantType {
    pub const ALL: [GrantType; 4] =
        [Self::AuthorizationCode, Self::RefreshToken, Self::ClientCredentials, Self::TokenExchange];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
            Self::TokenExchange => "urn:ietf:params:oauth:grant-type:token-exchange",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == text)
    }
}

/// RFC 7591 §2 `token_endpoint_auth_method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    None,
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
}

impl AuthMethod {
    pub const ALL: [AuthMethod; 4] = [Self::None, Self::ClientSecretBasic, Self::ClientSecretPost, Self::PrivateKeyJwt];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

/// Where a `private_key_jwt` client's public keys come from.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    Jwks(JwkSet),
    JwksUri(Url),
}

/// How a client proves who it is at the token endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientAuth {
    /// A public client: nothing to prove.
    None,
    /// `client_secret_basic` or `client_secret_post`; only a hash of the secret is held.
    Secret { method: AuthMethod, hash: String },
    /// `private_key_jwt` (RFC 7523 §2.2).
    PrivateKeyJwt(KeySource),
}

impl ClientAuth {
    pub fn method(&self) -> AuthMethod {
        match self {
            Self::None => AuthMethod::None,
            Self::Secret { method, .. } => *method,
            Self::PrivateKeyJwt(_) => AuthMethod::PrivateKeyJwt,
        }
    }
}

/// Client metadata as written in `config/clients/*.toml` and stored for registered clients.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientMetadata {
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(default = "default_auth_method")]
    pub token_endpoint_auth_method: String,
    /// `sha256$<salt>$<hash>` or `pbkdf2-sha256$<iterations>$<salt>$<hash>` (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_hash: Option<String>,
    /// Config files only: a file holding the plain secret, hashed at load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<JwkSet>,
    /// Config files only: a file holding the client's public JWK Set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub grant_types: Vec<String>,
    /// Space-separated scopes this client may be granted.
    #[serde(default)]
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_lifetime_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_lifetime_secs: Option<u32>,
    /// SMART: where an EHR launch opens this app (`?iss=&launch=` are appended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id_issued_at: Option<i64>,
    /// First-party apps may skip the consent page.
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_consent: bool,
    /// Where RP-initiated logout may send the browser afterwards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_logout_redirect_uris: Vec<String>,
    /// Present for a trusted EHR that may register launches at `POST /launch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ehr_launch: Option<EhrLaunchTrust>,
    /// Identity providers this app's users may sign in with (ids; `dev` for the development
    /// sign-in). Empty: every provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identity_providers: Vec<String>,
    /// The provider to use without showing the chooser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_identity_provider: Option<String>,
    /// RFC 9449 §5.2: every access token of this client is DPoP-bound (a proof is required).
    #[serde(default, skip_serializing_if = "is_false")]
    pub dpop_bound_access_tokens: bool,
    /// RFC 9126 §6: authorization requests must be pushed to `/par` first.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_pushed_authorization_requests: bool,
    /// RFC 8693: the subject token types this client may exchange (`token_exchange` grant).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_exchange_subject_token_types: Vec<String>,
    /// OpenID Connect Dynamic Client Registration §2: how its ID tokens are signed, `RS256`
    /// (the default, which every OpenID client supports) or `ES256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token_signed_response_alg: Option<String>,
}

/// The ID-token signing algorithms a client may register.
pub const ID_TOKEN_ALGS: [&str; 2] = ["RS256", "ES256"];

/// Subject (and actor) token types carebroker can exchange (RFC 8693 §3).
pub const EXCHANGEABLE_TOKEN_TYPES: [&str; 4] = [
    "urn:ietf:params:oauth:token-type:access_token",
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:saml2",
    "urn:ietf:params:oauth:token-type:jwt",
];

fn is_false(value: &bool) -> bool {
    !*value
}

/// What a trusted EHR may vouch for when it registers a launch. `"*"` in a list allows any value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EhrLaunchTrust {
    /// Client ids of the apps this EHR may open.
    pub apps: Vec<String>,
    /// ODS codes of organisations whose users it may assert.
    pub orgs: Vec<String>,
    /// National RBAC role codes it may assert.
    pub role_codes: Vec<String>,
    /// User subjects it may assert (usually `["*"]`).
    #[serde(default = "any")]
    pub subjects: Vec<String>,
    /// Skip the consent page for launches from this EHR (the EHR is where the user consents).
    #[serde(default = "yes")]
    pub skip_consent: bool,
    /// The assurance (0-3) the EHR's sign-in stands for (a smartcard session is 3).
    #[serde(default = "two")]
    pub assurance: u8,
}

fn two() -> u8 {
    2
}

fn any() -> Vec<String> {
    vec!["*".to_owned()]
}

fn yes() -> bool {
    true
}

impl EhrLaunchTrust {
    fn allows(list: &[String], value: &str) -> bool {
        list.iter().any(|v| v == "*" || v == value)
    }
    pub fn may_open(&self, app: &str) -> bool {
        Self::allows(&self.apps, app)
    }
    pub fn may_assert_org(&self, org: &str) -> bool {
        Self::allows(&self.orgs, org)
    }
    pub fn may_assert_role(&self, role: &str) -> bool {
        Self::allows(&self.role_codes, role)
    }
    pub fn may_assert_subject(&self, subject: &str) -> bool {
        Self::allows(&self.subjects, subject)
    }
}

fn default_auth_method() -> String {
    "none".to_owned()
}

/// One thing wrong with client metadata: the field and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

impl FieldProblem {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// The longest access-token lifetime carebroker will issue (DESIGN.md: ≤ 60 minutes).
pub const MAX_ACCESS_TOKEN_LIFETIME_SECS: u32 = 3600;

/// A validated client.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub id: String,
    pub name: String,
    pub auth: ClientAuth,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    /// What this client may ever be granted.
    pub scope: ScopeSet,
    pub access_token_lifetime_secs: Option<u32>,
    pub refresh_token_lifetime_secs: Option<u32>,
    pub launch_uri: Option<String>,
    pub skip_consent: bool,
    pub post_logout_redirect_uris: Vec<String>,
    pub ehr_launch: Option<EhrLaunchTrust>,
    /// Web origins of the redirect URIs (for CORS at the token endpoint).
    pub origins: Vec<String>,
    pub identity_providers: Vec<String>,
    pub default_identity_provider: Option<String>,
    /// Every access token must be DPoP-bound.
    pub dpop_bound_access_tokens: bool,
    /// Authorization requests only through `/par`.
    pub require_pushed_authorization_requests: bool,
    /// Subject token types it may exchange.
    pub token_exchange_subject_token_types: Vec<String>,
    /// Its ID tokens are signed ES256 rather than RS256.
    pub id_token_es256: bool,
    /// The metadata it was built from (stored, and echoed by registration).
    pub metadata: ClientMetadata,
}

impl Client {
    pub fn allows_grant(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }

    pub fn is_public(&self) -> bool {
        self.auth == ClientAuth::None
    }
}

/// A client id: 1-128 characters from `A-Z a-z 0-9 . _ ~ -` (no `:` so HTTP Basic stays unambiguous).
pub fn is_valid_client_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
}

impl ClientMetadata {
    /// Checks the metadata and builds the [`Client`], or returns every problem found.
    /// File references (`*_file`) must already have been resolved by the caller.
    pub fn validate(&self) -> Result<Client, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        if !is_valid_client_id(&self.client_id) {
            problems.push(FieldProblem::new("client_id", "must be 1-128 characters of A-Z a-z 0-9 . _ ~ -"));
        }
        for (field, value) in [("client_secret_file", &self.client_secret_file), ("jwks_file", &self.jwks_file)] {
            if value.is_some() {
                problems.push(FieldProblem::new(field, "is only read from configuration files"));
            }
        }

        let method = AuthMethod::parse(&self.token_endpoint_auth_method);
        if method.is_none() {
            problems.push(FieldProblem::new(
                "token_endpoint_auth_method",
                format!(
                    "`{}` is not one of none, client_secret_basic, client_secret_post, private_key_jwt",
                    self.token_endpoint_auth_method
                ),
            ));
        }
        let auth = method.and_then(|m| self.check_auth(m, &mut problems));

        let mut grant_types = Vec::new();
        for (i, text) in self.grant_types.iter().enumerate() {
            match GrantType::parse(text) {
                Some(g) if !grant_types.contains(&g) => grant_types.push(g),
                Some(_) => {
                    problems.push(FieldProblem::new(format!("grant_types[{i}]"), format!("`{text}` is listed twice")))
                }
                None => problems.push(FieldProblem::new(
                    format!("grant_types[{i}]"),
                    format!("`{text}` is not a supported grant type"),
                )),
            }
        }
        if self.grant_types.is_empty() && self.ehr_launch.is_none() {
            problems.push(FieldProblem::new("grant_types", "must list at least one grant type"));
        }
        if grant_types.contains(&GrantType::ClientCredentials) && method != Some(AuthMethod::PrivateKeyJwt) {
            problems.push(FieldProblem::new(
                "grant_types",
                "client_credentials (SMART Backend Services) needs token_endpoint_auth_method = private_key_jwt",
            ));
        }
        for (i, kind) in self.token_exchange_subject_token_types.iter().enumerate() {
            if !EXCHANGEABLE_TOKEN_TYPES.contains(&kind.as_str()) {
                problems.push(FieldProblem::new(
                    format!("token_exchange_subject_token_types[{i}]"),
                    format!("`{kind}` is not one of {}", EXCHANGEABLE_TOKEN_TYPES.join(", ")),
                ));
            }
        }
        if grant_types.contains(&GrantType::TokenExchange) && self.token_exchange_subject_token_types.is_empty() {
            problems.push(FieldProblem::new(
                "token_exchange_subject_token_types",
                "token-exchange needs at least one subject token type",
            ));
        }
        if grant_types.contains(&GrantType::AuthorizationCode) && self.redirect_uris.is_empty() {
            problems.push(FieldProblem::new("redirect_uris", "authorization_code needs at least one redirect URI"));
        }
        if grant_types.contains(&GrantType::RefreshToken) && !grant_types.contains(&GrantType::AuthorizationCode) {
            problems.push(FieldProblem::new("grant_types", "refresh_token is only issued with authorization_code"));
        }
        for (i, uri) in self.redirect_uris.iter().enumerate() {
            if let Err(why) = check_redirect_uri(uri) {
                problems.push(FieldProblem::new(format!("redirect_uris[{i}]"), why));
            }
            if self.redirect_uris[..i].contains(uri) {
                problems.push(FieldProblem::new(format!("redirect_uris[{i}]"), "is listed twice"));
            }
        }
        for (i, uri) in self.post_logout_redirect_uris.iter().enumerate() {
            if let Err(why) = check_redirect_uri(uri) {
                problems.push(FieldProblem::new(format!("post_logout_redirect_uris[{i}]"), why));
            }
        }
        if self.ehr_launch.is_some() && method.is_none_or(|m| m == AuthMethod::None) {
            problems.push(FieldProblem::new("ehr_launch", "only a confidential client may register launches"));
        }
        if let Some(uri) = &self.launch_uri {
            if let Err(why) = check_https_or_loopback(uri) {
                problems.push(FieldProblem::new("launch_uri", why));
            }
        }

        let scope = match ScopeSet::parse(&self.scope) {
            Ok(scope) => scope,
            Err(err) => {
                problems.push(FieldProblem::new("scope", err.to_string()));
                ScopeSet::default()
            }
        };
        let system_scopes = scope.resources().any(|r| r.context == ScopeContext::System);
        if system_scopes
            && !grant_types.contains(&GrantType::ClientCredentials)
            && !grant_types.contains(&GrantType::TokenExchange)
        {
            problems
                .push(FieldProblem::new("scope", "system/ scopes need the client_credentials or token-exchange grant"));
        }

        for (field, value) in [
            ("access_token_lifetime_secs", self.access_token_lifetime_secs),
            ("refresh_token_lifetime_secs", self.refresh_token_lifetime_secs),
        ] {
            if value == Some(0) {
                problems.push(FieldProblem::new(field, "must be more than zero"));
            }
        }
        if let Some(alg) = self.id_token_signed_response_alg.as_deref().filter(|a| !ID_TOKEN_ALGS.contains(a)) {
            problems.push(FieldProblem::new(
                "id_token_signed_response_alg",
                format!("`{alg}` is not supported: use one of {}", ID_TOKEN_ALGS.join(", ")),
            ));
        }
        if self.access_token_lifetime_secs.is_some_and(|s| s > MAX_ACCESS_TOKEN_LIFETIME_SECS) {
            problems.push(FieldProblem::new(
                "access_token_lifetime_secs",
                format!("must be at most {MAX_ACCESS_TOKEN_LIFETIME_SECS}"),
            ));
        }

        match auth {
            Some(auth) if problems.is_empty() => Ok(Client {
                id: self.client_id.clone(),
                name: self.client_name.clone().unwrap_or_else(|| self.client_id.clone()),
                auth,
                redirect_uris: self.redirect_uris.clone(),
                grant_types,
                scope,
                access_token_lifetime_secs: self.access_token_lifetime_secs,
                refresh_token_lifetime_secs: self.refresh_token_lifetime_secs,
                launch_uri: self.launch_uri.clone(),
                skip_consent: self.skip_consent,
                post_logout_redirect_uris: self.post_logout_redirect_uris.clone(),
                ehr_launch: self.ehr_launch.clone(),
                origins: web_origins(&self.redirect_uris),
                identity_providers: self.identity_providers.clone(),
                default_identity_provider: self.default_identity_provider.clone(),
                dpop_bound_access_tokens: self.dpop_bound_access_tokens,
                require_pushed_authorization_requests: self.require_pushed_authorization_requests,
                token_exchange_subject_token_types: self.token_exchange_subject_token_types.clone(),
                id_token_es256: self.id_token_signed_response_alg.as_deref() == Some("ES256"),
                metadata: self.clone(),
            }),
            _ => Err(problems),
        }
    }

    fn check_auth(&self, method: AuthMethod, problems: &mut Vec<FieldProblem>) -> Option<ClientAuth> {
        let has_keys = self.jwks.is_some() || self.jwks_uri.is_some();
        match method {
            AuthMethod::None => {
                if self.client_secret_hash.is_some() || has_keys {
                    problems.push(FieldProblem::new(
                        "token_endpoint_auth_method",
                        "a public client (none) has no secret and no keys",
                    ));
                    return None;
                }
                Some(ClientAuth::None)
            }
            AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost => {
                if has_keys {
                    problems.push(FieldProblem::new("jwks", "a client_secret client has no keys"));
                }
                match &self.client_secret_hash {
                    Some(hash) if is_secret_hash(hash) => Some(ClientAuth::Secret { method, hash: hash.clone() }),
                    Some(_) => {
                        problems.push(FieldProblem::new(
                            "client_secret_hash",
                            "is not a `sha256$…` or `pbkdf2-sha256$…` hash",
                        ));
                        None
                    }
                    None => {
                        problems.push(FieldProblem::new("client_secret_hash", "a client_secret client needs a secret"));
                        None
                    }
                }
            }
            AuthMethod::PrivateKeyJwt => {
                if self.client_secret_hash.is_some() {
                    problems.push(FieldProblem::new("client_secret_hash", "a private_key_jwt client has no secret"));
                }
                match (&self.jwks, &self.jwks_uri) {
                    (Some(_), Some(_)) => {
                        problems.push(FieldProblem::new("jwks", "give jwks or jwks_uri, not both"));
                        None
                    }
                    (None, None) => {
                        problems.push(FieldProblem::new("jwks", "a private_key_jwt client needs jwks or jwks_uri"));
                        None
                    }
                    (Some(set), None) => {
                        check_jwks(set, problems).then(|| ClientAuth::PrivateKeyJwt(KeySource::Jwks(set.clone())))
                    }
                    (None, Some(uri)) => match check_https_or_loopback(uri) {
                        Ok(url) => Some(ClientAuth::PrivateKeyJwt(KeySource::JwksUri(url))),
                        Err(why) => {
                            problems.push(FieldProblem::new("jwks_uri", why));
                            None
                        }
                    },
                }
            }
        }
    }
}

/// `scheme://host[:port]` of each http(s) URI, without duplicates.
fn web_origins(uris: &[String]) -> Vec<String> {
    let mut origins: Vec<String> = Vec::new();
    for uri in uris {
        if let Ok(url) = Url::parse(uri) {
            if matches!(url.scheme(), "http" | "https") {
                let origin = url.origin().ascii_serialization();
                if !origins.contains(&origin) {
                    origins.push(origin);
                }
            }
        }
    }
    origins
}

/// Structural checks on a client's JWK Set; whether each key parses is checked by `token::jose`.
fn check_jwks(set: &JwkSet, problems: &mut Vec<FieldProblem>) -> bool {
    let before = problems.len();
    if set.keys.is_empty() {
        problems.push(FieldProblem::new("jwks.keys", "must hold at least one key"));
    }
    for (i, key) in set.keys.iter().enumerate() {
        let field = format!("jwks.keys[{i}]");
        if key.has_private_material() {
            problems.push(FieldProblem::new(&field, "holds private key material; register public keys only"));
        }
        if key.kid.as_deref().is_none_or(str::is_empty) {
            problems.push(FieldProblem::new(&field, "needs a `kid`"));
        }
        let members_ok = match key.kty.as_str() {
            "RSA" => key.n.is_some() && key.e.is_some(),
            "EC" => matches!(key.crv.as_deref(), Some("P-256" | "P-384")) && key.x.is_some() && key.y.is_some(),
            _ => false,
        };
        if !members_ok {
            problems.push(FieldProblem::new(
                &field,
                "must be an RSA key (`n`, `e`) or an EC key on P-256 or P-384 (`crv`, `x`, `y`)",
            ));
        }
    }
    problems.len() == before
}

fn is_secret_hash(text: &str) -> bool {
    let parts: Vec<&str> = text.split('$').collect();
    matches!(parts.as_slice(), ["sha256", s, h] if !s.is_empty() && !h.is_empty())
        || matches!(parts.as_slice(), ["pbkdf2-sha256", n, s, h] if n.parse::<u32>().is_ok_and(|n| n > 0) && !s.is_empty() && !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> ClientMetadata {
        ClientMetadata {
            client_id: "backend".into(),
            token_endpoint_auth_method: "private_key_jwt".into(),
            jwks_uri: Some("https://backend.example/jwks.json".into()),
            grant_types: vec!["client_credentials".into()],
            scope: "system/CarePlan.rs".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_backend_client_validates() {
        let client = backend().validate().expect("valid");
        assert_eq!(client.auth.method(), AuthMethod::PrivateKeyJwt);
        assert!(client.allows_grant(GrantType::ClientCredentials));
        assert!(!client.allows_grant(GrantType::AuthorizationCode));
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let meta = ClientMetadata {
            client_id: "bad id".into(),
            token_endpoint_auth_method: "client_secret_basic".into(),
            grant_types: vec!["client_credentials".into(), "implicit".into()],
            redirect_uris: vec!["http://evil.example/cb".into()],
            scope: "system/CarePlan.rs patient/Foo.xx".into(),
            access_token_lifetime_secs: Some(7200),
            ..Default::default()
        };
        let problems = meta.validate().expect_err("invalid");
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        for expected in [
            "client_id",
            "client_secret_hash",
            "grant_types[1]",
            "grant_types",
            "redirect_uris[0]",
            "scope",
            "access_token_lifetime_secs",
        ] {
            assert!(fields.contains(&expected), "{expected} missing from {fields:?}");
        }
    }

    #[test]
    fn private_key_jwt_needs_exactly_one_key_source() {
        let mut meta = backend();
        meta.jwks_uri = None;
        assert!(meta.validate().is_err());
        meta.jwks = Some(JwkSet::default());
        let problems = meta.validate().expect_err("empty set");
        assert_eq!(problems[0].field, "jwks.keys");
    }

    #[test]
    fn system_scopes_need_a_system_grant() {
        let meta = ClientMetadata {
            client_id: "app".into(),
            token_endpoint_auth_method: "none".into(),
            grant_types: vec!["authorization_code".into()],
            redirect_uris: vec!["https://app.example/cb".into()],
            scope: "system/*.rs".into(),
            ..Default::default()
        };
        let problems = meta.validate().expect_err("system scope on a user app");
        assert_eq!(problems[0].field, "scope");
    }
}
