//! Small helpers shared by the engine and the app.
pub mod atomic;
