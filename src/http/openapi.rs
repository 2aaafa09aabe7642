//! `GET /openapi.json`: an OpenAPI 3.1 document of carebroker's own HTTP APIs (`/token`, `/par`,
//! `/introspect`, `/revoke`, `/register`, `/launch`, `/availability`), built from the code that
//! serves them: the error codes are [`ErrorCode::ALL`], the grant types [`GrantType::ALL`], the
//! server URL this server's issuer. Schemathesis checks the running server against it
//! (`tests/schemathesis.sh`): no 5xx, every response as documented. Each endpoint documents the
//! OAuth error codes it answers with ([`ENDPOINT_ERRORS`]), and the suite reaches every one of
//! them with a real request (`tests/it/error_codes.rs`).

use serde_json::{Value, json};

use crate::domain::client::GrantType;
use crate::oauth::error::ErrorCode;

fn form_body(properties: Value, required: &[&str]) -> Value {
    json!({"required": true, "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "properties": properties, "required": required, "additionalProperties": {"type": "string"}}}}})
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// The OAuth error codes each endpoint answers with. A code is listed only if some request
/// reaches it (the suite proves each), and a code not listed is never answered there
/// (Schemathesis checks every answer against the document).
pub const ENDPOINT_ERRORS: [(&str, &[ErrorCode]); 6] = {
    use ErrorCode::*;
    [
        (
            "/token",
            &[
                InvalidRequest,
                InvalidClient,
                InvalidGrant,
                UnauthorizedClient,
                UnsupportedGrantType,
                InvalidScope,
                InvalidTarget,
                InvalidDpopProof,
                UseDpopNonce,
                TemporarilyUnavailable,
            ],
        ),
        (
            "/par",
            &[InvalidRequest, InvalidClient, UnauthorizedClient, InvalidScope, InvalidTarget, TemporarilyUnavailable],
        ),
        ("/introspect", &[InvalidRequest, InvalidClient, InvalidToken, InsufficientScope, TemporarilyUnavailable]),
        ("/revoke", &[InvalidRequest, InvalidClient, TemporarilyUnavailable]),
        ("/register", &[InvalidToken, InvalidRedirectUri, InvalidClientMetadata, NotFound, TemporarilyUnavailable]),
        ("/launch", &[InvalidRequest, InvalidClient, UnauthorizedClient, AccessDenied, TemporarilyUnavailable]),
    ]
};

/// The error codes `path` documents.
pub fn endpoint_errors(path: &str) -> &'static [ErrorCode] {
    ENDPOINT_ERRORS.iter().find(|(p, _)| *p == path).map_or(&[], |(_, codes)| *codes)
}

fn oauth_error(description: &str, path: &str) -> Value {
    let codes: Vec<&str> = endpoint_errors(path).iter().map(|c| c.as_str()).collect();
    json_response(
        description,
        json!({"allOf": [{"$ref": "#/components/schemas/OAuthError"},
            {"properties": {"error": {"enum": codes}}}]}),
    )
}

/// The errors `path` may answer with, by status.
fn oauth_errors(path: &str) -> Value {
    json!({
        "400": oauth_error("The request was refused (RFC 6749 §5.2)", path),
        "401": oauth_error("Client authentication failed", path),
        "413": {"description": "The body is larger than the server accepts"},
        "415": {"description": "The body is not a form"},
        "429": oauth_error("Too many requests from this client: try again later", path),
        "503": oauth_error("A store is unavailable: try again (Retry-After)", path),
    })
}

/// The OpenAPI document for a server whose issuer is `issuer`.
pub fn document(issuer: &str) -> Value {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let grants: Vec<&str> = GrantType::ALL.iter().map(|g| g.as_str()).collect();
    let client_auth = json!({
        "client_id": {"type": "string"}, "client_secret": {"type": "string"},
        "client_assertion_type": {"type": "string"}, "client_assertion": {"type": "string"}});
    let mut token_form = json!({
        "grant_type": {"type": "string", "enum": grants},
        "scope": {"type": "string"}, "code": {"type": "string"}, "redirect_uri": {"type": "string"},
        "code_verifier": {"type": "string"}, "refresh_token": {"type": "string"},
        "subject_token": {"type": "string"}, "subject_token_type": {"type": "string"},
        "actor_token": {"type": "string"}, "actor_token_type": {"type": "string"},
        "resource": {"type": "string"}, "audience": {"type": "string"}, "launch": {"type": "string"}});
    let mut par_form = json!({
        "response_type": {"type": "string"}, "redirect_uri": {"type": "string"}, "scope": {"type": "string"},
        "state": {"type": "string"}, "aud": {"type": "string"}, "code_challenge": {"type": "string"},
        "code_challenge_method": {"type": "string"}, "launch": {"type": "string"}});
    for form in [&mut token_form, &mut par_form] {
        if let (Some(form), Some(auth)) = (form.as_object_mut(), client_auth.as_object()) {
            form.extend(auth.clone());
        }
    }
    let with = |mut base: Value, extra: Value| {
        if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        base
    };
    json!({
        "openapi": "3.1.0",
        "info": {"title": "carebroker", "version": env!("CARGO_PKG_VERSION"),
            "description": "carebroker's own OAuth 2.0 / SMART endpoints and the availability check. The FHIR API is described by /fhir/metadata."},
        "servers": [{"url": issuer}],
        "paths": {
            "/token": {"post": {
                "summary": "Token endpoint (RFC 6749, SMART Backend Services, RFC 8693 token exchange, RFC 9449 DPoP)",
                "requestBody": form_body(token_form, &["grant_type"]),
                "responses": with(json!({"200": json_response("Tokens", json!({"$ref": "#/components/schemas/TokenResponse"}))}), oauth_errors("/token"))}},
            "/par": {"post": {
                "summary": "Pushed authorization request (RFC 9126)",
                "requestBody": form_body(par_form, &[]),
                "responses": with(json!({"201": json_response("The request_uri to send to /authorize", json!({
                    "type": "object", "required": ["request_uri", "expires_in"],
                    "properties": {"request_uri": {"type": "string"}, "expires_in": {"type": "integer"}}}))}), oauth_errors("/par"))}},
            "/introspect": {"post": {
                "summary": "Token introspection (RFC 7662, SMART profile)",
                "requestBody": form_body(with(json!({"token": {"type": "string"}, "token_type_hint": {"type": "string"}}), client_auth.clone()), &["token"]),
                "responses": with(json!({"200": json_response("Whether the token is active, and its claims", json!({
                    "type": "object", "required": ["active"], "properties": {"active": {"type": "boolean"}}})),
                    "403": oauth_error("The bearer token may not introspect", "/introspect")}), oauth_errors("/introspect"))}},
            "/revoke": {"post": {
                "summary": "Token revocation (RFC 7009)",
                "requestBody": form_body(with(json!({"token": {"type": "string"}, "token_type_hint": {"type": "string"}}), client_auth), &["token"]),
                "responses": with(json!({"200": {"description": "Revoked, or never valid"}}), oauth_errors("/revoke"))}},
            "/register": {"post": {
                "summary": "Dynamic client registration (RFC 7591), with an initial access token",
                "security": [{"bearer": []}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": with(json!({
                    "201": json_response("The registered client", json!({"type": "object", "required": ["client_id"], "properties": {"client_id": {"type": "string"}}})),
                    "404": oauth_error("Registration is switched off", "/register")}), oauth_errors("/register"))}},
            "/launch": {"post": {
                "summary": "A trusted EHR registers a launch in context for a SMART app",
                "security": [{"basic": []}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object",
                    "required": ["client_id", "patient"],
                    "properties": {"client_id": {"type": "string"}, "patient": {"type": "string"}, "encounter": {"type": "string"}}}}}},
                "responses": with(json!({
                    "201": json_response("The launch id and the app's launch URL", json!({"type": "object",
                        "required": ["launch", "launch_url", "expires_in"],
                        "properties": {"launch": {"type": "string"}, "launch_url": {"type": "string"}, "expires_in": {"type": "integer"}}})),
                    "403": oauth_error("The EHR may not launch this app or vouch for this user", "/launch")}), oauth_errors("/launch"))}},
            "/availability": {"get": {
                "summary": "Whether a patient has a care plan (existence and last update only)",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "nhs_number", "in": "query", "schema": {"type": "string"}},
                    {"name": "phone", "in": "query", "schema": {"type": "string"}}],
                "responses": {
                    "200": json_response("Whether a plan exists", json!({"type": "object", "required": ["care_plan_exists", "matches"],
                        "properties": {"care_plan_exists": {"type": "boolean"}, "matches": {"type": "array", "items": {"type": "object"}}}})),
                    "400": {"description": "A bad question", "content": {"application/fhir+json": {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}},
                    "401": {"description": "No valid token", "content": {"application/fhir+json": {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}},
                    "403": {"description": "Not permitted", "content": {"application/fhir+json": {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}},
                    "503": {"description": "A store is unavailable", "content": {"application/fhir+json": {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}, "basic": {"type": "http", "scheme": "basic"}},
            "schemas": {
                "OAuthError": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string", "enum": codes}, "error_description": {"type": "string"}}},
                "TokenResponse": {"type": "object", "required": ["access_token", "token_type", "expires_in", "scope"], "properties": {
                    "access_token": {"type": "string"}, "token_type": {"type": "string", "enum": ["Bearer", "DPoP", "N_A"]},
                    "expires_in": {"type": "integer"}, "scope": {"type": "string"}, "refresh_token": {"type": "string"},
                    "id_token": {"type": "string"}, "issued_token_type": {"type": "string"}, "patient": {"type": "string"}}},
                "OperationOutcome": {"type": "object", "required": ["resourceType", "issue"], "properties": {
                    "resourceType": {"const": "OperationOutcome"}, "issue": {"type": "array", "items": {"type": "object"}}}}
            }
        }
    })
}
