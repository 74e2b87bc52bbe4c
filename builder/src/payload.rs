//! payload: to be written.
