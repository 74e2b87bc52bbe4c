//! fetch: to be written.
