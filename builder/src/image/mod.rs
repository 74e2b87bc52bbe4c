//! image: to be written.
