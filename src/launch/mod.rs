//! Launch contexts: EHR launch registration (single-use, short-lived, bound to the app and the
//! EHR), and the patients a user may pick in a standalone launch.

pub mod directory;
pub mod register;
