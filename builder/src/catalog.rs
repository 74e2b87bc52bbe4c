//! catalog: to be written.
