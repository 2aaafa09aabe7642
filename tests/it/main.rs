//! The one integration-test binary: a module per area.

mod audit_log;
mod authorize;
mod availability;
mod backend_services;
mod browser;
mod cli;
mod client_auth;
mod clinical_safety;
mod cross_patient;
mod discovery;
mod dpop;
mod ehr_launch;
mod ehr_presented;
mod federation;
mod federation_node;
mod fhir_api;
mod introspection;
mod pds;
mod policy;
mod registration;
mod remote_jwks;
mod saml;
mod scale_out;
mod stores;
mod support;
mod user_grants;
