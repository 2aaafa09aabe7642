//! SAML 2.0 identity providers (trusts, care homes, councils): carebroker as a service provider
//! built on `samael` with xmlsec. AuthnRequest by HTTP-Redirect (signed when configured), the
//! Response by HTTP-POST at `/saml/acs`.
//!
//! A response is accepted only when xmlsec verifies a signature by a certificate from the
//! provider's metadata, and only the element that signature covers is read (samael reduces the
//! document to its verified content, which defeats signature wrapping). Before that, documents with
//! a DTD (entity expansion, XXE) or comments (NameID truncation) are refused outright. After it,
//! carebroker checks against its own clock: Destination, Recipient, Audience, Issuer,
//! `InResponseTo` (a request it sent, consumed once by the caller), IssueInstant, NotBefore and
//! NotOnOrAfter with bounded skew; and it never accepts an assertion ID twice.
//!
//! A partner app may also present a bare signed assertion in token exchange (RFC 8693 `saml2`,
//! base64url) when the provider file says `accept_exchange`. It gets the same verification, with
//! the token endpoint as the bearer confirmation's Recipient (as RFC 7522 §3 has it for SAML
//! bearer grants) and no request of ours to answer; an assertion used at the ACS cannot be
//! exchanged, nor the other way round.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use parking_lot::Mutex;
use samael::crypto::{AllowedSignatureAlgorithm, CertificateDer};
use samael::metadata::{EntityDescriptor, HTTP_REDIRECT_BINDING};
use samael::schema::Assertion;
use samael::service_provider::ServiceProvider;
use samael::traits::ToXml;

use super::SignInError;
use super::oidc::RoundTrip;
use super::xml::{SAML2, SAML2_SUCCESS, SAML2P, child, child_text, has_dtd, is};
use crate::clock::Clock;
use crate::config::Config;
use crate::config::idps::{IdpConfig, IdpKind};
use crate::domain::identity::{Identity, is_fhir_user_reference};
use crate::keyspaces::SAML_ASSERTIONS;
use crate::store::EphemeralStore;
use crate::token::random_token;

/// The largest `SAMLResponse` accepted (base64).
const MAX_RESPONSE_BYTES: usize = 512 * 1024;

/// carebroker as one SAML service provider.
pub struct SpSettings {
    pub entity_id: String,
    pub acs_url: String,
    pub slo_url: String,
    /// Where exchanged assertions must be confirmed to: the token endpoint.
    pub token_url: String,
    pub(super) key: Option<PKey<Private>>,
    cert_der: Option<Vec<u8>>,
}

impl std::fmt::Debug for SpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpSettings").field("entity_id", &self.entity_id).finish_non_exhaustive()
    }
}

impl SpSettings {
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let sp = &config.federation.saml;
        let (key, cert_der) = match (&sp.key_file, &sp.cert_file) {
            (Some(key_file), Some(cert_file)) => {
                let key_pem =
                    std::fs::read(key_file).map_err(|e| format!("cannot read `{}`: {e}", key_file.display()))?;
                let key = PKey::private_key_from_pem(&key_pem).map_err(|e| format!("`{}`: {e}", key_file.display()))?;
                let cert_pem =
                    std::fs::read(cert_file).map_err(|e| format!("cannot read `{}`: {e}", cert_file.display()))?;
                let cert = X509::from_pem(&cert_pem)
                    .and_then(|c| c.to_der())
                    .map_err(|_| format!("`{}` holds no PEM certificate", cert_file.display()))?;
                (Some(key), Some(cert))
            }
            (None, None) => (None, None),
            _ => return Err("federation.saml needs key_file and cert_file together".into()),
        };
        Ok(Self {
            entity_id: sp.entity_id.clone().unwrap_or_else(|| config.endpoint("/saml/metadata")),
            acs_url: config.endpoint("/saml/acs"),
            slo_url: config.endpoint("/saml/slo"),
            token_url: config.endpoint("/token"),
            key,
            cert_der,
        })
    }

    fn service_provider(&self, idp_metadata: EntityDescriptor) -> ServiceProvider {
        ServiceProvider {
            entity_id: Some(self.entity_id.clone()),
            certificate: self.cert_der.clone().map(Into::into),
            metadata_url: Some(self.entity_id.clone()),
            acs_url: Some(self.acs_url.clone()),
            slo_url: Some(self.slo_url.clone()),
            idp_metadata,
            authn_name_id_format: None,
            allow_idp_initiated: false,
            // carebroker checks every time itself, against its own clock (see `check_times`).
            max_issue_delay: chrono::Duration::days(36_500),
            max_clock_skew: chrono::Duration::days(36_500),
            ..ServiceProvider::default()
        }
    }

    /// Our metadata document, for `/saml/metadata` (made per request: it carries `validUntil`).
    pub fn metadata_xml(&self) -> Result<String, String> {
        let sp = self.service_provider(EntityDescriptor::default());
        let mut descriptor = sp.metadata().map_err(|e| e.to_string())?;
        for role in descriptor.sp_sso_descriptors.iter_mut().flatten() {
            // we sign every AuthnRequest when we have a key (samael always says false)
            role.authn_requests_signed = Some(self.key.is_some());
            // `/saml/slo` speaks HTTP-Redirect (samael advertises HTTP-POST)
            for endpoint in role.single_logout_services.iter_mut().flatten() {
                endpoint.binding = HTTP_REDIRECT_BINDING.to_owned();
            }
        }
        descriptor.to_string().map_err(|e| format!("{e:?}"))
    }
}

fn algorithm(name: &str) -> Option<AllowedSignatureAlgorithm> {
    Some(match name {
        "rsa-sha256" => AllowedSignatureAlgorithm::RsaSha256,
        "rsa-sha384" => AllowedSignatureAlgorithm::RsaSha384,
        "rsa-sha512" => AllowedSignatureAlgorithm::RsaSha512,
        "ecdsa-sha256" => AllowedSignatureAlgorithm::EcdsaSha256,
        "ecdsa-sha384" => AllowedSignatureAlgorithm::EcdsaSha384,
        "ecdsa-sha512" => AllowedSignatureAlgorithm::EcdsaSha512,
        _ => return None,
    })
}

/// One SAML identity provider.
pub struct SamlIdp {
    pub config: IdpConfig,
    pub(super) sp: Arc<SpSettings>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    algorithms: Vec<AllowedSignatureAlgorithm>,
    /// The checked metadata as a samael service provider, and when it was fetched.
    trusted: Mutex<Option<(Arc<Trusted>, i64)>>,
}

/// A provider's checked metadata, built once per fetch: samael's service provider for it and the
/// signing certificates it names (never empty).
pub(super) struct Trusted {
    pub sp: ServiceProvider,
    /// The same trust for assertions presented in token exchange: confirmed to the token
    /// endpoint, answering no request of ours.
    exchange: ServiceProvider,
    pub certs: Vec<CertificateDer>,
}

impl std::fmt::Debug for SamlIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlIdp")
            .field("id", &self.config.id)
            .field("entity_id", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

impl SamlIdp {
    /// Builds the provider; metadata from a file is read and checked now.
    pub fn new(config: IdpConfig, sp: Arc<SpSettings>, clock: Arc<dyn Clock>) -> Result<Self, String> {
        if config.saml.sign_requests && sp.key.is_none() {
            return Err("saml.sign_requests needs federation.saml.key_file and cert_file".into());
        }
        let http = crate::outbound::client_builder(Duration::from_secs(10)).build().map_err(|e| e.to_string())?;
        let algorithms = config.saml.signature_algorithms.iter().filter_map(|a| algorithm(a)).collect();
        let idp = Self { config, sp, http, clock, algorithms, trusted: Mutex::new(None) };
        if let Some(file) = &idp.config.saml.metadata_file {
            let xml = std::fs::read_to_string(file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
            let trusted = idp.trust(&xml)?;
            *idp.trusted.lock() = Some((Arc::new(trusted), i64::MAX));
        }
        Ok(idp)
    }

    /// Checks metadata: ours to use only if it names the configured entity and a signing
    /// certificate (without one samael would verify nothing).
    fn trust(&self, xml: &str) -> Result<Trusted, String> {
        if has_dtd(xml) {
            return Err("the metadata carries a document type declaration".into());
        }
        let descriptor: EntityDescriptor = xml.parse().map_err(|e| format!("the metadata is not readable: {e}"))?;
        let entity_id = &self.config.issuer;
        if descriptor.entity_id.as_deref() != Some(entity_id.as_str()) {
            return Err(format!(
                "the metadata is for `{}`, not the configured `{entity_id}`",
                descriptor.entity_id.as_deref().unwrap_or("?")
            ));
        }
        let mut sp = self.sp.service_provider(descriptor);
        sp.allowed_signature_algorithms = Some(self.algorithms.clone());
        match sp.idp_signing_certs() {
            Ok(Some(certs)) if !certs.is_empty() => {
                let exchange = ServiceProvider {
                    acs_url: Some(self.sp.token_url.clone()),
                    allow_idp_initiated: true,
                    ..sp.clone()
                };
                Ok(Trusted { sp, exchange, certs })
            }
            Ok(_) => Err("the metadata names no signing certificate".into()),
            Err(e) => Err(format!("the metadata's certificate is unreadable: {e}")),
        }
    }

    /// The provider's checked metadata: from its file, or its URL cached for `discovery_cache_secs`.
    pub(super) async fn trusted(&self) -> Result<Arc<Trusted>, SignInError> {
        let now = self.clock.now();
        if let Some((trusted, at)) = self.trusted.lock().clone() {
            if at == i64::MAX || now - at < self.config.discovery_cache_secs as i64 {
                return Ok(trusted);
            }
        }
        let url = self.config.saml.metadata_url.as_deref().unwrap_or_default();
        let response = self.http.get(url).send().await.map_err(SignInError::upstream)?;
        if !response.status().is_success() {
            return Err(SignInError::Upstream(format!(
                "the metadata URL answered HTTP {}",
                response.status().as_u16()
            )));
        }
        let xml = response.text().await.map_err(SignInError::upstream)?;
        let trusted = Arc::new(self.trust(&xml).map_err(SignInError::Upstream)?);
        *self.trusted.lock() = Some((trusted.clone(), now));
        Ok(trusted)
    }

    /// The URL to send the browser to (an AuthnRequest by HTTP-Redirect) and what to remember.
    pub async fn begin(&self, force_login: bool) -> Result<(String, RoundTrip), SignInError> {
        let trusted = self.trusted().await?;
        let sp = &trusted.sp;
        let sso = sp.sso_binding_location(HTTP_REDIRECT_BINDING).ok_or_else(|| {
            SignInError::Upstream("the provider's metadata has no HTTP-Redirect SingleSignOnService".into())
        })?;
        let mut request = sp.make_authentication_request(&sso).map_err(SignInError::upstream)?;
        // An NCName with 144 random bits (samael's own ids have 32).
        request.id = format!("_{}", random_token(24));
        request.force_authn = Some(self.config.saml.force_authn || force_login);
        let trip =
            RoundTrip { state: random_token(24), saml_request_id: Some(request.id.clone()), ..RoundTrip::default() };
        // Signed whenever we have a key (our metadata says so); `sign_requests` makes the key required.
        let url = match &self.sp.key {
            Some(key) => request.signed_redirect(&trip.state, key),
            None => request.redirect(&trip.state),
        }
        .map_err(SignInError::upstream)?
        .ok_or_else(|| SignInError::Upstream("no SingleSignOnService".into()))?;
        Ok((url.to_string(), trip))
    }

    /// Verifies the `SAMLResponse` answering `trip` and returns the identity it asserts.
    pub async fn complete(
        &self,
        trip: &RoundTrip,
        encoded: &str,
        replays: &dyn EphemeralStore,
        now: i64,
    ) -> Result<Identity, SignInError> {
        let refused = |why: String| SignInError::IdToken(why);
        let request_id =
            trip.saml_request_id.clone().ok_or_else(|| refused("this sign-in was not a SAML request".into()))?;
        let xml = decode(encoded, &base64::engine::general_purpose::STANDARD)?;
        let (destination, status) = outer_facts(&xml)?;
        if let Some((code, message)) = status {
            return Err(SignInError::Provider { code, description: message });
        }
        if destination.as_deref().is_some_and(|d| d != self.sp.acs_url) {
            return Err(refused(format!(
                "the response is addressed to `{}`, not to us",
                destination.unwrap_or_default()
            )));
        }
        let assertion = self
            .trusted()
            .await?
            .sp
            .parse_xml_response(&xml, Some(&[request_id.as_str()]))
            .map_err(|e| refused(format!("the response failed verification: {e}")))?;
        self.check_assertion(&assertion, &self.sp.acs_url, now)?;
        self.first_use(&assertion, replays, now).await?;
        self.identity(&assertion, now)
    }

    /// Verifies a bare signed assertion a partner app presents in token exchange (base64url, RFC
    /// 8693 `saml2`) and returns the identity it asserts. The caller has checked that the
    /// provider accepts exchange.
    pub async fn exchanged(
        &self,
        encoded: &str,
        replays: &dyn EphemeralStore,
        now: i64,
    ) -> Result<Identity, SignInError> {
        let xml = decode(encoded, &URL_SAFE_ANY_PADDING)?;
        lone_assertion(&xml)?;
        let assertion = self
            .trusted()
            .await?
            .exchange
            .parse_xml_response(&xml, None)
            .map_err(|e| SignInError::IdToken(format!("the assertion failed verification: {e}")))?;
        self.check_assertion(&assertion, &self.sp.token_url, now)?;
        self.first_use(&assertion, replays, now).await?;
        self.identity(&assertion, now)
    }

    /// Never the same assertion twice, at the ACS or in exchange (kept until it could no longer
    /// be valid anyway).
    async fn first_use(
        &self,
        assertion: &Assertion,
        replays: &dyn EphemeralStore,
        now: i64,
    ) -> Result<(), SignInError> {
        let until = assertion_expiry(assertion).unwrap_or(now) + self.config.saml.max_skew_secs;
        let ttl = Duration::from_secs(u64::try_from(until - now).unwrap_or(0).max(60));
        let fresh = SAML_ASSERTIONS
            .first_use(replays, &format!("{}:{}", self.config.id, assertion.id), ttl)
            .await
            .map_err(SignInError::upstream)?;
        if !fresh {
            return Err(SignInError::IdToken("this assertion was already used".into()));
        }
        Ok(())
    }

    /// The checks samael leaves to us or makes against the wall clock; the bearer confirmation
    /// must name `recipient`.
    fn check_assertion(&self, assertion: &Assertion, recipient: &str, now: i64) -> Result<(), SignInError> {
        let refused = |why: &str| Err(SignInError::IdToken(why.to_owned()));
        let skew = self.config.saml.max_skew_secs;
        if assertion.issuer.value.as_deref() != Some(self.config.issuer.as_str()) {
            return refused("the assertion was issued by another provider");
        }
        let issued = assertion.issue_instant.timestamp();
        if issued > now + skew || issued < now - self.config.saml.max_issue_delay_secs - skew {
            return refused("the assertion was not issued just now (IssueInstant)");
        }
        let Some(conditions) = &assertion.conditions else { return refused("the assertion has no Conditions") };
        if conditions.not_before.is_some_and(|t| t.timestamp() > now + skew) {
            return refused("the assertion is not valid yet (NotBefore)");
        }
        if conditions.not_on_or_after.is_some_and(|t| t.timestamp() <= now - skew) {
            return refused("the assertion has expired (NotOnOrAfter)");
        }
        let restrictions = conditions.audience_restrictions.as_deref().unwrap_or_default();
        if restrictions.is_empty() || !restrictions.iter().all(|r| r.audience.iter().any(|a| *a == self.sp.entity_id)) {
            return refused("the assertion is not for this service (Audience)");
        }
        let confirmations =
            assertion.subject.as_ref().and_then(|s| s.subject_confirmations.as_deref()).unwrap_or_default();
        let bearer_valid = confirmations.iter().filter_map(|c| c.subject_confirmation_data.as_ref()).any(|data| {
            data.not_on_or_after.is_some_and(|t| t.timestamp() > now - skew)
                && data.not_before.is_none_or(|t| t.timestamp() <= now + skew)
                && data.recipient.as_deref() == Some(recipient)
        });
        if !bearer_valid {
            return refused("the assertion's subject confirmation has expired or is for someone else");
        }
        if assertion.authn_statements.as_deref().unwrap_or_default().is_empty() {
            return refused("the assertion does not say the user signed in (no AuthnStatement)");
        }
        Ok(())
    }

    fn identity(&self, assertion: &Assertion, now: i64) -> Result<Identity, SignInError> {
        let map = &self.config.claims;
        let attributes: Vec<_> =
            assertion.attribute_statements.iter().flatten().flat_map(|s| s.attributes.iter()).collect();
        let values = |name: &str| -> Vec<String> {
            attributes
                .iter()
                .filter(|a| a.name.as_deref() == Some(name) || a.friendly_name.as_deref() == Some(name))
                .flat_map(|a| a.values.iter().filter_map(|v| v.value.clone()))
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .collect()
        };
        let first = |name: &str| values(name).into_iter().next();
        let issued_name_id = assertion.subject.as_ref().and_then(|s| s.name_id.as_ref());
        let name_id = issued_name_id.map(|n| n.value.trim().to_owned());
        let subject = match map.subject.as_str() {
            "sub" | "NameID" | "" => name_id,
            attribute => first(attribute),
        }
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .ok_or_else(|| SignInError::Rejected("the provider named no user (NameID)".into()))?;
        let fhir_user =
            first(&map.fhir_user).or_else(|| map.fhir_user_template.as_ref().map(|t| t.replace("{sub}", &subject)));
        if let Some(reference) = fhir_user.as_deref().filter(|r| !is_fhir_user_reference(r)) {
            return Err(SignInError::Rejected(format!(
                "the provider's fhirUser `{reference}` is not a FHIR user reference"
            )));
        }
        let authn = assertion.authn_statements.as_deref().unwrap_or_default().first();
        Ok(Identity {
            provider: self.config.id.clone(),
            source: IdpKind::Saml.as_str().into(),
            assurance: self.config.saml.assurance,
            issuer: Some(self.config.issuer.clone()),
            subject,
            name: first(&map.name),
            fhir_user,
            org: first(&map.org).or_else(|| map.default_org.clone()),
            role_codes: values(&map.roles),
            activity_codes: values(&map.activities),
            amr: vec!["saml".into()],
            auth_time: authn.and_then(|a| a.authn_instant).map_or(now, |t| t.timestamp()),
            upstream_session: authn.and_then(|a| a.session_index.clone()),
            upstream_name_id: issued_name_id.map(|n| (n.value.clone(), n.format.clone())),
            ..Default::default()
        })
    }
}

/// The latest instant the assertion could be valid.
fn assertion_expiry(assertion: &Assertion) -> Option<i64> {
    let confirmations = assertion.subject.as_ref().and_then(|s| s.subject_confirmations.as_deref()).unwrap_or_default();
    confirmations
        .iter()
        .filter_map(|c| c.subject_confirmation_data.as_ref()?.not_on_or_after)
        .chain(assertion.conditions.as_ref().and_then(|c| c.not_on_or_after))
        .map(|t| t.timestamp())
        .max()
}

/// Base64url with or without padding, as exchanged assertions come.
const URL_SAFE_ANY_PADDING: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Base64 → XML text, refusing what is never accepted: oversize, a DTD (entity expansion, XXE),
/// comments (which truncate a NameID on some readers without breaking the signature).
fn decode(encoded: &str, engine: &base64::engine::GeneralPurpose) -> Result<String, SignInError> {
    let refused = |why: &str| Err(SignInError::IdToken(why.to_owned()));
    if encoded.len() > MAX_RESPONSE_BYTES {
        return refused("the response is too large");
    }
    let compact: String = encoded.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let Ok(bytes) = engine.decode(compact) else {
        return refused("the SAML message is not base64 of the expected alphabet");
    };
    let Ok(xml) = String::from_utf8(bytes) else { return refused("the response is not UTF-8 XML") };
    if has_dtd(&xml) {
        return refused("the response carries a document type declaration, which is never accepted");
    }
    if xml.contains("<!--") {
        return refused("the response contains XML comments, which are never accepted");
    }
    Ok(xml)
}

/// The checks a `SAMLResponse` meets before any XML signature work (size, encoding, no DTD, no
/// comments, well-formed, one assertion): what an unauthenticated sender can reach. For fuzzing.
pub fn precheck_response(encoded: &str) -> Result<Option<String>, SignInError> {
    let xml = decode(encoded, &base64::engine::general_purpose::STANDARD)?;
    outer_facts(&xml).map(|(destination, _)| destination)
}

/// The issuer a base64url assertion names, read before verification only to pick who must then
/// verify it.
pub fn unverified_assertion_issuer(encoded: &str) -> Option<String> {
    let xml = decode(encoded, &URL_SAFE_ANY_PADDING).ok()?;
    let doc = roxmltree::Document::parse(&xml).ok()?;
    let root = doc.root_element();
    is(root, SAML2, "Assertion").then(|| child_text(root, SAML2, "Issuer")).flatten().map(|s| s.trim().to_owned())
}

/// A presented assertion is one `saml:Assertion` and nothing else: no Response around it, no
/// second assertion inside (every wrapping attack needs one).
fn lone_assertion(xml: &str) -> Result<(), SignInError> {
    let doc = roxmltree::Document::parse(xml)
        .map_err(|_| SignInError::IdToken("the assertion is not well-formed XML".into()))?;
    if !is(doc.root_element(), SAML2, "Assertion") {
        return Err(SignInError::IdToken("the token is not a SAML 2.0 Assertion".into()));
    }
    let assertions = assertion_count(&doc);
    if assertions != 1 {
        return Err(SignInError::IdToken(format!("the token must be exactly one assertion, not {assertions}")));
    }
    Ok(())
}

/// How many assertions (plain or encrypted) a document holds, anywhere.
fn assertion_count(doc: &roxmltree::Document<'_>) -> usize {
    doc.descendants()
        .filter(|n| {
            n.is_element() && n.tag_name().namespace() == Some(SAML2) && n.tag_name().name().ends_with("Assertion")
        })
        .count()
}

/// The Response's Destination and, when it is not Success, its status code and message. Read
/// before verification: a failure status is shown to the user, never trusted for access.
#[allow(clippy::type_complexity)]
fn outer_facts(xml: &str) -> Result<(Option<String>, Option<(String, Option<String>)>), SignInError> {
    let doc = roxmltree::Document::parse(xml)
        .map_err(|_| SignInError::IdToken("the response is not well-formed XML".into()))?;
    let root = doc.root_element();
    if !is(root, SAML2P, "Response") {
        return Err(SignInError::IdToken("the message is not a SAML 2.0 Response".into()));
    }
    // One assertion, anywhere in the document: every wrapping attack needs a second one.
    let assertions = assertion_count(&doc);
    let status = child(root, SAML2P, "Status");
    let code = status.and_then(|s| child(s, SAML2P, "StatusCode"));
    let failure = match code.and_then(|c| c.attribute("Value")) {
        Some(SAML2_SUCCESS) => None,
        value => {
            let detail = code.and_then(|c| child(c, SAML2P, "StatusCode")).and_then(|c| c.attribute("Value"));
            let code = detail.or(value).unwrap_or("no status").rsplit(':').next().unwrap_or_default().to_owned();
            let message = status.and_then(|s| child_text(s, SAML2P, "StatusMessage"));
            Some((code, message))
        }
    };
    if failure.is_none() && assertions != 1 {
        return Err(SignInError::IdToken(format!("a response must carry exactly one assertion, not {assertions}")));
    }
    Ok((root.attribute("Destination").map(str::to_owned), failure))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTITY: &str = "https://idp.example/saml";

    fn metadata(key_descriptor: &str) -> String {
        format!(
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{ENTITY}"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{key_descriptor}<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#
        )
    }

    fn test_cert() -> String {
        let pem = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/certs/test/saml-idp.crt.pem")).unwrap();
        pem.lines().filter(|l| !l.starts_with("-----")).collect()
    }

    fn provider() -> SamlIdp {
        let config = IdpConfig { id: "t".into(), kind: IdpKind::Saml, issuer: ENTITY.into(), ..IdpConfig::default() };
        let sp = Arc::new(SpSettings::from_config(&Config::default()).unwrap());
        SamlIdp::new(config, sp, Arc::new(crate::clock::SystemClock)).unwrap()
    }

    #[test]
    fn metadata_must_name_the_entity_and_a_signing_certificate() {
        let with_cert = metadata(&format!(
            r#"<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"#,
            test_cert()
        ));
        let idp = provider();
        assert!(idp.trust(&with_cert).is_ok_and(|t| t.certs.len() == 1));
        // samael would verify nothing without a certificate: refused
        let err = idp.trust(&metadata("")).err().unwrap();
        assert!(err.contains("no signing certificate"), "{err}");
        let other = with_cert.replace(ENTITY, "https://another.example/saml");
        let err = idp.trust(&other).err().unwrap();
        assert!(err.contains("not the configured"), "{err}");
        let err = idp.trust(&format!("<!DOCTYPE x>{with_cert}")).err().unwrap();
        assert!(err.contains("document type"), "{err}");
    }

    #[test]
    fn responses_with_a_dtd_comments_or_bad_encoding_are_refused_before_parsing() {
        use base64::engine::general_purpose::STANDARD;
        let b64 = |s: &str| STANDARD.encode(s);
        for (xml, says) in [("<!DOCTYPE r []><r/>", "document type"), ("<r><!-- x --></r>", "comments")] {
            let err = decode(&b64(xml), &STANDARD).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
        assert!(decode("%%%", &STANDARD).unwrap_err().to_string().contains("base64"));
        assert!(decode(&"A".repeat(MAX_RESPONSE_BYTES + 4), &STANDARD).unwrap_err().to_string().contains("too large"));
        assert_eq!(decode(&format!(" {}\n", b64("<r/>")), &STANDARD).unwrap(), "<r/>", "line-wrapped base64 is fine");
        // exchanged assertions are base64url, padded or not; the standard alphabet is refused there
        let xml = "<r a='?>>?'/>";
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(xml);
        assert_eq!(decode(&url, &URL_SAFE_ANY_PADDING).unwrap(), xml);
        assert!(decode(&STANDARD.encode(xml), &URL_SAFE_ANY_PADDING).is_err());
    }

    #[test]
    fn only_a_lone_assertion_is_taken_in_exchange() {
        let one =
            format!("<saml:Assertion xmlns:saml='{SAML2}'><saml:Issuer> {ENTITY} </saml:Issuer></saml:Assertion>");
        assert!(lone_assertion(&one).is_ok());
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&one);
        assert_eq!(unverified_assertion_issuer(&url).as_deref(), Some(ENTITY));
        let wrapped = one.replace("</saml:Issuer>", "</saml:Issuer><saml:Advice><saml:Assertion/></saml:Advice>");
        assert!(lone_assertion(&wrapped).unwrap_err().to_string().contains("not 2"));
        let response = format!("<samlp:Response xmlns:samlp='{SAML2P}'>{one}</samlp:Response>");
        assert!(lone_assertion(&response).unwrap_err().to_string().contains("not a SAML 2.0 Assertion"));
        assert!(
            unverified_assertion_issuer(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&response)).is_none()
        );
    }
}
