//! cache: to be written.
