//! verify: to be written.
