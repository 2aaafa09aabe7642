//! Launch contexts: EHR launch registration (single-use, short-lived, bound to the app and the
//! EHR, with the presented user checked at its provider), the NHS App journeys, and the patients
//! a user may pick in a standalone launch.

pub mod directory;
pub mod endpoint;
pub mod journey;
pub mod register;
pub mod signed_in;
