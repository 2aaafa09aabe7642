//! The thin FHIR API. For now: loading seed resources (development Patients and Practitioners).

pub mod seed;
